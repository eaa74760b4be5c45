"""Tests of membrane segmentation (cet_monai.segmentation) and its bundle.

Tiny volumes and a few iterations keep the whole file under a minute on two shared cores.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from cet_monai.errors import CetMonaiError, OutputExistsError, TomogramError
from cet_monai.io import VolumeHeader, read_volume, write_volume
from cet_monai.segmentation import (
    MaskedDiceCELoss,
    ModelSpec,
    SegmentationData,
    SegmentationMetricInputsd,
    augmentations,
    check_labels,
    dice_score,
    load_checkpoint,
    segment,
    surface_dice_score,
)
from cet_monai.segmentation import experiment as exp

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "membrane_segmentation"


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a 2-core machine shared with other jobs, 2 threads oversubscribe
    the cores and the tiny trainings below run several times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _logits_and_labels(seed=0, shape=(2, 2, 8, 10, 12)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g)
    labels = torch.randint(0, 2, (shape[0], 1, *shape[2:]), generator=g)
    unknown = torch.rand((shape[0], 1, *shape[2:]), generator=g) < 0.3
    labels[unknown] = 2
    return logits, labels


# ----------------------------------------------------------------------------- loss


def test_loss_ignores_unknown_voxels():
    loss = MaskedDiceCELoss(ignore_index=2)
    logits, labels = _logits_and_labels()
    ignored = (labels == 2).expand_as(logits)
    base = loss(logits, labels)

    changed = logits.clone()
    changed[ignored] = 20 * torch.randn(int(ignored.sum()))  # anything at all on unknown voxels
    assert loss(changed, labels).item() == pytest.approx(base.item(), abs=1e-6)

    elsewhere = logits.clone()
    elsewhere[~ignored] += torch.randn(int((~ignored).sum()))
    assert abs(loss(elsewhere, labels).item() - base.item()) > 1e-3

    x = logits.clone().requires_grad_()
    loss(x, labels).backward()
    assert torch.count_nonzero(x.grad[ignored]) == 0
    assert torch.count_nonzero(x.grad[~ignored]) > 0


def test_loss_equals_monai_dice_ce_without_unknown_voxels():
    from monai.losses import DiceCELoss

    logits, labels = _logits_and_labels(seed=1)
    labels[labels == 2] = 1
    ours = MaskedDiceCELoss(ignore_index=2, include_background=False, batch=True)(logits, labels)
    ref = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)(logits, labels)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)


def test_loss_edge_cases():
    logits, labels = _logits_and_labels(seed=2)
    x = logits.clone().requires_grad_()
    zero = MaskedDiceCELoss()(x, torch.full_like(labels, 2))
    zero.backward()
    assert zero.item() == 0.0 and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="neither classes"):
        MaskedDiceCELoss(ignore_index=None)(logits, labels)  # 2 is then an invalid class
    with pytest.raises(ValueError):
        MaskedDiceCELoss(num_classes=3, ignore_index=2)


# ----------------------------------------------------------------------------- metrics


def _membrane_labels(shape=(16, 24, 24)):
    lab = np.zeros(shape, np.uint8)
    lab[6:9] = 1
    lab[:, 10:12, :] = 1
    return lab


def test_dice_perfect_empty_and_ignored():
    lab = _membrane_labels()
    assert dice_score(lab, lab) == pytest.approx(1.0)
    assert dice_score(np.zeros_like(lab), lab) == 0.0
    assert surface_dice_score(lab, lab, tolerance=1) == pytest.approx(1.0)
    assert surface_dice_score(np.zeros_like(lab), lab, tolerance=1) == 0.0
    half = lab.copy()
    half[:, :, 12:] = 0
    assert 0.3 < dice_score(half, lab) < 0.8
    # errors on unknown voxels do not count
    with_unknown = lab.copy()
    with_unknown[:, :, 12:] = 2
    assert dice_score(half, with_unknown) == pytest.approx(1.0)
    assert dice_score(1 - half, with_unknown) < 0.5


def test_metric_postprocessing_matches_dice_score():
    from monai.metrics import DiceMetric

    lab = _membrane_labels()
    lab[:4] = 2
    pred = _membrane_labels()
    pred[:, :, :5] = 0
    logits = torch.stack([torch.as_tensor(1.0 - pred), torch.as_tensor(pred * 1.0)])
    d = SegmentationMetricInputsd(num_classes=2, ignore_index=2)({"pred": logits, "label": torch.as_tensor(lab)[None]})
    value = DiceMetric(include_background=False)(d["pred"][None], d["label"][None]).item()
    assert value == pytest.approx(dice_score(pred, lab), abs=1e-6)


# ----------------------------------------------------------------------------- data


def test_label_checks_and_pairs(tmp_path):
    assert check_labels(np.array([0, 1, 2]), ignore_index=2).dtype == np.uint8
    with pytest.raises(TomogramError, match=r"\[3\]"):
        check_labels(np.array([0, 1, 3]))
    rng = np.random.default_rng(0)
    img = rng.normal(size=(16, 40, 40)).astype(np.float32)
    write_volume(tmp_path / "t.mrc", img, voxel_size=10)
    write_volume(tmp_path / "l.mrc", _membrane_labels((16, 40, 40)), dtype="int8")
    write_volume(tmp_path / "bad.mrc", _membrane_labels((16, 40, 32)), dtype="int8")
    data = SegmentationData(pairs=[{"image": tmp_path / "t.mrc", "label": tmp_path / "l.mrc"}], patch_size=(16, 16, 16))
    assert data.hold_out and len(data.validation_items()) == 1
    assert data.validation_items()[0]["image"].shape == (1, 16, 5, 40)
    assert data.train[0][0].shape == (1, 16, 35, 40)
    assert abs(float(data.train[0][0].mean())) < 0.2  # whole-tomogram normalisation
    with pytest.raises(TomogramError, match="shape"):
        SegmentationData(pairs=[{"image": tmp_path / "t.mrc", "label": tmp_path / "bad.mrc"}], patch_size=(16, 16, 16))


def test_augmentations_keep_the_wedge_axis():
    # a volume that varies only along Z stays so: flips, and rotations only about Z
    z_profile = torch.arange(8.0)[:, None, None].expand(8, 12, 12)[None].clone()
    aug = augmentations(keys=("image",), patch_size=(8, 12, 12), flip_prob=0.5, rotate_prob=1.0)
    aug.set_random_state(seed=0)
    for _ in range(10):
        out = torch.as_tensor(aug({"image": z_profile})["image"])
        assert out.shape == z_profile.shape
        assert torch.equal(out, out[:, :, :1, :1].expand_as(out))  # constant in Y and X


def test_choose_patches_nested_and_on_membrane():
    labs = [_membrane_labels((32, 48, 48)), _membrane_labels((32, 48, 48))]
    corners = exp.choose_patches(labs, 6, 16, stride=8, min_fraction=0.05, seed=3)
    assert [c[0] for c in corners] == [0, 1, 0, 1, 0, 1]
    for t, z, y, x in corners:
        assert (labs[t][z:z + 16, y:y + 16, x:x + 16] == 1).mean() >= 0.05
    assert exp.choose_patches(labs, 3, 16, stride=8, min_fraction=0.05, seed=3) == corners[:3]


# ----------------------------------------------------------------------------- segment()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    spec = ModelSpec(features=(4, 8, 16), patch_size=(16, 16, 16))
    torch.manual_seed(0)
    net = spec.build()
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    torch.save({"network": net.state_dict(), "model_spec": spec.state_dict()}, path)
    return path


def test_segment_keeps_header_and_refuses_overwrite(tmp_path, tiny_checkpoint):
    rng = np.random.default_rng(1)
    header = VolumeHeader(voxel_size=(10.0, 11.0, 12.5), origin=(100.0, -20.0, 3.5))
    src = write_volume(tmp_path / "tomo.mrc", rng.normal(size=(20, 24, 28)).astype(np.float32), header=header)
    out, prob = tmp_path / "labels.mrc", tmp_path / "prob.mrc"
    res = segment(src, out, tiny_checkpoint, probability_path=prob, device="cpu")
    labels, h = read_volume(out)
    p, hp = read_volume(prob)
    assert labels.dtype == np.int8 and labels.shape == (20, 24, 28)
    assert set(np.unique(labels)) <= {0, 1}
    for hh in (h, hp):
        assert hh.voxel_size == pytest.approx(header.voxel_size) and hh.origin == pytest.approx(header.origin)
    assert p.min() >= 0 and p.max() <= 1
    np.testing.assert_array_equal(labels, (p > 0.5).astype(np.int8))
    assert res["membrane_fraction"] == pytest.approx(labels.mean())
    with pytest.raises(OutputExistsError):
        segment(src, out, tiny_checkpoint, device="cpu")
    with pytest.raises(OutputExistsError):
        segment(src, src, tiny_checkpoint, device="cpu")
    segment(src, tmp_path / "labels.nii.gz", tiny_checkpoint, device="cpu")  # other formats keep the header too
    assert read_volume(tmp_path / "labels.nii.gz")[1].voxel_size == pytest.approx(header.voxel_size)
    with pytest.raises(TomogramError, match="not found"):
        segment(src, tmp_path / "x.mrc", tmp_path / "missing.pt")


def test_segment_runs_the_bundle_and_gives_the_direct_sliding_window_result(tmp_path, tiny_checkpoint):
    """segment() goes through membrane_segmentation/configs/inference.yaml: its probability is
    the one a direct MONAI sliding window over the normalised tomogram gives, and the preview
    and a window override reach it."""
    from cet_monai.normalize import TomogramNormalizer
    from cet_monai.segmentation import load_model, predict_probability

    rng = np.random.default_rng(2)
    raw = rng.normal(size=(20, 24, 28)).astype(np.float32)
    src = write_volume(tmp_path / "tomo.mrc", raw)
    res = segment(src, tmp_path / "labels.mrc", tiny_checkpoint, probability_path=tmp_path / "p.mrc", device="cpu",
                  preview_path=tmp_path / "previews")
    network, spec = load_model(tiny_checkpoint, device="cpu")
    image = TomogramNormalizer(*spec.percentiles).fit(raw).transform(raw).astype(np.float32)
    direct = predict_probability(image, network, roi_size=spec.patch_size, overlap=0.5, sw_batch_size=4)
    np.testing.assert_allclose(read_volume(tmp_path / "p.mrc")[0], direct, rtol=0, atol=1e-5)
    assert res["preview"] == tmp_path / "previews" / "tomo_membranes.png" and res["preview"].is_file()
    wide = segment(src, tmp_path / "wide.mrc", tiny_checkpoint, probability_path=tmp_path / "pw.mrc", device="cpu", roi_size=[8])
    direct8 = predict_probability(image, network, roi_size=(8, 8, 8), overlap=0.5, sw_batch_size=4)
    np.testing.assert_allclose(read_volume(tmp_path / "pw.mrc")[0], direct8, rtol=0, atol=1e-5)
    assert wide["labels"] == tmp_path / "wide.mrc"


# ----------------------------------------------------------------------------- the bundle


def _workflow(config, workflow_type, **overrides):
    from monai.bundle import ConfigWorkflow

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ConfigWorkflow(
            config_file=str(BUNDLE / "configs" / config),
            meta_file=str(BUNDLE / "configs" / "metadata.json"),
            logging_file=str(BUNDLE / "configs" / "logging.conf"),
            workflow_type=workflow_type,
            bundle_root=str(BUNDLE),
            **overrides,
        )


def test_bundle_trains_and_segments_end_to_end(tmp_path):
    run_dir = tmp_path / "run"
    wf = _workflow(
        "train.yaml", "train", output_dir=str(run_dir), iterations=2, epoch_length=1, val_interval=1,
        batch_size=1, patches_per_item=1, patch_size=[16, 16, 16], progress=False,
        simulation={"shape": [16, 32, 32], "mode": "fast", "snr": 0.05},
    )
    wf.initialize()
    assert wf.check_properties() == []
    wf.run()
    wf.finalize()
    for name in ("model.pt", "model_best.pt", "checkpoint_final_iteration=2.pt"):
        assert (run_dir / name).is_file(), name
    state, spec = load_checkpoint(run_dir / "checkpoint_final_iteration=2.pt")  # full checkpoint, weights_only
    assert spec.patch_size == (16, 16, 16) and state

    header = VolumeHeader(voxel_size=(7.0, 8.0, 9.0), origin=(1.0, 2.0, 3.0))
    src = write_volume(tmp_path / "t.mrc", np.random.default_rng(0).normal(size=(16, 24, 24)).astype(np.float32), header=header)
    inf = _workflow("inference.yaml", "infer", input=str(src), checkpoint=str(run_dir / "model.pt"),
                    output=str(tmp_path / "seg"), probability_output=str(tmp_path / "seg"))
    inf.initialize()
    assert inf.check_properties() == []
    inf.run()
    inf.finalize()
    labels, h = read_volume(tmp_path / "seg" / "t_membranes.mrc")
    assert labels.dtype == np.int8 and h.voxel_size == pytest.approx(header.voxel_size) and h.origin == pytest.approx(header.origin)
    prob, _ = read_volume(tmp_path / "seg" / "t_membrane_probability.mrc")
    np.testing.assert_array_equal(labels, (prob > 0.5).astype(np.int8))


# ----------------------------------------------------------------------------- the experiment


def test_experiment_runs_end_to_end_at_tiny_size(tmp_path, monkeypatch):
    settings = exp.SIZES["tiny"]
    assert settings.shape == (32, 32, 32) and settings.kinds == ("raw",)
    res = exp.run_experiment(settings, tmp_path / "e", device="cpu")
    for name in ("runs.csv", "inputs.csv", "blocks.csv", "summary.csv", "paired.csv", "summary.md",
                 "dice_vs_patches.png", "experiment.json"):
        assert (tmp_path / "e" / name).is_file(), name
    # both protocols; the raw input's raw-trained row is the same network on the same input
    assert [(r["protocol"], r["kind"]) for r in res["runs"]] == [("denoised", "raw"), ("raw_trained", "raw")]
    assert res["runs"][0]["dice"] == res["runs"][1]["dice"]
    assert (tmp_path / "e" / "cache" / "seed0" / "net_raw_N1.pt").is_file()
    assert "| raw |" in res["tables"] and "Verdict" in res["tables"] and "trained on raw" in res["tables"]
    again = exp.run_experiment(settings, tmp_path / "e", device="cpu")  # resumes: nothing left to do
    assert again["runs"] == res["runs"]
    with pytest.raises(CetMonaiError, match="other settings.*iterations"):
        exp.run_experiment(settings.with_overrides(iterations=3), tmp_path / "e")
    # a grown grid resumes the same experiment: the raw row is kept, the new kind is added
    grown = exp.run_experiment(settings.with_overrides(kinds=("gaussian",), denoise_overrides={"iterations": 5}),
                               tmp_path / "e", device="cpu")
    assert [r["kind"] for r in grown["runs"]] == ["raw", "raw", "gaussian", "gaussian"]
    assert grown["runs"][0] == res["runs"][0]
    assert grown["settings"].kinds == ("raw", "gaussian")
    assert grown["settings"].denoise_overrides == settings.denoise_overrides  # no denoiser kind in this run
    assert f"| {exp.KIND_LABELS['gaussian']} |" in grown["tables"] and "| raw |" in grown["tables"]

    import cet_monai.segmentation.inputs as inputs

    monkeypatch.setattr(inputs, "denoiser_status", lambda: (False, "not importable"))
    kinds, unavailable = exp.input_kinds(settings.with_overrides(kinds=("raw", "gaussian", "f2f", "n2n")))
    assert list(kinds) == ["raw", "gaussian"] and set(unavailable) == {"f2f", "n2n"}


def test_merge_experiments_run_in_parallel(tmp_path):
    settings = exp.SIZES["tiny"]
    a = exp.run_experiment(settings, tmp_path / "a", device="cpu")
    b = exp.run_experiment(settings.with_overrides(kinds=("gaussian",)), tmp_path / "b", device="cpu")
    merged = exp.merge_experiments([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    assert [(r["protocol"], r["kind"]) for r in merged["runs"]] == [
        ("denoised", "raw"), ("denoised", "gaussian"), ("raw_trained", "raw"), ("raw_trained", "gaussian")]
    assert merged["runs"][0]["dice"] == a["runs"][0]["dice"] and merged["runs"][1]["dice"] == b["runs"][0]["dice"]
    assert merged["settings"].kinds == ("raw", "gaussian")
    assert f"| {exp.KIND_LABELS['gaussian']} |" in (tmp_path / "m" / "summary.md").read_text()
    n_blocks = len(exp._read_csv(tmp_path / "a" / "blocks.csv")) + len(exp._read_csv(tmp_path / "b" / "blocks.csv"))
    assert len(exp._read_csv(tmp_path / "m" / "blocks.csv")) == n_blocks > 0
    assert (tmp_path / "m" / "dice_vs_patches.png").is_file()
    with pytest.raises(CetMonaiError, match="not empty"):
        exp.merge_experiments([tmp_path / "a"], tmp_path / "m")
    exp.run_experiment(settings.with_overrides(iterations=3), tmp_path / "c", device="cpu")
    with pytest.raises(CetMonaiError, match="another experiment.*iterations"):
        exp.merge_experiments([tmp_path / "a", tmp_path / "c"], tmp_path / "m2")


def test_denoiser_settings_may_change_only_before_denoised_results():
    settings = exp.SIZES["tiny"].with_overrides(kinds=("raw", "f2f"))
    old = settings.to_dict()
    changed = settings.with_overrides(denoise_overrides={"iterations": 7})
    assert exp.incompatible_settings(old, changed, [{"kind": "raw"}]) == ""
    assert "f2f denoiser" in exp.incompatible_settings(old, changed, [{"kind": "raw"}, {"kind": "f2f"}])
    assert exp.incompatible_settings(old, changed.with_overrides(kinds=("raw",)), [{"kind": "f2f"}]) == ""
    assert exp.incompatible_settings(old, settings.with_overrides(seeds=(5, 6), n_patches=(2,)), [{"kind": "f2f"}]) == ""
    assert "snr" in exp.incompatible_settings(old, settings.with_overrides(snr=0.01), [])
    # overrides of one kind leave the other kinds' results valid
    per_kind = settings.with_overrides(denoise_overrides={"iterations": 2, "s2s": {"versions": 4}}, kinds=("f2f", "s2s"))
    assert per_kind.denoiser_overrides("s2s") == {"iterations": 2, "versions": 4}
    assert per_kind.denoiser_overrides("f2f") == {"iterations": 2}
    assert exp.incompatible_settings(old, per_kind, [{"kind": "f2f"}]) == ""
    assert "s2s denoiser" in exp.incompatible_settings(old, per_kind, [{"kind": "s2s"}])
    mixed = exp._per_kind_overrides({"s2s": per_kind, "f2f": settings, "n2n": settings})
    assert mixed == {"iterations": 2, "s2s": {"versions": 4}}


def test_inconclusive_when_raw_is_no_better_than_background():
    settings = exp.SIZES["tiny"]
    runs = [{"seed": s, "kind": k, "n_patches": 4, "dice": d, "surface_dice": d, "background_dice": 0.0, "train_seconds": 1,
             "test_membrane_fraction": 0.1}
            for s in (0, 1, 2) for k, d in (("raw", 0.05), ("gaussian", 0.6))]
    summary = exp.summarize(runs, [])
    assert summary["paired"][0]["dice_minus_raw_mean"] == pytest.approx(0.55)
    assert summary["paired"][0]["better_than_raw"] == 3
    verdict = exp.conclusiveness(summary, settings)
    assert not verdict["conclusive"] and verdict["text"].startswith("inconclusive")
    assert "inconclusive" in exp.format_tables(summary, settings, verdict=verdict)
    runs = [dict(r, dice=0.4) if r["kind"] == "raw" else r for r in runs]
    assert exp.conclusiveness(exp.summarize(runs, []), settings)["conclusive"]
    # a cell with fewer seeds than planned says so
    partial = [r for r in runs if not (r["kind"] == "gaussian" and r["seed"] == 2)]
    table = exp.format_tables(exp.summarize(partial, []), settings.with_overrides(seeds=(0, 1, 2)))
    assert f"| {exp.KIND_LABELS['gaussian']} | 0.600 +- 0.000 (2 seeds) |" in table and "| raw | 0.400 +- 0.000 |" in table


def test_experiment_with_a_real_denoiser_on_an_easy_setting(tmp_path):
    """The recorrupted default denoiser (tiny budget) through the whole experiment: its test input
    is better than raw, and a segmentation trained on either input finds the membranes."""
    settings = exp.ExperimentSettings(
        size="tiny", setting="easy", shape=(32, 64, 64), simulation_mode="fast", n_train_tomograms=1, patch_size=32,
        n_patches=(4,), seeds=(0,), kinds=("raw", "recorrupted"), iterations=40, batch_size=2, features=(4, 8, 16),
        test_block=16, gaussian_sigmas=(1.0,),
        denoise_overrides={"recorrupted": {"iterations": 20, "epoch_length": 10, "versions": 2}})
    res = exp.run_experiment(settings, tmp_path / "e", device="cpu")
    psnr = {r["kind"]: r["psnr"] for r in res["inputs"]}
    assert psnr["recorrupted"] > psnr["raw"] + 1.0
    dice = {(r["protocol"], r["kind"]): r["dice"] for r in res["runs"]}
    assert set(dice) == {(p, k) for p in exp.PROTOCOLS for k in ("raw", "recorrupted")}
    assert min(dice.values()) > 0.5
    paired = {(r["protocol"], r["kind"]): r for r in res["summary"]["paired"]}
    assert paired["denoised", "recorrupted"]["blocks"] > 3
    assert paired["denoised", "recorrupted"]["block_diff_low"] <= paired["denoised", "recorrupted"]["block_diff_mean"]
    # the exported table: one row per run with the input's PSNR
    out = tmp_path / "results.csv"
    counts = exp.export_results([tmp_path / "e"], out, tmp_path / "blocks.csv")
    rows = exp._read_csv(out)
    assert counts["rows"] == len(rows) == 4 and {r["setting"] for r in rows} == {"easy"}
    assert {r["kind"]: r["input_psnr"] for r in rows} == psnr


def test_simulation_settings():
    from cet_monai.segmentation.scenes import SIMULATION_SETTINGS, SimulationSetting, simulation_setting

    with pytest.raises(CetMonaiError, match="unknown simulation setting.*crowded_low_dose"):
        simulation_setting("crowded")
    with pytest.raises(CetMonaiError, match="unknown simulation setting"):
        exp.ExperimentSettings(setting="nope")
    crowded = SIMULATION_SETTINGS["crowded_low_dose"].simulate_kwargs((64, 128, 128), 10.0)
    assert crowded["n_complexes"] == 72 and crowded["snr"] == 0.02 and crowded["ctf"] == {"defocus_um": 4.0}
    # half the volume at the same voxel size: half the complexes (a density, not a count)
    assert SIMULATION_SETTINGS["crowded_low_dose"].simulate_kwargs((32, 128, 128), 10.0)["n_complexes"] == 36
    missing = SimulationSetting("x", "x", snr=0.1, membrane_labels="/nonexistent/labels.mrc", labels_voxel_size=7.5)
    with pytest.raises(CetMonaiError, match="needs the label map"):
        missing.simulate_kwargs((32, 32, 32), 10.0)
    assert exp.ExperimentSettings(setting="crowded_low_dose", snr=0.01).simulation().snr == 0.01
    with pytest.raises(CetMonaiError, match="protocol"):
        exp.ExperimentSettings(protocols=("both",))


def test_block_dice_and_paired_bootstrap():
    from cet_monai.segmentation.statistics import block_corners, block_dice, paired_bootstrap

    labels = np.zeros((32, 32, 32), np.uint8)
    labels[:, 4:8, :] = 1                     # membrane in the blocks with y < 16 only
    pred = labels.copy()
    pred[:16, :, :] = 0                       # first z half missed
    assert len(block_corners(labels.shape, 16)) == 8
    blocks = dict(block_dice(pred, labels, 16))
    assert set(blocks) == {(0, 0, 0), (0, 0, 16), (16, 0, 0), (16, 0, 16)}
    assert blocks[(0, 0, 0)] == 0.0 and blocks[(16, 0, 0)] == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    shifted = {s: 0.05 + 0.02 * rng.standard_normal(20) for s in range(3)}
    ci = paired_bootstrap(shifted)
    assert ci["low"] > 0 and ci["low"] < ci["mean"] < ci["high"] and abs(ci["mean"] - 0.05) < 0.02
    null = paired_bootstrap({s: 0.02 * rng.standard_normal(20) for s in range(3)})
    assert null["low"] < 0 < null["high"] and ci["blocks"] == 60
    # a seed whose own mean differs widens the interval (seeds are resampled, not only blocks)
    spread = paired_bootstrap({0: shifted[0], 1: shifted[1], 2: shifted[2] + 0.2})
    assert spread["high"] - spread["low"] > 3 * (ci["high"] - ci["low"])


def test_train_on_patches_runs_the_documented_steps_on_supervised_trainer():
    """The experiment's training runs on MONAI's SupervisedTrainer; its weights equal, bit for
    bit, those of the plain loop it replaced (seeded draws, augmentation, AdamW, gradient
    clipping, cosine schedule), so the published Dice figures stay reproducible."""
    from cet_monai.segmentation import MaskedDiceCELoss, augmentations
    from cet_monai.segmentation.experiment import train_on_patches

    rng = np.random.default_rng(0)
    images = [rng.normal(size=(16, 16, 16)).astype(np.float32) for _ in range(3)]
    labels = [(rng.random((16, 16, 16)) > 0.8).astype(np.uint8) for _ in range(3)]
    spec = ModelSpec(features=(4, 8, 16), patch_size=(16, 16, 16))
    trained = train_on_patches(images, labels, spec, iterations=4, batch_size=2, seed=3, device="cpu")

    torch.manual_seed(3)
    net = spec.build()
    aug = augmentations(keys=("image", "label"), patch_size=spec.patch_size)
    aug.set_random_state(seed=3)
    loss_fn = MaskedDiceCELoss(num_classes=spec.num_classes, ignore_index=spec.ignore_index)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4, eta_min=0.05 * 2e-3)
    draw = np.random.default_rng(3)
    imgs = [torch.as_tensor(i)[None] for i in images]
    labs = [torch.as_tensor(lab)[None] for lab in labels]
    net.train()
    for _ in range(4):
        batch = [aug({"image": imgs[i], "label": labs[i]}) for i in draw.choice(3, size=2, replace=False)]
        x = torch.stack([b["image"].as_tensor() for b in batch])
        y = torch.stack([b["label"].as_tensor() for b in batch])
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
    expected = net.state_dict()
    for key, value in trained.state_dict().items():
        assert torch.equal(value, expected[key]), key
    assert not trained.training
