"""The cet-monai command: help, exit codes, bad input, header round trip, the demo at a tiny budget."""

import subprocess
import sys

import mrcfile
import numpy as np
import pytest

from cet_monai.cli import EXIT_OK, EXIT_USAGE, build_parser, main
from cet_monai.io import read_volume, write_volume

TINY = ["--iterations", "2", "--set", "epoch_length=1", "--set", "val_interval=1", "--set", "patch_size=[16,16,16]",
        "--set", "margin=4", "--set", "network_def#features=[4,8]", "--versions", "1", "--passes", "1"]


def test_help_reads_like_a_manual(capsys):
    for argv in (["--help"], ["denoise", "--help"], ["demo", "--help"], ["predict", "--help"], ["simulate", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "--overwrite" in out and "missing wedge" in out and "Noise2Noise" in out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == EXIT_USAGE
    assert "COMMAND" in capsys.readouterr().out


def test_missing_and_bad_inputs_give_one_clear_line(tmp_path, capsys):
    assert main(["denoise", str(tmp_path / "nope.mrc"), "-o", str(tmp_path / "out.mrc")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "nope.mrc" in err and "not found" in err and "Traceback" not in err
    flat = tmp_path / "flat.mrc"
    write_volume(flat, np.ones((8, 8, 8), np.float32))
    assert main(["denoise", str(flat), "-o", str(tmp_path / "out.mrc")]) == EXIT_USAGE
    assert "constant" in capsys.readouterr().err
    nan = tmp_path / "nan.mrc"
    a = np.random.rand(8, 8, 8).astype(np.float32)
    a[1, 2, 3] = np.nan
    write_volume(nan, a)
    assert main(["denoise", str(nan), "-o", str(tmp_path / "out.mrc")]) == EXIT_USAGE
    assert "NaN" in capsys.readouterr().err


def test_output_equal_to_input_is_refused(tmp_path, capsys):
    path = tmp_path / "t.mrc"
    write_volume(path, np.random.rand(16, 16, 16).astype(np.float32))
    assert main(["denoise", str(path), "-o", str(path)]) == EXIT_USAGE
    assert "overwrite" in capsys.readouterr().err


def test_simulate_refuses_to_overwrite(tmp_path):
    out = tmp_path / "sim"
    argv = ["simulate", str(out), "--shape", "16", "24", "24"]
    assert main(argv) == EXIT_OK
    assert (out / "noisy.mrc").exists() and (out / "orthoslices.png").exists()
    assert main(argv) == EXIT_USAGE
    assert main(argv + ["--overwrite"]) == EXIT_OK


def test_denoise_then_predict_round_trips_the_header(tmp_path):
    path = tmp_path / "tomo.mrc"
    rng = np.random.default_rng(0)
    with mrcfile.new(path) as m:
        m.set_data((rng.normal(size=(16, 32, 32)) * 50 + 100).astype(np.int16))
        m.voxel_size = (7.5, 7.5, 7.5)
        m.header.origin = (10.0, 20.0, 30.0)
    out = tmp_path / "den.mrc"
    assert main(["denoise", str(path), "-o", str(out)] + TINY) == EXIT_OK
    vol, header = read_volume(out)
    src, src_header = read_volume(path)
    assert vol.shape == src.shape and vol.dtype == np.float32
    assert header.voxel_size == pytest.approx(src_header.voxel_size)
    assert header.origin == pytest.approx(src_header.origin)
    # the output is on the input's intensity scale (mean ~ 100), not the normalised one
    assert abs(float(vol.mean()) - float(src.mean())) < 0.5 * float(src.std())
    assert (tmp_path / "den.png").exists()
    ckpt = sorted((tmp_path / "den_run").glob("checkpoint_final*.pt"))
    assert ckpt
    out2 = tmp_path / "pred.mrc"
    assert main(["predict", str(path), "--checkpoint", str(ckpt[0]), "-o", str(out2), "--versions", "1", "--passes", "1"]) == EXIT_OK
    assert read_volume(out2)[1].voxel_size == pytest.approx(src_header.voxel_size)
    # nothing is overwritten by surprise
    assert main(["predict", str(path), "--checkpoint", str(ckpt[0]), "-o", str(out2)]) == EXIT_USAGE


def test_predict_with_a_bad_checkpoint(tmp_path, capsys):
    path = tmp_path / "t.mrc"
    write_volume(path, np.random.rand(16, 16, 16).astype(np.float32))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["predict", str(path), "--checkpoint", str(bad), "-o", str(tmp_path / "o.mrc")]) == EXIT_USAGE
    assert "bad.pt" in capsys.readouterr().err


def test_demo_runs_at_a_tiny_budget(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--shape", "16", "32", "32"] + TINY) == EXIT_OK
    report = (out / "report.md").read_text()
    assert "| raw |" in report and "Gaussian" in report and "denoised (recorrupted pairs)" in report
    for f in ("denoised.mrc", "comparison.png", "scores.json"):
        assert (out / f).exists()
    assert main(["demo", "-o", str(out), "--shape", "16", "32", "32"] + TINY) == EXIT_USAGE


def test_console_script_entry_point():
    res = subprocess.run([sys.executable, "-m", "cet_monai.cli", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and "cet-monai" in res.stdout
    assert "demo" in build_parser().format_help()


def test_segment_command_writes_labels_with_the_header(tmp_path, capsys):
    import torch

    from cet_monai.segmentation import ModelSpec

    spec = ModelSpec(features=(4, 8, 16), patch_size=(16, 16, 16))
    torch.manual_seed(0)
    ckpt = tmp_path / "seg.pt"
    torch.save({"network": spec.build().state_dict(), "model_spec": spec.state_dict()}, ckpt)
    src = tmp_path / "tomo.mrc"
    write_volume(src, np.random.default_rng(0).normal(size=(16, 24, 24)).astype(np.float32), voxel_size=(9.0, 9.0, 9.0))
    out = tmp_path / "labels.mrc"
    assert main(["segment", str(src), "-o", str(out), "--checkpoint", str(ckpt), "--device", "cpu"]) == EXIT_OK
    labels, header = read_volume(out)
    assert labels.shape == (16, 24, 24) and header.voxel_size == pytest.approx((9.0, 9.0, 9.0))
    assert main(["segment", str(src), "-o", str(out), "--checkpoint", str(ckpt)]) == EXIT_USAGE
    assert "exists" in capsys.readouterr().err


def test_save_std_needs_more_than_one_prediction(tmp_path, capsys):
    path = tmp_path / "tomo.mrc"
    write_volume(path, np.random.default_rng(0).normal(size=(16, 32, 32)).astype(np.float32))
    out = tmp_path / "den.mrc"
    assert main(["denoise", str(path), "-o", str(out), "--save-std"] + TINY) == EXIT_USAGE  # K = T = 1
    assert "K x T = 1 x 1" in capsys.readouterr().err
    assert not (tmp_path / "den_run").exists()  # refused before any training
    tiny_k2 = [a if a != "1" or i == 0 or TINY[i - 1] != "--versions" else "2" for i, a in enumerate(TINY)]
    assert main(["denoise", str(path), "-o", str(out), "--save-std", "--overwrite"] + tiny_k2) == EXIT_OK
    std, _ = read_volume(tmp_path / "den_std.mrc")
    assert float(std.max()) > 0  # K = 2 noise draws: the predictions differ


def test_iterations_are_whole_epochs_or_refused(tmp_path, capsys):
    path = tmp_path / "tomo.mrc"
    write_volume(path, np.random.default_rng(0).normal(size=(16, 32, 32)).astype(np.float32))
    small = ["--set", "patch_size=[16,16,16]", "--set", "margin=4", "--set", "network_def#features=[4,8]", "--versions", "1"]
    # 130 is not a whole number of 50-iteration epochs: refused before training, naming 100 and 150
    assert main(["denoise", str(path), "-o", str(tmp_path / "a.mrc"), "--iterations", "130"] + small) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "100 or 150" in err and not (tmp_path / "a_run").exists()
    # fewer than one epoch: the epoch is shortened, exactly 3 iterations run
    assert main(["denoise", str(path), "-o", str(tmp_path / "b.mrc"), "--iterations", "3"] + small) == EXIT_OK
    import torch

    from cet_monai.engines import latest_checkpoint

    state = torch.load(latest_checkpoint(str(tmp_path / "b_run")), map_location="cpu", weights_only=True)
    assert state["trainer"]["iteration"] == 3


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--patch-size", "96"], "does not fit the training region"),
        (["--patch-size", "20"], "multiple of 8"),
        (["--set", "learnin_rate=0.1"], "did you mean learning_rate"),
        (["--set", "network_def#dropot=0.1"], "network_def#dropout"),
        (["--device", "gpu"], "not a device name"),
        # the method's own checks of its settings, before the tomogram is read (they used to run
        # inside the bundle, after planning, the run folder made)
        (["--set", "alpha=-1"], "alpha must be > 0"),
        (["--method", "real", "--set", "keep_prob=2"], "keep_prob must be in (0, 1]"),
        (["--method", "fourier", "--set", "sampling=bogus"], "sampling must be one of"),
        (["--set", "method_def#spectrum_quantile=1.0"], "spectrum_quantile must be below 1"),
    ],
)
def test_impossible_options_are_one_line_before_training(tmp_path, capsys, extra, expected):
    """Each used to train (or start to) and end in a MONAI RuntimeError traceback, exit 1, or
    (misspelled --set id) run silently with the default."""
    path = tmp_path / "t.mrc"
    write_volume(path, np.random.rand(32, 48, 48).astype(np.float32))
    code = main(["denoise", str(path), "-o", str(tmp_path / "out.mrc"), *extra])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and expected in err and "Traceback" not in err
    assert not (tmp_path / "out_run").exists()  # nothing started


def test_missing_cuda_is_refused_before_training(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = tmp_path / "t.mrc"
    write_volume(path, np.random.rand(32, 48, 48).astype(np.float32))
    assert main(["denoise", str(path), "-o", str(tmp_path / "out.mrc"), "--device", "cuda"]) == EXIT_USAGE
    assert "CUDA is not available" in capsys.readouterr().err


def test_zero_versions_and_negative_passes_are_usage_errors(tmp_path, capsys):
    path = tmp_path / "t.mrc"
    write_volume(path, np.random.rand(16, 16, 16).astype(np.float32))
    for flag, value in (("--versions", "0"), ("--passes", "-1")):
        with pytest.raises(SystemExit) as exit_info:
            main(["denoise", str(path), "-o", str(tmp_path / "out.mrc"), flag, value])
        assert exit_info.value.code == EXIT_USAGE
        assert flag in capsys.readouterr().err


def test_several_inputs_with_a_file_output_and_unwritable_folders(tmp_path, capsys):
    a, b = tmp_path / "a.mrc", tmp_path / "b.mrc"
    for p in (a, b):
        write_volume(p, np.random.rand(32, 48, 48).astype(np.float32))
    assert main(["denoise", str(a), str(b), "-o", str(tmp_path / "x.mrc")]) == EXIT_USAGE
    assert "2 inputs need an output folder" in capsys.readouterr().err
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    assert main(["denoise", str(a), "-o", str(blocker / "out.mrc")]) == EXIT_USAGE
    assert "is a file, not a folder" in capsys.readouterr().err
    # checkpoints elsewhere: refused before training (it used to fail only after it)
    assert main(["denoise", str(a), "-o", str(tmp_path / "o.mrc"), "--work-dir", str(blocker / "w")]) == EXIT_USAGE
    assert "cannot write the checkpoints" in capsys.readouterr().err
    assert not (tmp_path / "o_run").exists()
