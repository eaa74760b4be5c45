"""Many tomograms: complete outputs skipped, foreign outputs refused, failures reported and the
batch continued, a summary table, and the tomograms shared among processes (``--nproc``, which
starts them through ``torch.distributed.run`` exactly as a user's ``torchrun`` would)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from cet_monai.cli import main
from cet_monai.data import simulate_tomogram
from cet_monai.engines.batch import (
    BatchItem,
    BatchResult,
    format_summary,
    is_complete,
    output_settings,
    plan_batch,
    read_summary,
    share,
    write_completion,
    write_summary,
)
from cet_monai.errors import OptionError
from cet_monai.io import read_volume, write_volume

BUDGET = ["--iterations", "4", "--set", "epoch_length=2", "--set", "patch_size=[16,16,16]", "--set", "margin=4",
          "--set", "network_def#features=[4,8]", "--versions", "2", "--device", "cpu"]


def _tomograms(folder, n=3):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_volume(folder / f"t{i}.mrc", simulate_tomogram(shape=(16, 32, 32), snr=0.05, seed=i).noisy.astype(np.float32), voxel_size=10.0)
    return folder


def _item(tmp_path, name="t0"):
    tomo = tmp_path / f"{name}.mrc"
    if not tomo.exists():
        write_volume(tomo, np.random.default_rng(0).standard_normal((8, 16, 16)).astype(np.float32), voxel_size=5.0)
    return BatchItem(str(tomo), str(tmp_path / "out" / f"{name}_denoised.mrc"), str(tmp_path / "out" / f"{name}_denoised_run"))


def test_a_complete_output_is_skipped_and_anything_else_refused(tmp_path):
    item = _item(tmp_path)
    settings = output_settings("recorrupted", {"iterations": 4, "device": "$torch.device('cpu')"})
    assert plan_batch([item], settings) == ([item], [])
    write_volume(item.output, np.zeros((8, 16, 16), np.float32))
    with pytest.raises(OptionError, match="--overwrite"):  # exists, but no record: not ours
        plan_batch([item], settings)
    write_completion(item, settings)
    assert is_complete(item, settings)
    assert plan_batch([item], settings) == ([], [item])
    # the device does not change the output; the budget does
    assert is_complete(item, output_settings("recorrupted", {"iterations": 4, "device": "$torch.device('cuda')"}))
    assert not is_complete(item, output_settings("recorrupted", {"iterations": 8}))
    assert not is_complete(item, output_settings("fourier", {"iterations": 4}))
    assert plan_batch([item], settings, overwrite=True) == ([item], [])
    # an output replaced since (another size), or an input changed since: no longer complete
    write_volume(item.output, np.zeros((8, 16, 17), np.float32), overwrite=True)
    assert not is_complete(item, settings)
    write_completion(item, settings)
    write_volume(item.input, np.ones((8, 16, 16), np.float32), voxel_size=5.0, overwrite=True)
    assert not is_complete(item, settings)


def test_two_inputs_writing_one_output_are_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    one, two = _item(a), _item(b)
    clash = BatchItem(two.input, one.output, two.work_dir)
    with pytest.raises(OptionError, match="same output"):
        plan_batch([one, clash], {})


def test_share_gives_every_item_to_exactly_one_rank():
    items = list(range(7))
    parts = [share(items, r, 3) for r in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(sum(parts, [])) == items
    with pytest.raises(ValueError):
        share(items, 3, 3)


def test_summary_round_trip(tmp_path):
    rows = [BatchResult("a.mrc", "a_d.mrc", "denoised", 1, 12.34, "ok; kept 12% of the input variance"),
            BatchResult("b.mrc", "b_d.mrc", "failed", 0, 1.0, error="no space\tleft\non device")]
    path = write_summary(tmp_path / "s.tsv", rows)
    back = read_summary(path)
    assert [r.status for r in back] == ["denoised", "failed"]
    assert back[0].rank == 1 and back[0].seconds == 12.3
    assert back[1].error == "no space left on device"  # tabs and newlines never break the table
    assert "a.mrc" in format_summary(rows) and "no space" in format_summary(rows)


def test_folder_batch_skips_on_rerun_and_goes_on_after_a_failure(tmp_path, monkeypatch, capsys):
    inputs = _tomograms(tmp_path / "in")
    out = tmp_path / "out"
    assert main(["denoise", str(inputs), "-o", str(out), *BUDGET]) == 0
    rows = read_summary(out / "denoise_summary.tsv")
    assert [r.status for r in rows] == ["denoised"] * 3
    assert all(r.quality.startswith("ok; kept") and "held-out loss" in r.quality for r in rows)
    first = {p: read_volume(out / p)[0] for p in ("t0_denoised.mrc", "t1_denoised.mrc", "t2_denoised.mrc")}
    capsys.readouterr()

    # rerun: nothing to do, nothing rewritten
    stamps = {p: os.stat(out / p).st_mtime_ns for p in first}
    assert main(["denoise", str(inputs), "-o", str(out), *BUDGET]) == 0
    assert [r.status for r in read_summary(out / "denoise_summary.tsv")] == ["skipped"] * 3
    assert {p: os.stat(out / p).st_mtime_ns for p in first} == stamps
    assert capsys.readouterr().out.split() == [str(out / p) for p in sorted(first)]

    # other settings: the outputs are not complete ones of them, so they are refused (exit 2)
    assert main(["denoise", str(inputs), "-o", str(out), *BUDGET, "--seed", "1"]) == 2

    # a tomogram that fails mid-batch is reported; the others are denoised; exit code 1
    import cet_monai.workflows as workflows

    real_train = workflows.train

    def failing_train(method, tomogram=None, **kwargs):
        if str(tomogram).endswith("t1.mrc"):
            raise RuntimeError("simulated failure on t1")
        return real_train(method, tomogram=tomogram, **kwargs)

    monkeypatch.setattr(workflows, "train", failing_train)
    out2 = tmp_path / "out2"
    assert main(["denoise", str(inputs), "-o", str(out2), *BUDGET]) == 1
    rows = {r.input: r for r in read_summary(out2 / "denoise_summary.tsv")}
    assert rows[str(inputs / "t1.mrc")].status == "failed"
    assert "simulated failure on t1" in rows[str(inputs / "t1.mrc")].error
    assert (out2 / "t1_denoised_run" / "error.log").read_text().count("RuntimeError") >= 1
    assert not (out2 / "t1_denoised.mrc").exists()
    for name in ("t0", "t2"):  # same settings and seed: the same voxels as the first batch
        assert rows[str(inputs / f"{name}.mrc")].status == "denoised"
        np.testing.assert_array_equal(read_volume(out2 / f"{name}_denoised.mrc")[0], first[f"{name}_denoised.mrc"])

    # the rerun (the cause fixed) does only the failed one
    monkeypatch.setattr(workflows, "train", real_train)
    assert main(["denoise", str(inputs), "-o", str(out2), *BUDGET]) == 0
    statuses = {r.input: r.status for r in read_summary(out2 / "denoise_summary.tsv")}
    assert statuses == {str(inputs / "t0.mrc"): "skipped", str(inputs / "t1.mrc"): "denoised", str(inputs / "t2.mrc"): "skipped"}


def test_nproc_shares_the_tomograms_among_processes(tmp_path):
    inputs = _tomograms(tmp_path / "in", n=3)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "cet_monai.cli", "denoise", str(inputs), "-o", str(out), *BUDGET, "--nproc", "2"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_summary(out / "denoise_summary.tsv")
    assert [r.status for r in rows] == ["denoised"] * 3
    assert {r.input: r.rank for r in rows} == {str(inputs / "t0.mrc"): 0, str(inputs / "t1.mrc"): 1, str(inputs / "t2.mrc"): 0}
    assert sorted(done.stdout.split()) == sorted(str(out / f"t{i}_denoised.mrc") for i in range(3))
    assert not [p.name for p in out.iterdir() if p.name.startswith(".denoise_summary")]  # the ranks' parts merged and removed
    # rerun under torchrun's own launcher: everything complete, skipped by every rank
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [r.status for r in read_summary(out / "denoise_summary.tsv")] == ["skipped"] * 3


def test_nproc_and_torchrun_are_not_combined(monkeypatch, tmp_path):
    inputs = _tomograms(tmp_path / "in", n=2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["denoise", str(inputs), "-o", str(tmp_path / "out"), *BUDGET, "--nproc", "2"]) == 2
