"""One model fitted on several tomograms (``cet-monai denoise --shared-model``, and the bundles'
training given a list of tomograms): the collection normalises each tomogram with its own
statistics and takes them in turn, the default method pairs each tomogram's patches with noise
of its own spectrum and denoises it with that spectrum, and the command fits one model, writes
every output with its completion record and the summary, skips complete outputs on a rerun and
trains data parallel with each process reading its share of the tomograms."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import ndimage

from cet_monai.cli import main
from cet_monai.engines import LoadTomogramd, TomogramCollection, latest_checkpoint
from cet_monai.engines.batch import read_summary
from cet_monai.errors import OptionError
from cet_monai.inferers import PerTomogramInferer
from cet_monai.io import write_volume
from cet_monai.methods import FourierMasks, RealSpaceBernoulli, RecorruptedPairs, method_from_dict
from cet_monai.noise_spectrum import estimate_noise_spectrum
from cet_monai.transforms import TOMOGRAM_INDEX_KEY, RandTomogramPatchd

from test_batch import BUDGET, _tomograms  # noqa: E402 - the batch tests' tiny tomograms and budget


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a small shared machine 2 threads make these tiny convolutions slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _high_frequency_share(power: np.ndarray) -> float:
    """Share of a full-grid power spectrum ``(..., Z, Y, X)`` (unshifted) above |k| = 0.25 cycles/voxel."""
    k = np.sqrt(sum(np.meshgrid(*[np.fft.fftfreq(n) ** 2 for n in power.shape[-3:]], indexing="ij")))
    total = power.reshape(-1, *power.shape[-3:]).sum(axis=0)
    return float(total[k > 0.25].sum() / total.sum())


@pytest.fixture
def two_noises(tmp_path):
    """Two tomograms on very different raw scales with noise of different spectra: white (on a
    mean of 100, std 50) and smoothed (mean -3, std 0.2). Normalisation makes both unit
    variance, so only each one's own spectrum tells them apart."""
    rng = np.random.default_rng(0)
    white = 100 + 50 * rng.standard_normal((32, 64, 64))
    smooth = ndimage.gaussian_filter(rng.standard_normal((32, 64, 64)), 1.5)
    smooth = -3 + 0.2 * smooth / smooth.std()
    paths = [tmp_path / "white.mrc", tmp_path / "smooth.mrc"]
    for path, volume in zip(paths, (white, smooth)):
        write_volume(path, volume.astype(np.float32), voxel_size=10.0)
    return [str(p) for p in paths]


def test_each_tomogram_is_normalised_on_its_own_and_paired_with_noise_of_its_own_spectrum(two_noises):
    collection = TomogramCollection(two_noises)
    for source in collection.sources:  # its own statistics: a shared normaliser would leave one far off 0 / 1
        assert abs(float(source.image.mean())) < 0.1 and abs(float(source.image.std()) - 1) < 0.1
    items = collection.training_items(5)  # the tomograms in turn, references to their training regions
    assert [i[TOMOGRAM_INDEX_KEY] for i in items] == [0, 1, 0, 1, 0]
    assert all(i["image"].data_ptr() == collection.sources[i[TOMOGRAM_INDEX_KEY]].image.data_ptr() for i in items)

    method = RecorruptedPairs(patch_size=(16, 16, 16), margin=4, versions=2).fitted_to(collection, seed=0)
    assert method.spectrum is None and method.spectrum_seed == 0 and len(method.spectra) == 2
    for source, spectrum in zip(collection.sources, method.spectra):  # each estimated from its own tomogram
        own = estimate_noise_spectrum(source.image, block=32, quantile=0.2, seed=0, equalize_levels=True)
        np.testing.assert_array_equal(spectrum.grid, own.grid)
    shares = [_high_frequency_share(s.grid) for s in method.spectra]
    assert shares[0] > 0.6 and shares[1] < 0.1  # white noise and smoothed noise

    # the training pairs of each tomogram carry noise of that tomogram's spectrum (its shape: the
    # per-patch noise level rescales the drawn noise, so its strength would not tell)
    patching, pairing = method.patching(2), method.training_pairing(collection)
    patching.set_random_state(seed=0)
    pairing.set_random_state(seed=0)
    drawn = {0: [], 1: []}
    for item in collection.training_items(8):
        for patch in patching(item):
            for pair in pairing(patch):
                z = (pair["image"] - pair["label"]).numpy()[0] / (method.alpha + 1 / method.alpha)
                drawn[pair[TOMOGRAM_INDEX_KEY]].append(np.abs(np.fft.fftn(z)) ** 2)
    drawn_shares = [_high_frequency_share(np.stack(drawn[index])) for index in (0, 1)]
    assert drawn_shares[0] > 0.6 and drawn_shares[1] < 0.25  # (the 16-voxel crops leak a little power upwards)
    assert len(collection.validation_items(pairing)) == 2  # each tomogram's held-out region, paired

    # inference: the record keeps no spectra (16 MiB each) but the estimator's seed; the inferer
    # estimates each tomogram's spectrum from it as it is loaded for inference: the very one it was trained with
    record = method.to_dict()
    assert "spectra" not in record and record["spectrum"] is None and record["spectrum_seed"] == 0
    inferer = method_from_dict(record).inferer(versions=2)
    assert isinstance(inferer, PerTomogramInferer)
    for index, path in enumerate(two_noises):
        loaded = LoadTomogramd("image")({"image": path})["image"]
        chosen = inferer.inferer_for(loaded).sampler.spectrum
        np.testing.assert_array_equal(chosen.grid, method.spectra[index].grid)
        assert not np.array_equal(chosen.grid, method.spectra[1 - index].grid)
    # one tomogram: the record is what it always was
    single = RecorruptedPairs(patch_size=(16, 16, 16), margin=4).fitted_to(collection.sources[0])
    assert "spectrum_seed" not in single.to_dict() and single.to_dict()["spectrum"] is not None


def test_a_process_holds_its_share_and_every_process_the_same_fingerprint(tmp_path):
    paths = [str(p) for p in sorted(_tomograms(tmp_path / "in", n=3).iterdir())]
    ranks = [TomogramCollection(paths, rank=r, world_size=2) for r in range(2)]
    assert [c.names for c in ranks] == [["t0.mrc", "t2.mrc"], ["t1.mrc"]]
    assert ranks[0].fingerprint() == ranks[1].fingerprint()
    assert ranks[0].fingerprint()["count"] == 3 and {"t0.mrc", "t1.mrc", "t2.mrc"} <= set(ranks[0].fingerprint())
    assert TomogramCollection(paths[:2]).fingerprint() != ranks[0].fingerprint()  # another set: a run folder is not resumed
    with pytest.raises(OptionError, match="at least one tomogram per process"):
        TomogramCollection(paths, rank=0, world_size=4)


def test_the_patching_keeps_one_tiling_per_tomogram():
    """Items of two tomograms of different shapes, taken in turn: each tomogram's tiling is
    followed to its end (every voxel covered), and it survives a checkpoint."""
    shapes = {0: (16, 32, 32), 1: (16, 24, 40)}  # tilings of 9 and 6 patches of 16
    volumes = {k: torch.zeros((1, *s)) for k, s in shapes.items()}
    covered = {k: np.zeros(s, bool) for k, s in shapes.items()}

    def draw(patching, index):
        start = patching({"image": volumes[index], TOMOGRAM_INDEX_KEY: index})[0]["patch_start"]
        covered[index][tuple(slice(s, s + 16) for s in start.tolist())] = True
        return start

    patching = RandTomogramPatchd("image", patch_size=16, num_samples=1).set_random_state(seed=0)
    for index in [0, 1] * 6:
        draw(patching, index)
    state, generator = patching.state_dict(), patching.R.get_state()
    assert int(state["volumes"].numel()) == 2
    resumed = RandTomogramPatchd("image", patch_size=16, num_samples=1)
    resumed.load_state_dict(state)
    resumed.R.set_state(generator)
    for index in (0, 0, 0, 1):
        assert torch.equal(draw(patching, index), draw(resumed, index))
    assert covered[0].all() and covered[1].all()


@pytest.mark.parametrize("method", [FourierMasks(patch_size=(16, 16, 16), margin=4), RealSpaceBernoulli(patch_size=(16, 16, 16))])
def test_methods_without_anything_per_tomogram_pair_patches_of_any_tomogram(tmp_path, method):
    paths = [str(p) for p in sorted(_tomograms(tmp_path / "in", n=2).iterdir())]
    collection = TomogramCollection(paths)
    assert method.fitted_to(collection) is method
    pairing = method.training_pairing(collection)
    for item in collection.training_items(2):
        pairs = [pair for patch in method.patching(1)(item) for pair in pairing(patch)]
        assert {p[TOMOGRAM_INDEX_KEY] for p in pairs} == {item[TOMOGRAM_INDEX_KEY]}
    assert {i[TOMOGRAM_INDEX_KEY] for i in collection.validation_items(pairing)} == {0, 1}
    with pytest.raises(Exception, match="cannot fit one model on several"):
        FourierMasks(sampling="pool").fitted_to(collection)


def test_shared_model_end_to_end(tmp_path, monkeypatch, capsys):
    """One model for two tomograms: a tomogram failing at denoising is reported and the other
    written (exit 1); the rerun denoises only it, with the same model; the next rerun skips
    both; another set of tomograms is refused the run folder; the wrong uses are one line."""
    import cet_monai.workflows as workflows

    inputs = _tomograms(tmp_path / "in", n=2)
    out = tmp_path / "out"
    argv = ["denoise", str(inputs), "-o", str(out), "--shared-model", *BUDGET]
    real_predict = workflows.predict

    def failing_predict(inputs_, *args, **kwargs):
        if str(inputs_[0]).endswith("t1.mrc"):
            raise RuntimeError("simulated failure on t1")
        return real_predict(inputs_, *args, **kwargs)

    monkeypatch.setattr(workflows, "predict", failing_predict)
    assert main(argv) == 1
    rows = {os.path.basename(r.input): r for r in read_summary(out / "denoise_summary.tsv")}
    assert rows["t0.mrc"].status == "denoised" and "held-out loss" in rows["t0.mrc"].quality
    assert rows["t1.mrc"].status == "failed" and "simulated failure on t1" in rows["t1.mrc"].error
    model = out / "shared_model_run"
    assert (model / "t1_denoised" / "error.log").is_file() and (model / "t0_denoised" / "completed.json").is_file()
    assert not list(out.glob("*_denoised_run"))  # no model per tomogram
    assert sorted(p.name for p in model.glob("noise_spectrum_*.png")) == ["noise_spectrum_t0.png", "noise_spectrum_t1.png"]
    checkpoints = sorted(p.name for p in model.glob("checkpoint*.pt"))
    state = torch.load(latest_checkpoint(str(model)), map_location="cpu", weights_only=True)
    assert state["trainer"]["iteration"] == 4 and state["fingerprint"]["tomogram"]["count"] == 2
    assert state["method"]["method"]["spectrum"] is None and state["method"]["method"]["spectrum_seed"] == 0

    monkeypatch.setattr(workflows, "predict", real_predict)
    assert main(argv) == 0  # the cause fixed: t1 denoised with the finished model, t0 skipped
    assert {os.path.basename(r.input): r.status for r in read_summary(out / "denoise_summary.tsv")} == {"t0.mrc": "skipped", "t1.mrc": "denoised"}
    assert sorted(p.name for p in model.glob("checkpoint*.pt")) == checkpoints  # not trained further
    assert torch.load(latest_checkpoint(str(model)), map_location="cpu", weights_only=True)["trainer"]["iteration"] == 4
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*_denoised.mrc")}
    capsys.readouterr()
    assert main(argv) == 0
    assert [r.status for r in read_summary(out / "denoise_summary.tsv")] == ["skipped"] * 2
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*_denoised.mrc")} == stamps
    assert "fitting one model" not in capsys.readouterr().err  # nothing to do: no fit either

    # another set of tomograms: its outputs are not complete ones, and the run folder is another run's
    write_volume(inputs / "t2.mrc", np.random.default_rng(2).standard_normal((16, 32, 32)).astype(np.float32), voxel_size=10.0)
    assert main(argv) == 2
    assert "not complete outputs" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 2
    assert "holds checkpoints of another run" in capsys.readouterr().err

    # the wrong uses: one tomogram, a method that needs one whole tomogram
    assert main(["denoise", str(inputs / "t0.mrc"), "-o", str(tmp_path / "o.mrc"), "--shared-model"]) == 2
    assert "several tomograms, and 1 was given" in capsys.readouterr().err
    assert main(["denoise", str(inputs), "-o", str(tmp_path / "o2"), "--shared-model", "--method", "fourier", "--sampling", "pool"]) == 2
    assert "cannot fit one model on several" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()  # refused before any work


def test_shared_model_in_two_processes(tmp_path):
    """--nproc 2 --shared-model: torch.distributed.run, gloo; one model trained data parallel,
    each process reading only its share of the tomograms, then denoising those."""
    inputs = _tomograms(tmp_path / "in", n=2)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "CET_MONAI_FAULT")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "cet_monai.cli", "denoise", str(inputs), "-o", str(out), "--shared-model", "--nproc", "2", *BUDGET]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_summary(out / "denoise_summary.tsv")
    assert {os.path.basename(r.input): (r.status, r.rank) for r in rows} == {"t0.mrc": ("denoised", 0), "t1.mrc": ("denoised", 1)}
    assert len({r.quality.split("held-out loss")[1] for r in rows}) == 1  # one validation score, gathered from both processes
    assert "rank 0: fitted" in done.stderr and "drawing patches from t0.mrc;" in done.stderr
    assert "rank 1: fitted" in done.stderr and "drawing patches from t1.mrc;" in done.stderr
    model = out / "shared_model_run"
    assert len(list(model.glob("checkpoint_final*.pt"))) == 1 and not list(out.glob("*_denoised_run"))
    state = torch.load(latest_checkpoint(str(model)), map_location="cpu", weights_only=True)
    assert state["trainer"]["iteration"] == 4 and not any(k.startswith("module.") for k in state["network"])
