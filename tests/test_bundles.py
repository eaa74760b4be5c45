"""The denoising bundles through MONAI's own bundle machinery.

Training and inference end to end (ConfigWorkflow and ``python -m monai.bundle run``), MONAI's
property checks, ``verify_net_in_out``, metadata against the vendored schema, a ``network_def``
override reaching the checkpoint, bit-exact resume after an interruption, and the 2-process gloo
run of ``multi_gpu_train.yaml`` under ``torchrun``. Everything runs on tiny simulated tomograms
(16 x 32 x 32 voxels, 16-voxel patches, small networks, a few iterations) on one CPU thread.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
import torch

ROOT = Path(__file__).resolve().parent.parent
BUNDLES = ["recorrupted_denoising", "fourier_denoising", "real_denoising"]
#: bundles trained on the simulated default in the end-to-end test (validation: PSNR against its clean reference)
ON_SIMULATION = ("recorrupted_denoising", "fourier_denoising")
METHOD = {"recorrupted_denoising": "recorrupted", "fourier_denoising": "fourier", "real_denoising": "real"}
SCHEMA = Path(__file__).resolve().parent / "data" / "meta_schema.json"

# tiny budget: 16 x 32 x 32 simulated tomogram (fast mode), 16-voxel patches, 2 iterations per epoch
TINY = {
    "simulation#shape": [16, 32, 32],
    "simulation#mode": "fast",
    "patch_size": [16, 16, 16],
    "epoch_length": 2,
    "val_interval": 1,
    "checkpoint_interval": 1,
    "preview_interval": 1000,
    "progress": False,
    "network_def#features": [8, 16, 16],
}
MARGIN = {"recorrupted_denoising": {"margin": 4}, "fourier_denoising": {"margin": 4}, "real_denoising": {}}


def configs(bundle: str, name: str = "train.yaml") -> str:
    """One file of a bundle's configs/ folder (metadata.json, logging.conf, ...)."""
    return str(ROOT / "bundles" / bundle / "configs" / name)


def config_arg(bundle: str, *names: str) -> str:
    """The ``--config_file`` value of a documented command: the files MONAI merges for ``names``
    (train.yaml = the method's file, then the shared one), as a Python list literal."""
    from cet_monai.workflows import config_files

    files = config_files(bundle, names or ("train.yaml",))
    return files[0] if len(files) == 1 else "[" + ",".join(f"'{f}'" for f in files) + "]"


def workflow(bundle: str, files=("train.yaml",), workflow_type: str = "train", **overrides):
    from monai.bundle import ConfigWorkflow

    from cet_monai.workflows import config_files

    paths = config_files(bundle, files)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ConfigWorkflow(
            config_file=paths if len(paths) > 1 else paths[0],
            meta_file=configs(bundle, "metadata.json"),
            logging_file=configs(bundle, "logging.conf"),
            workflow_type=workflow_type,
            **overrides,
        )


def train(bundle: str, output_dir, **overrides):
    wf = workflow(bundle, output_dir=str(output_dir), **{**TINY, **MARGIN[bundle], **overrides})
    wf.initialize()
    wf.run()
    wf.finalize()
    return wf


def final_checkpoint(output_dir) -> str:
    (path,) = glob.glob(os.path.join(str(output_dir), "checkpoint_final_iteration=*.pt"))
    return path


def subprocess_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on a small shared machine 2 threads make these tiny convolutions ~10x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tomogram_file(tmp_path_factory):
    """A small simulated tomogram written as MRC with a non-default header (voxel size, origin, label)."""
    from cet_monai.data import simulate_tomogram
    from cet_monai.io import VolumeHeader, write_volume

    sim = simulate_tomogram(shape=(16, 32, 32), mode="fast", seed=3)
    path = tmp_path_factory.mktemp("tomo") / "tomo.mrc"
    header = VolumeHeader(voxel_size=(13.5, 12.5, 12.5), origin=(10.0, 20.0, 30.0), labels=("cet-monai bundle test",))
    write_volume(path, sim.noisy, header=header)
    return path


# ---------------------------------------------------------------------------- metadata


@pytest.mark.parametrize("bundle", [*BUNDLES, "denoising"])
def test_metadata_valid_against_vendored_schema(bundle):
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    meta = json.loads(Path(configs(bundle, "metadata.json")).read_text())
    jsonschema.validators.validator_for(schema).check_schema(schema)
    jsonschema.Draft201909Validator(schema).validate(meta)
    assert meta["schema"].endswith("meta_schema_20240725.json")
    for key, tensor in (("inputs", "image"), ("outputs", "pred")):  # (1, Z, Y, X) float32 patches
        spec = meta["network_data_format"][key][tensor]
        assert spec["num_channels"] == 1 and spec["dtype"] == "float32" and len(spec["spatial_shape"]) == 3
    # the validator does catch a broken file
    broken = dict(meta)
    del broken["network_data_format"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft201909Validator(schema).validate(broken)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_verify_net_in_out(bundle):
    from monai.bundle import verify_net_in_out

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # n=2: 16^3 inputs (the metadata says 8*n per axis: the default network's divisor)
        verify_net_in_out(net_id="network_def", meta_file=configs(bundle, "metadata.json"),
                          config_file=__import__("cet_monai.workflows").workflows.config_files(bundle), device="cpu", n=2)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_bundle_files_present(bundle):
    root = ROOT / "bundles" / bundle
    for name in ("configs/train.yaml", "configs/metadata.json", "configs/logging.conf", "docs/README.md", "LICENSE"):
        assert (root / name).is_file(), name
    assert "Apache License" in (root / "LICENSE").read_text()[:200]
    shared = ROOT / "bundles" / "denoising"
    for name in ("configs/train.yaml", "configs/inference.yaml", "configs/multi_gpu_train.yaml", "configs/metadata.json",
                 "configs/logging.conf", "docs/README.md", "LICENSE"):
        assert (shared / name).is_file(), name


@pytest.mark.parametrize("bundle", BUNDLES)
def test_a_method_file_and_the_shared_training_file_share_no_id(bundle):
    """MONAI replaces a top-level id wholesale when a later file repeats it: an id in both files
    would silently take the shared file's value, so each id lives in one of them."""
    method = yaml.safe_load(Path(configs(bundle)).read_text())
    shared = yaml.safe_load((ROOT / "bundles" / "denoising" / "configs" / "train.yaml").read_text())
    assert set(method) & set(shared) == set()
    assert {"method_def", "network_def", "loss", "iterations", "bundle_root"} <= set(method)


# ---------------------------------------------------------------------------- train -> infer


@pytest.mark.parametrize("bundle", BUNDLES)
def test_train_then_infer_end_to_end(bundle, tmp_path, tomogram_file):
    """Train through ConfigWorkflow, then denoise an MRC with ``python -m monai.bundle run inference``.

    The Fourier bundle trains on the simulated default (validation: PSNR against its clean
    reference); the real-space bundle on the MRC file (no reference: minus the masked loss on
    held-out masked pairs). Both override ``network_def#features``; the checkpoint's weights
    and the method record that inference rebuilds the network from must follow the override.
    """
    from cet_monai.io import read_volume

    features = [8, 16, 16] if bundle in ON_SIMULATION else [4, 8, 8, 8]
    extra = {} if bundle in ON_SIMULATION else {"tomogram": str(tomogram_file)}
    out = tmp_path / "run"
    wf = workflow(bundle, output_dir=str(out), iterations=4, **{**TINY, **MARGIN[bundle], **extra, "network_def#features": features})
    wf.initialize()
    assert wf.check_properties() == []
    wf.run()
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    score = evaluator.state.metrics["val_quality"]
    if bundle in ON_SIMULATION:
        assert score > 5.0  # PSNR in dB against the clean reference
        assert "val_ssim" in evaluator.state.metrics
    else:
        assert -10.0 < score < 0.0  # minus the masked MSE on the normalised scale
        assert isinstance(wf.parser.get_parsed_content("loss"), __import__("cet_monai").losses.MaskedMSELoss)
    wf.finalize()

    ckpt = torch.load(final_checkpoint(out), map_location="cpu", weights_only=True)
    assert ckpt["trainer"]["iteration"] == 4
    # the override reached the trained network: first convolution features[0] x 1 x 3^3, depth = len(features)
    assert tuple(ckpt["network"]["encoders.0.0.conv.weight"].shape) == (features[0], 1, 3, 3, 3)
    assert sum(k.startswith("encoders.") and k.endswith(".0.conv.weight") for k in ckpt["network"]) == len(features)
    assert ckpt["method"]["network_args"]["features"] == features
    assert ckpt["method"]["method"]["name"] == METHOD[bundle]
    assert (out / "model_best.pt").is_file() and (out / "preview.png").is_file()
    assert glob.glob(str(out / "tensorboard" / "events.*"))

    # MONAI's property check of the inference workflow (from the checkpoint's method record: no training config needed)
    infer = workflow(bundle, ("inference.yaml",), "infer", tomogram=str(tomogram_file), checkpoint=final_checkpoint(out))
    infer.initialize()
    assert infer.check_properties() == []

    denoised = tmp_path / "denoised.mrc"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file", config_arg(bundle, "inference.yaml"),
           "--tomogram", str(tomogram_file), "--checkpoint", final_checkpoint(out), "--output", str(denoised),
           "--versions", "2", "--progress", "False"]
    result = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    volume, header = read_volume(denoised)
    raw, raw_header = read_volume(tomogram_file)
    assert volume.shape == raw.shape and volume.dtype == np.float32 and np.isfinite(volume).all()
    assert header.voxel_size == pytest.approx(raw_header.voxel_size) and header.origin == pytest.approx(raw_header.origin)
    # on the input's intensity scale (a 4-iteration network is close to a constant: no quality claim)
    assert abs(volume.mean() - raw.mean()) < raw.std() and volume.std() < raw.std()
    assert denoised.with_suffix(".png").is_file()


# ---------------------------------------------------------------------------- resume


@pytest.mark.parametrize("bundle", BUNDLES)
def test_resume_after_interruption_is_exact(bundle, tmp_path):
    """Stop a 4-epoch run after epoch 2 (its checkpoint written, the run killed: no final
    checkpoint), rerun the same output_dir with the full budget: the iteration count, optimiser,
    scheduler and random streams continue, and the final weights equal an uninterrupted run's."""
    from ignite.engine import Events

    budget = {"iterations": 8}
    train(bundle, tmp_path / "straight", **budget)

    interrupted = tmp_path / "interrupted"
    train(bundle, interrupted, **budget, **{"train#trainer#max_epochs": 2})  # the full schedule, stopped early
    for path in glob.glob(str(interrupted / "checkpoint_final_iteration=*.pt")):
        os.remove(path)  # as after a kill: only the epoch checkpoints remain
    assert (interrupted / "checkpoint_epoch=2.pt").is_file()

    wf = workflow(bundle, output_dir=str(interrupted), **{**TINY, **MARGIN[bundle], **budget})
    wf.initialize()
    iterations_run = []
    wf.parser.get_parsed_content("train#trainer").add_event_handler(
        Events.ITERATION_COMPLETED, lambda engine: iterations_run.append(engine.state.iteration))
    wf.run()
    wf.finalize()
    assert iterations_run == [5, 6, 7, 8]

    a = torch.load(final_checkpoint(tmp_path / "straight"), map_location="cpu", weights_only=True)
    b = torch.load(final_checkpoint(interrupted), map_location="cpu", weights_only=True)
    assert a["trainer"] == b["trainer"]
    assert a["lr_scheduler"] == b["lr_scheduler"]
    torch.testing.assert_close(b["network"], a["network"], rtol=0, atol=0)
    torch.testing.assert_close(b["optimizer"]["state"], a["optimizer"]["state"], rtol=0, atol=0)


def test_resume_with_a_larger_budget_and_the_best_model():
    """A resumed run (1) follows the cosine schedule of its own, larger budget (the loaded
    scheduler carried the old T_max), (2) keeps the best validation score of model_best.pt, so
    the file is replaced only by a better model (the saver restarted from no score)."""
    import tempfile

    bundle = "recorrupted_denoising"
    with tempfile.TemporaryDirectory() as tmp:
        first = train(bundle, tmp, iterations=4)
        best_before = first.parser.get_parsed_content("validate#handlers#2")._key_metric_checkpoint._saved
        assert best_before and os.path.isfile(os.path.join(tmp, "model_best.pt"))
        wf = workflow(bundle, output_dir=tmp, **{**TINY, **MARGIN[bundle], "iterations": 8})
        wf.initialize()
        wf.run()
        wf.finalize()
        scheduler = wf.parser.get_parsed_content("lr_scheduler")
        assert scheduler.T_max == 8 and scheduler.last_epoch == 8
        lr = wf.parser.get_parsed_content("optimizer").param_groups[0]["lr"]
        assert lr == pytest.approx(scheduler.eta_min, rel=1e-6)  # the end of the 8-step schedule
        saved = wf.parser.get_parsed_content("validate#handlers#2")._key_metric_checkpoint._saved
        assert saved[0].priority >= best_before[0].priority  # never replaced by a worse score


def test_the_recorrupted_bundle_trains_with_the_noise_weighted_loss(tmp_path):
    """The default: the loss weighted by the noise spectrum to the power 0.5 (built by the method,
    with the spectrum estimated in the run) and the targets low-pass filtered where the
    tomogram's spectrum says its signal ends (``auto``); ``--target_lowpass 0.35`` reaches the
    training pairs as given; the checkpoint's record keeps both; ``--noise_weighted_loss 0
    --target_lowpass None`` is the plain MSE with unfiltered targets."""
    from cet_monai.losses import NoiseWeightedMSELoss

    default = workflow("recorrupted_denoising", output_dir=str(tmp_path / "default"), **{**TINY, **MARGIN["recorrupted_denoising"]})
    default.initialize()
    method = default.parser.get_parsed_content("method")
    assert method.noise_weighted_loss == 0.5 and method.target_lowpass == "auto"
    assert default.parser.get_parsed_content("train#pairing").pairer.target_lowpass == method.lowpass_cutoff()
    wf = train("recorrupted_denoising", tmp_path / "weighted", iterations=2, noise_weighted_loss=0.5, target_lowpass=0.35)
    assert wf.parser.get_parsed_content("train#pairing").pairer.target_lowpass == 0.35
    loss = wf.parser.get_parsed_content("train#trainer").loss_function
    assert isinstance(loss, NoiseWeightedMSELoss) and loss.exponent == 0.5
    assert loss.spectra == [wf.parser.get_parsed_content("method").spectrum]
    assert np.isfinite(wf.parser.get_parsed_content("train#trainer").state.output["loss"].item())
    ckpt = torch.load(final_checkpoint(tmp_path / "weighted"), map_location="cpu", weights_only=True)
    assert ckpt["method"]["method"]["noise_weighted_loss"] == 0.5
    assert ckpt["method"]["method"]["target_lowpass"] == 0.35
    plain = workflow("recorrupted_denoising", output_dir=str(tmp_path / "plain"), noise_weighted_loss=0.0, target_lowpass=None,
                     **{**TINY, **MARGIN["recorrupted_denoising"]})
    plain.initialize()
    assert type(plain.parser.get_parsed_content("loss")) is torch.nn.MSELoss
    assert plain.parser.get_parsed_content("train#pairing").pairer.target_lowpass is None


# ---------------------------------------------------------------------------- multi-GPU config


@pytest.mark.parametrize("bundle", BUNDLES)
@pytest.mark.parametrize("rank", [0, 1])
def test_multi_gpu_writers_only_on_rank_zero(bundle, rank, monkeypatch, tmp_path):
    """multi_gpu_train.yaml disables handlers by index in train.yaml's lists: check that rank 0
    keeps all of them and the others keep exactly the ones every rank needs."""
    from monai.handlers import CheckpointSaver, StatsHandler, TensorBoardStatsHandler

    from cet_monai.engines import PreviewWriter, TrainingProgressBar

    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("LOCAL_RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", "2")
    # no process group here: parse everything but the DDP wrapper
    wf = workflow(bundle, ("train.yaml", "multi_gpu_train.yaml"), output_dir=str(tmp_path), network="$@network_def",
                  **{**TINY, **MARGIN[bundle]})
    parser = wf.parser
    parser.parse()
    train_handlers = parser.get_parsed_content("train#handlers")
    val_handlers = parser.get_parsed_content("validate#handlers")
    writers = (StatsHandler, TensorBoardStatsHandler, CheckpointSaver, PreviewWriter, TrainingProgressBar)
    if rank == 0:
        assert len(train_handlers) == len(parser["train#handlers"]) == 10 and len(val_handlers) == 3
    else:
        names = [type(h).__name__ for h in train_handlers]
        assert names == ["ResumeFromCheckpoint", "LrScheduleHandler", "GradientClipping", "ValidationHandler", "EarlyStopOnValidation"]
        assert not any(isinstance(h, writers) for h in train_handlers) and val_handlers == []
        assert "random_states" not in parser.get_parsed_content("train#handlers")[0].load_dict
    assert len(parser.get_parsed_content("train#dataset")) == TINY["epoch_length"]  # each rank's own data, epoch_length items
    assert parser.get_parsed_content("record").network is parser.get_parsed_content("network_def")
    assert not glob.glob(str(tmp_path / "tensorboard" / "*")) or rank == 0


def test_torchrun_two_processes_gloo(tmp_path):
    """The documented multi-GPU command, on CPU: 2 processes, gloo, OMP_NUM_THREADS=1."""
    bundle = "fourier_denoising"
    out = tmp_path / "ddp"
    files = config_arg(bundle, "train.yaml", "multi_gpu_train.yaml")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "monai.bundle", "run", "training", "--config_file", files, "--output_dir", str(out),
           "--simulation#shape", "[16,32,32]", "--patch_size", "[16,16,16]", "--margin", "4",
           "--iterations", "4", "--epoch_length", "2", "--val_interval", "1", "--checkpoint_interval", "1",
           "--network_def#features", "[8,16,16]", "--progress", "False"]
    result = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    ckpt = torch.load(final_checkpoint(out), map_location="cpu", weights_only=True)
    assert ckpt["trainer"]["iteration"] == 4
    assert not any(k.startswith("module.") for k in ckpt["network"])  # the plain network, not the DDP wrapper
    assert ckpt["method"]["network_class"].endswith("DropoutUNet")
    # one writer: both TensorBoard event files (trainer and evaluator) come from the same process
    events = glob.glob(str(out / "tensorboard" / "events.*"))
    assert len(events) == 2 and len({Path(e).name.split(".")[-2] for e in events}) == 1


def _split_top_level(text: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[(" and 1 or 0
        depth -= ch in "])" and 1 or 0
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return out + [cur.strip()]


def _readme_defaults(readme: Path):
    """(config id, documented default) for every settings-table row whose defaults are plain
    values (numbers, lists, booleans, null, `strings`; "2 epochs" counts as 2)."""
    import re

    for line in readme.read_text().splitlines():
        m = re.match(r"^\|\s*(`[^|]+)\|\s*([^|]+)\|", line)
        if not m:
            continue
        keys = re.findall(r"`([^`]+)`", m.group(1))
        base = keys[0].rsplit("#", 1)[0] if "#" in keys[0] else ""
        keys = [f"{base}{k}" if k.startswith("#") else k for k in keys]
        values = _split_top_level(m.group(2).strip())
        if len(values) != len(keys):
            continue
        parsed = []
        for v in values:
            v = re.sub(r" (epochs?|iterations|voxels)$", "", v.strip())
            quoted = v.startswith("`") and v.endswith("`")
            try:
                value = yaml.safe_load(v.strip("`"))
                value = float(value) if isinstance(value, str) and not quoted and re.fullmatch(r"[\d.]+e-?\d+", value) else value
            except yaml.YAMLError:
                parsed = None
                break
            if isinstance(value, str) and not quoted:
                parsed = None
                break
            parsed.append(value)
        yield from zip(keys, parsed or [])


@pytest.mark.parametrize("bundle", ["recorrupted_denoising", "fourier_denoising", "real_denoising"])
def test_readme_settings_tables_state_the_shipped_defaults(bundle):
    root = Path(__file__).resolve().parent.parent / "bundles" / bundle
    config = {}
    for path in __import__("cet_monai.workflows").workflows.config_files(bundle):
        config.update(yaml.safe_load(Path(path).read_text()))  # as MONAI merges the two files
    checked = 0
    for key, documented in _readme_defaults(root / "docs" / "README.md"):
        node = config
        for part in key.split("#"):
            assert isinstance(node, dict) and part in node, f"README documents {key!r}, which train.yaml does not have"
            node = node[part]
        if isinstance(node, str) and node.startswith("$"):
            continue  # an expression: documented in words
        same = documented == node or (isinstance(documented, (int, float)) and isinstance(node, (int, float)) and abs(documented - node) < 1e-12)
        assert same, f"{bundle} README says {key} = {documented!r}, train.yaml ships {node!r}"
        checked += 1
    assert checked >= 8


def test_command_line_booleans_as_strings_are_read_as_booleans(tmp_path):
    """`python -m monai.bundle run ... --progress false` passes the string "false"."""
    from cet_monai.engines import TrainingProgressBar, as_bool
    from cet_monai.errors import OptionError

    assert [as_bool(v) for v in ("false", "False", "0", "no", "true", "YES", 1, False)] == [False] * 4 + [True] * 3 + [False]
    with pytest.raises(OptionError, match="progress: expected true or false"):
        as_bool("maybe", "progress")
    assert TrainingProgressBar(enabled="false").enabled is False


def test_a_misspelled_bundle_command_line_id_fails_before_training_with_the_close_matches(tmp_path):
    """``python -m monai.bundle run training --lerning_rate ...``: MONAI would add the id silently
    and train with the default; the bundle's first ``initialize`` step refuses it."""
    from cet_monai.engines import check_bundle_command_line
    from cet_monai.errors import OptionError

    main = os.path.join(os.path.dirname(__import__("monai").__file__), "bundle", "__main__.py")
    train = config_arg("recorrupted_denoising")
    files = config_arg("recorrupted_denoising", "train.yaml", "multi_gpu_train.yaml")
    check_bundle_command_line([main, "run", "training", "--config_file", train, "--learning_rate", "0.1", "--simulation#shape", "[16,32,32]"])
    check_bundle_command_line([main, "run", "training", "--config_file", files, "--network#broadcast_buffers", "false"])
    check_bundle_command_line(["pytest", "--lerning_rate", "1"])  # not a bundle run: nothing to check
    with pytest.raises(OptionError, match="--lerning_rate: no such setting.*did you mean learning_rate"):
        check_bundle_command_line([main, "run", "training", "--config_file", train, "--lerning_rate=0.1"])
    # the real command line: fails in a few seconds, before any training, naming the id
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", train, "--output_dir", str(tmp_path / "run"),
           "--lerning_rate", "0.1"]
    result = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "--lerning_rate: no such setting" in result.stderr + result.stdout
    assert not list((tmp_path / "run").glob("checkpoint*"))
