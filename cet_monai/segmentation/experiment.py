"""What does denoising do to membrane segmentation? Dice against the number of training patches.

The experiment, on simulated tomograms with membrane ground truth
(:func:`cet_monai.data.simulate_tomogram`, imaging and specimen from a named setting in
:mod:`.scenes`: dose, CTF, crowding, membrane thickness and geometry):

1. For every experiment seed ``s``: simulate ``n_train_tomograms`` training tomograms and one
   held-out test tomogram, with simulation seeds that differ between experiment seeds
   (``1000 * s + 1 ...`` for training, ``1000 * s + 999`` for the test tomogram).
2. Choose ``max(n_patches)`` training patch positions (cubes of ``patch_size`` voxels, at least
   ``min_membrane_fraction`` membrane, spread round-robin over the training tomograms). The
   first ``N`` are the training set of size ``N``: the sets are nested and the *same positions*
   serve every input kind, so kinds are compared on identical data.
3. Prepare every tomogram (training and test) with each *input kind* (:mod:`.inputs`): raw; a
   Gaussian filter with an oracle sigma and one with a sigma chosen from the estimated noise
   spectrum; the recorrupted-pairs default denoiser; real-space Bernoulli masks (Self2Self); the
   Fourier-space Bernoulli pool; Noise2Noise between the even/odd halves (an upper bound). The
   denoiser kinds exist only when :mod:`cet_monai.workflows` can be imported. Each prepared volume
   is normalised with its own whole-tomogram statistics, and its PSNR/SSIM against the clean
   volume recorded.
4. For each kind and ``N``, two protocols (:data:`PROTOCOLS`):

   * ``denoised``: train a fresh segmentation network on the kind's patches (same
     initialisation, same batch order and augmentation for every kind at a given seed and ``N``)
     and segment the kind's test tomogram;
   * ``raw_trained``: segment the kind's test tomogram with the network trained on raw patches
     (same seed and ``N``): what a user gets by feeding denoised tomograms to a model trained on
     raw ones.

   Score Dice and surface Dice on the whole test tomogram and Dice on each ``test_block``^3 block
   that holds membrane (``blocks.csv``).
5. Report mean and standard deviation over seeds, and differences to raw paired by block with
   95 % bootstrap intervals over blocks x seeds (:mod:`.statistics`) (Markdown, CSV, PNG). If the
   raw input's mean Dice does not beat an all-background prediction by ``0.1``, that comparison
   is marked *inconclusive*.

Everything is written under ``out``; finished runs are kept in ``runs.csv`` and skipped when the
experiment is started again with the same settings (so an interrupted run resumes).
:func:`export_results` writes the rows of several folders (settings) into one table.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cet_monai.errors import CetMonaiError
from cet_monai.normalize import TomogramNormalizer

from .data import augmentations
from .inputs import ALL_KINDS, DENOISER_KINDS, KIND_LABELS, denoiser_status, input_kinds
from .losses import MaskedDiceCELoss
from .metrics import dice_score, segmentation_scores
from .model import ModelSpec
from .predict import predict_probability
from .scenes import SimulationSetting, simulation_setting
from .statistics import block_dice, paired_bootstrap

__all__ = [
    "ExperimentSettings",
    "SIZES",
    "experiment_settings",
    "KIND_LABELS",
    "DENOISER_KINDS",
    "PROTOCOLS",
    "input_kinds",
    "denoiser_status",
    "export_results",
    "choose_patches",
    "train_on_patches",
    "run_experiment",
    "summarize",
    "format_tables",
    "plot_dice",
]

logger = logging.getLogger(__name__)

#: the two questions: ``denoised`` trains and tests on each input kind; ``raw_trained`` applies the
#: network trained on raw patches (same seed and N) to each kind's test tomogram
PROTOCOLS = ("denoised", "raw_trained")
PROTOCOL_LABELS = {"denoised": "trained and tested on each input",
                   "raw_trained": "trained on raw, applied to each input"}
#: margin by which the raw input's Dice must beat an all-background prediction
CONCLUSIVE_MARGIN = 0.1


@dataclass
class ExperimentSettings:
    """Everything that defines one run of the experiment (written to ``experiment.json``).

    Sizes: :data:`SIZES` (``"reduced"``: 2 CPU cores, ``"full"``: a GPU, ``"tiny"``: tests).
    ``setting`` names the simulated imaging and specimen
    (:data:`~cet_monai.segmentation.scenes.SIMULATION_SETTINGS`); ``snr``, when given, overrides
    the setting's dose.
    """

    size: str = "reduced"
    setting: str = "standard"
    shape: Sequence[int] = (64, 128, 128)        # simulated tomograms (Z, Y, X), voxels
    voxel_size: float = 10.0                     # angstrom
    snr: float | None = None                     # None: the setting's
    simulation_mode: str = "tilt_series"
    n_train_tomograms: int = 1
    patch_size: int = 32                         # training patch edge = inference window
    n_patches: Sequence[int] = (2, 8, 32)
    seeds: Sequence[int] = (0, 1, 2)
    kinds: Sequence[str] = ALL_KINDS
    protocols: Sequence[str] = PROTOCOLS
    iterations: int = 200
    batch_size: int = 4
    learning_rate: float = 2e-3
    weight_decay: float = 1e-5
    features: Sequence[int] = (8, 16, 32, 64)     # DynUNet channels per level
    architecture: str = "dynunet"
    min_membrane_fraction: float = 0.02
    patch_stride: int = 8                        # grid of candidate patch corners
    surface_tolerance: float = 2.0               # voxels
    overlap: float = 0.5                         # sliding-window overlap at test time
    test_block: int = 32                         # edge (voxels) of the test blocks scored one by one
    gaussian_sigmas: Sequence[float] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0)
    # passed to denoise_volume; a key naming a denoiser kind ("s2s") holds overrides for that kind only
    denoise_overrides: Mapping = field(default_factory=dict)

    def __post_init__(self):
        self.shape = tuple(int(s) for s in self.shape)
        self.n_patches = tuple(sorted(int(n) for n in self.n_patches))
        self.seeds = tuple(int(s) for s in self.seeds)
        self.kinds = tuple(str(k) for k in self.kinds)
        self.protocols = tuple(str(p) for p in self.protocols)
        self.features = tuple(int(f) for f in self.features)
        self.gaussian_sigmas = tuple(float(s) for s in self.gaussian_sigmas)
        self.denoise_overrides = dict(self.denoise_overrides)
        self.snr = None if self.snr is None else float(self.snr)
        simulation_setting(self.setting)  # a clear error for an unknown name
        unknown = [k for k in self.kinds if k not in KIND_LABELS]
        if unknown:
            raise CetMonaiError(f"unknown input kind(s) {unknown}; choose from {list(KIND_LABELS)}")
        bad = [p for p in self.protocols if p not in PROTOCOLS]
        if bad or not self.protocols:
            raise CetMonaiError(f"unknown protocol(s) {bad}; choose one or both of {list(PROTOCOLS)}")
        if not self.kinds or not self.n_patches or not self.seeds:
            raise CetMonaiError("the experiment needs at least one input kind, one N and one seed")
        if min(self.n_patches) < 1:
            raise CetMonaiError(f"numbers of training patches must be >= 1, got {self.n_patches}")
        if any(self.patch_size > s for s in self.shape):
            raise CetMonaiError(f"patch_size {self.patch_size} does not fit the tomograms {self.shape}")
        if not 1 <= self.test_block <= min(self.shape):
            raise CetMonaiError(f"test_block {self.test_block} does not fit the tomograms {self.shape}")
        self.model_spec()  # validates patch size against the network

    def simulation(self) -> SimulationSetting:
        """The simulation setting, with ``snr`` applied when it is set."""
        base = simulation_setting(self.setting)
        return base if self.snr is None else dataclasses.replace(base, snr=self.snr)

    def denoiser_overrides(self, kind: str) -> dict:
        """The ``denoise_volume`` overrides of denoiser kind ``kind``: the shared ones, then the kind's own."""
        shared = {k: v for k, v in self.denoise_overrides.items() if k not in DENOISER_KINDS}
        return {**shared, **dict(self.denoise_overrides.get(kind) or {})}

    def model_spec(self) -> ModelSpec:
        return ModelSpec(architecture=self.architecture, features=self.features, patch_size=(self.patch_size,) * 3)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    def simulation_seeds(self, seed: int) -> tuple[list[int], int]:
        """(training tomogram seeds, test tomogram seed) of experiment seed ``seed``."""
        return [1000 * seed + 1 + i for i in range(self.n_train_tomograms)], 1000 * seed + 999

    def with_overrides(self, **changes) -> ExperimentSettings:
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes)


#: the CPU budget of the three original denoisers: the Fourier bundle's (100 iterations of
#: [8, 16, 32, 64]) for all three, so that real-space masks (bundle default 600 iterations of
#: [16, 32, 64, 64]: ~10 min per tomogram here) fit the grid; the recorrupted default runs as shipped
_CPU_DENOISERS = {"iterations": 100, "network_def#features": [8, 16, 32, 64]}

#: ``reduced``: minutes per training on 2 CPU cores; ``full``: the GPU version; ``tiny``: tests
SIZES: dict[str, ExperimentSettings] = {
    "reduced": ExperimentSettings(size="reduced", denoise_overrides={
        "s2s": {**_CPU_DENOISERS, "versions": 4, "passes": 1},
        "f2f": {**_CPU_DENOISERS, "sampling": "pool"},
        "n2n": dict(_CPU_DENOISERS),
    }),
    "full": ExperimentSettings(
        size="full", shape=(128, 256, 256), n_train_tomograms=4, patch_size=64, n_patches=(2, 4, 8, 16, 32),
        seeds=(0, 1, 2, 3, 4), iterations=3000, batch_size=8, features=(16, 32, 64, 128, 256), learning_rate=1e-3,
        test_block=64, denoise_overrides={"f2f": {"sampling": "pool"}},
    ),
    "tiny": ExperimentSettings(
        size="tiny", shape=(32, 32, 32), simulation_mode="fast", n_train_tomograms=1, patch_size=32,
        n_patches=(1,), seeds=(0,), kinds=("raw",), iterations=2, batch_size=1, features=(4, 8, 16),
        min_membrane_fraction=0.0, test_block=16, gaussian_sigmas=(1.0,), denoise_overrides={"iterations": 2},
    ),
}


def experiment_settings(size: str = "reduced", kinds=None, n_patches=None, seeds=None, iterations=None,
                        denoise_iterations=None, snr=None, denoise_set: Mapping | None = None, setting=None,
                        protocols=None) -> ExperimentSettings:
    """The settings of a named size (:data:`SIZES`) with the command-line overrides applied
    (``None`` keeps the size's value). ``denoise_set`` adds denoiser bundle overrides
    (``{"network_def#dropout": 0.3}``) to the size's ``denoise_overrides``; it and
    ``denoise_iterations`` apply to every denoiser kind, replacing a kind's own value of that key."""
    if size not in SIZES:
        raise CetMonaiError(f"unknown experiment size {size!r}; choose one of {sorted(SIZES)}")
    settings = SIZES[size]
    overrides = {"kinds": kinds, "n_patches": n_patches, "seeds": seeds, "iterations": iterations, "snr": snr,
                 "setting": setting, "protocols": protocols}
    given = dict(denoise_set or {})
    if denoise_iterations is not None:
        given["iterations"] = int(denoise_iterations)
    denoise = {k: ({kk: vv for kk, vv in v.items() if kk not in given} if k in DENOISER_KINDS else v)
               for k, v in settings.denoise_overrides.items()}
    denoise.update(given)
    if denoise != settings.denoise_overrides:
        overrides["denoise_overrides"] = denoise
    return settings.with_overrides(**overrides)


# ----------------------------------------------------------------------------- patches and training


def choose_patches(labels: Sequence[np.ndarray], count: int, patch_size: int, stride: int = 8,
                   min_fraction: float = 0.02, seed: int = 0) -> list[tuple[int, int, int, int]]:
    """``count`` patch corners ``(tomogram, z, y, x)``, round-robin over the tomograms.

    Candidates are the corners on a grid of ``stride`` voxels whose cube holds at least
    ``min_fraction`` membrane; each tomogram's candidates are shuffled with ``seed`` and used
    without repetition (then with, if a tomogram runs out).
    """
    rng = np.random.default_rng(seed)
    pools = []
    for lab in labels:
        lab = np.asarray(lab)
        starts = [sorted(set(list(range(0, n - patch_size + 1, stride)) + [n - patch_size])) for n in lab.shape]
        cands = []
        for z in starts[0]:
            for y in starts[1]:
                for x in starts[2]:
                    frac = float((lab[z:z + patch_size, y:y + patch_size, x:x + patch_size] == 1).mean())
                    if frac >= min_fraction:
                        cands.append((z, y, x))
        if not cands:
            raise CetMonaiError(f"no {patch_size}^3 patch with >= {min_fraction:.0%} membrane in a training tomogram")
        pools.append([cands[i] for i in rng.permutation(len(cands))])
    out = []
    used = [0] * len(pools)
    for i in range(count):
        t = i % len(pools)
        pool = pools[t]
        corner = pool[used[t] % len(pool)]
        used[t] += 1
        out.append((t, *corner))
    return out


def _plain(x) -> torch.Tensor:
    """A MONAI MetaTensor as a plain tensor: the network and loss then skip MetaTensor's
    per-operation metadata handling (much slower on the CPU)."""
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


def _plain_batch(samples: Sequence[Mapping]) -> dict:
    """Collate augmented samples into plain ``(B, 1, ...)`` image / label tensors (see :func:`_plain`)."""
    return {key: torch.stack([_plain(sample[key]) for sample in samples]) for key in ("image", "label")}


def train_on_patches(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], spec: ModelSpec, iterations: int,
                     batch_size: int = 4, learning_rate: float = 2e-3, weight_decay: float = 1e-5, seed: int = 0,
                     device=None, grad_clip: float = 1.0) -> torch.nn.Module:
    """Train a fresh network on fixed (normalised) patches with the bundle's loss and augmentation.

    Every iteration draws ``batch_size`` patches (seeded), flips / rotates them about Z
    (:func:`~cet_monai.segmentation.augmentations`) and takes one AdamW step on
    :class:`~cet_monai.segmentation.MaskedDiceCELoss`; the learning rate follows a cosine to
    5 % of its start. The steps run on MONAI's :class:`~monai.engines.SupervisedTrainer` (the
    engine the bundles train with), with the package's gradient clipping handler. Returns the
    network in eval mode.
    """
    from monai.data import Dataset
    from monai.engines import SupervisedTrainer
    # torch's own loader: MONAI's DataLoader with num_workers=0 reseeds the dataset's transforms
    # from torch's global generator, which would replace the augmentation's seed set below
    from torch.utils.data import DataLoader
    from monai.handlers import LrScheduleHandler

    from cet_monai.engines.handlers import GradientClipping

    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    iterations = int(iterations)
    if iterations < 1:
        raise CetMonaiError(f"iterations must be >= 1, got {iterations}")
    torch.manual_seed(seed)
    network = spec.build().to(device)
    aug = augmentations(keys=("image", "label"), patch_size=spec.patch_size)
    aug.set_random_state(seed=seed)
    loss_fn = MaskedDiceCELoss(num_classes=spec.num_classes, ignore_index=spec.ignore_index)
    opt = torch.optim.AdamW(network.parameters(), lr=learning_rate, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iterations, eta_min=0.05 * learning_rate)
    rng = np.random.default_rng(seed)
    imgs = [torch.as_tensor(i, dtype=torch.float32)[None] for i in images]
    labs = [torch.as_tensor(np.asarray(lab, dtype=np.uint8))[None] for lab in labels]
    # the patches of every step, drawn up front in step order; augmented in that order as they are loaded
    order = [int(i) for _ in range(iterations) for i in rng.choice(len(imgs), size=batch_size, replace=len(imgs) < batch_size)]
    loader = DataLoader(Dataset([{"image": imgs[i], "label": labs[i]} for i in order], transform=aug),
                        batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=_plain_batch)
    handlers = [LrScheduleHandler(sched, epoch_level=False, print_lr=False)]
    if grad_clip:
        handlers.append(GradientClipping(max_norm=grad_clip))
    trainer = SupervisedTrainer(device=device, max_epochs=1, epoch_length=iterations, train_data_loader=loader, network=network,
                                optimizer=opt, loss_function=loss_fn, train_handlers=handlers, amp=False,
                                optim_set_to_none=True, decollate=False)
    trainer.logger.setLevel(logging.WARNING)  # one engine per training set: its INFO lines would flood the experiment's log
    trainer.run()
    return network.eval()


# ----------------------------------------------------------------------------- files


#: settings that only extend the grid: a rerun with more (or fewer) of them resumes the same experiment
GRID_AXES = ("kinds", "seeds", "n_patches", "protocols")
#: settings that only change the denoised input kinds
DENOISER_SETTINGS = ("denoise_overrides",)


def _per_kind_overrides(sources: Mapping[str, ExperimentSettings]) -> dict:
    """``denoise_overrides`` that give each denoiser kind the overrides it has in ``sources[kind]``
    (shared keys where all kinds agree, the rest per kind)."""
    each = {kind: src.denoiser_overrides(kind) for kind, src in sources.items()}
    shared = {k: v for k, v in next(iter(each.values())).items() if all(k in e and e[k] == v for e in each.values())}
    out = dict(shared)
    for kind, e in each.items():
        own = {k: v for k, v in e.items() if k not in shared}
        if own:
            out[kind] = own
    return out


def _union(*grids: Sequence) -> tuple:
    return tuple(dict.fromkeys(x for grid in grids for x in grid))


def _with_denoiser_settings_of(settings: ExperimentSettings, old: Mapping) -> ExperimentSettings:
    """``settings`` with the denoiser settings of the stored settings ``old`` (a dict)."""
    return ExperimentSettings(**{**settings.to_dict(), **{k: old[k] for k in DENOISER_SETTINGS if k in old}})


def incompatible_settings(old: Mapping, settings: ExperimentSettings, rows: Sequence[Mapping]) -> str:
    """Why a folder whose ``experiment.json`` holds ``old`` settings cannot be resumed with
    ``settings`` (empty string when it can).

    The grid (:data:`GRID_AXES`: kinds, seeds, N) may grow or shrink: every result row names its
    own seed, kind and N. A denoiser kind's settings may change only while that kind has no result
    in ``rows`` (the rows of ``runs.csv`` and ``inputs.csv``), since those rows do not record them.
    """
    new = settings.to_dict()
    differ = [k for k in sorted(set(old) | set(new))
              if k not in GRID_AXES and k not in DENOISER_SETTINGS and old.get(k) != new.get(k)]
    problems = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differ]
    before = _with_denoiser_settings_of(settings, old)
    done = {r.get("kind") for r in rows}
    for kind in DENOISER_KINDS:
        if kind in done and kind in settings.kinds and before.denoiser_overrides(kind) != settings.denoiser_overrides(kind):
            problems.append(f"{kind} denoiser: {before.denoiser_overrides(kind)!r} -> {settings.denoiser_overrides(kind)!r}")
    return ", ".join(problems)


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp.npy")
    try:
        np.save(tmp, array)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


RUN_FIELDS = ["setting", "protocol", "seed", "kind", "n_patches", "dice", "surface_dice", "background_dice",
              "train_seconds", "predict_seconds",
              "test_membrane_fraction", "predicted_membrane_fraction"]
INPUT_FIELDS = ["setting", "seed", "kind", "psnr", "ssim", "sigma", "prepare_seconds"]
BLOCK_FIELDS = ["setting", "protocol", "seed", "kind", "n_patches", "block", "dice"]


def _parse(key: str, value: str):
    if key in ("seed", "n_patches"):
        return int(value)
    if key in ("kind", "protocol", "setting", "block") or value == "":
        return value
    try:
        return float(value)
    except ValueError:
        return value


def _read_csv(path: Path) -> list[dict]:
    """Rows of a CSV this module wrote, with numbers as numbers."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = [{k: _parse(k, v) for k, v in row.items()} for row in csv.DictReader(f)]
    for row in rows:  # rows written before the raw-trained protocol existed
        if "n_patches" in row and not row.get("protocol"):
            row["protocol"] = "denoised"
    return rows


def _write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    _atomic_write_text(path, buf.getvalue())


# ----------------------------------------------------------------------------- the experiment


def _simulate(settings: ExperimentSettings, seed: int):
    from cet_monai.data import simulate_tomogram

    opts = settings.simulation().simulate_kwargs(settings.shape, settings.voxel_size)
    opts["mode"] = settings.simulation_mode
    train_seeds, test_seed = settings.simulation_seeds(seed)
    train = [simulate_tomogram(**opts, seed=s) for s in train_seeds]
    test = simulate_tomogram(**opts, seed=test_seed)
    return train, test


def _prepared(out: Path, seed: int, kind: str, index: str, prepare: Callable, sim) -> tuple[np.ndarray, dict, float]:
    """A prepared volume, cached under ``out/cache`` (denoising is the expensive part)."""
    path = out / "cache" / f"seed{seed}" / f"{kind}_{index}.npy"
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        return np.load(path), meta.get("info", {}), float(meta.get("seconds", 0.0))
    t0 = time.perf_counter()
    vol = prepare(sim)
    seconds = time.perf_counter() - t0
    info = dict(getattr(prepare, "info", {}) or {})
    _atomic_save_npy(path, np.asarray(vol, dtype=np.float32))
    _atomic_write_text(meta_path, json.dumps({"info": info, "seconds": seconds}))
    return vol, info, seconds


def run_experiment(settings: ExperimentSettings | str = "reduced", out: str | os.PathLike = "segmentation_effect",
                   device=None, overwrite: bool = False, keep_cache: bool = True, log: Callable[[str], None] | None = None,
                   threads: int | None = None) -> dict:
    """Run (or resume) the experiment; write ``runs.csv``, ``inputs.csv``, ``summary.csv``,
    ``summary.md``, ``dice_vs_patches.png`` and ``experiment.json`` into ``out``.

    Args:
        settings: an :class:`ExperimentSettings` or the name of one of :data:`SIZES`.
        out: output folder. If it holds a run with other settings, it is refused unless
            ``overwrite`` (which discards the old results).
        device: torch device for the segmentation networks (default: CUDA when available).
        keep_cache: keep the prepared volumes (``out/cache``) after the run.
        log: progress messages go here (default: the module logger).
        threads: ``torch.set_num_threads`` for the run (restored afterwards). On a CPU shared with
            other jobs, 1 thread is several times faster than 2 (no OpenMP oversubscription).

    Returns:
        ``{"settings", "runs", "inputs", "summary", "tables" (Markdown), "unavailable",
        "verdict", "seconds", "paths"}``.
    """
    if threads is not None:
        previous = torch.get_num_threads()
        torch.set_num_threads(int(threads))
        try:
            return run_experiment(settings, out, device, overwrite, keep_cache, log, None)
        finally:
            torch.set_num_threads(previous)
    if isinstance(settings, str):
        if settings not in SIZES:
            raise CetMonaiError(f"unknown experiment size {settings!r}; choose one of {sorted(SIZES)}")
        settings = SIZES[settings]
    say = log or logger.info
    out = Path(out)
    t_start = time.perf_counter()
    config_path = out / "experiment.json"
    runs_path, inputs_path, blocks_path = out / "runs.csv", out / "inputs.csv", out / "blocks.csv"
    stored = settings
    if config_path.exists():
        old = json.loads(config_path.read_text()).get("settings") or {}
        problem = incompatible_settings(old, settings, _read_csv(runs_path) + _read_csv(inputs_path))
        if problem:
            if not overwrite:
                raise CetMonaiError(f"{out}: holds an experiment with other settings ({problem}); choose another "
                                    "--out or pass overwrite=True to discard it")
            for path in (runs_path, inputs_path, blocks_path):
                if path.exists():
                    path.unlink()
            import shutil

            shutil.rmtree(out / "cache", ignore_errors=True)
        else:  # the same experiment with a grown grid: remember the union
            stored = settings.with_overrides(**{k: _union(old.get(k, ()), getattr(settings, k)) for k in GRID_AXES})
            before = _with_denoiser_settings_of(settings, old)
            stored = stored.with_overrides(denoise_overrides=_per_kind_overrides(
                {k: (settings if k in settings.kinds else before) for k in DENOISER_KINDS}))
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(config_path, json.dumps({"settings": stored.to_dict(), "status": "running"}, indent=2) + "\n")

    runs = _read_csv(runs_path)
    inputs = _read_csv(inputs_path)
    blocks = _read_csv(blocks_path)
    done = {(int(r["seed"]), r["protocol"], r["kind"], int(r["n_patches"])) for r in runs}
    done_inputs = {(int(r["seed"]), r["kind"]) for r in inputs}
    spec = settings.model_spec()
    unavailable: dict[str, str] = {}
    failed: dict[str, str] = {}
    p = settings.patch_size
    for seed in settings.seeds:
        kinds, unav = input_kinds(settings, seed)
        unavailable.update(unav)

        def missing(kind):
            return [(pr, n) for n in settings.n_patches for pr in settings.protocols if (seed, pr, kind, n) not in done]

        if all(not missing(k) and (seed, k) in done_inputs for k in kinds if k not in failed):
            continue
        t0 = time.perf_counter()
        train_sims, test_sim = _simulate(settings, seed)
        say(f"seed {seed}: simulated {len(train_sims)} training + 1 test tomograms {settings.shape} "
            f"({settings.setting}) in {time.perf_counter() - t0:.1f} s")
        corners = choose_patches([s.labels for s in train_sims], max(settings.n_patches), p,
                                 settings.patch_stride, settings.min_membrane_fraction, seed=seed)
        label_patches = cut_patches_multi([s.labels for s in train_sims], corners, p)
        raw_nets: dict[int, tuple[torch.nn.Module, float]] = {}

        def train_net(image_patches, n):
            t1 = time.perf_counter()
            net = train_on_patches(image_patches[:n], label_patches[:n], spec, settings.iterations,
                                   settings.batch_size, settings.learning_rate, settings.weight_decay,
                                   seed=1000 * seed + n, device=device)
            return net, time.perf_counter() - t1

        def raw_net(n):
            """The network trained on the first n raw patches (kept for the raw-trained protocol)."""
            if n in raw_nets:
                return raw_nets[n]
            path = out / "cache" / f"seed{seed}" / f"net_raw_N{n}.pt"
            if path.exists():
                net = spec.build()
                net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
                raw_nets[n] = (net.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval(), math.nan)
            else:
                from .inputs import PrepareRaw

                vols = [_prepared(out, seed, "raw", f"train{i}", PrepareRaw(), s)[0] for i, s in enumerate(train_sims)]
                norm = [TomogramNormalizer(*spec.percentiles).fit_transform(v).astype(np.float32) for v in vols]
                raw_nets[n] = train_net(cut_patches_multi(norm, corners, p), n)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
                torch.save(raw_nets[n][0].state_dict(), tmp)
                os.replace(tmp, path)
            return raw_nets[n]

        for kind, prepare in kinds.items():
            todo = missing(kind)
            if kind in failed or ((seed, kind) in done_inputs and not todo):
                continue
            try:
                test_vol, info, seconds = _prepared(out, seed, kind, "test", prepare, test_sim)
                train_vols = ([_prepared(out, seed, kind, f"train{i}", prepare, s)[0] for i, s in enumerate(train_sims)]
                              if any(pr == "denoised" for pr, _ in todo) and kind != "raw" else [])
            except Exception as err:  # a denoiser that fails must not take the other kinds down
                failed[kind] = f"{type(err).__name__}: {err}"
                say(f"seed {seed}: input kind {kind} failed ({failed[kind]}); skipping it")
                logger.debug("input kind %s failed", kind, exc_info=True)
                continue
            if (seed, kind) not in done_inputs:
                from cet_monai.metrics import quality

                q = quality(test_vol, test_sim.clean)
                row = {"setting": settings.setting, "seed": seed, "kind": kind, "psnr": q["psnr"], "ssim": q["ssim"],
                       "sigma": info.get("sigma", ""), "prepare_seconds": seconds}
                inputs.append(row)
                done_inputs.add((seed, kind))
                _write_csv(inputs_path, inputs, INPUT_FIELDS)
                say(f"seed {seed}: {kind} test input PSNR {q['psnr']:.2f} dB, SSIM {q['ssim']:.3f}"
                    + (f" (sigma {info['sigma']})" if "sigma" in info else "") + f" ({seconds:.0f} s to prepare)")
            test_norm = TomogramNormalizer(*spec.percentiles).fit_transform(test_vol).astype(np.float32)
            image_patches = None
            raw_probs: dict[int, np.ndarray] = {}
            for protocol, n in todo:
                if protocol == "raw_trained" or kind == "raw":
                    net, train_seconds = raw_net(n)
                else:
                    if image_patches is None:
                        train_norm = [TomogramNormalizer(*spec.percentiles).fit_transform(v).astype(np.float32)
                                      for v in train_vols]
                        image_patches = cut_patches_multi(train_norm, corners, p)
                    net, train_seconds = train_net(image_patches, n)
                if protocol == "raw_trained":
                    train_seconds = 0.0  # the raw network's training is counted in the raw row
                t2 = time.perf_counter()
                if kind == "raw" and n in raw_probs:  # both protocols: the same network on the same input
                    prob = raw_probs[n]
                else:
                    prob = predict_probability(test_norm, net, roi_size=spec.patch_size, overlap=settings.overlap,
                                               sw_batch_size=4)
                    if kind == "raw":
                        raw_probs[n] = prob
                predict_seconds = time.perf_counter() - t2
                pred = (prob > 0.5).astype(np.uint8)
                scores = segmentation_scores(pred, test_sim.labels, settings.surface_tolerance, spec.ignore_index)
                key = {"setting": settings.setting, "protocol": protocol, "seed": seed, "kind": kind, "n_patches": n}
                row = {**key, **scores,
                       "background_dice": dice_score(np.zeros_like(pred), test_sim.labels, spec.ignore_index),
                       "train_seconds": train_seconds, "predict_seconds": predict_seconds,
                       "test_membrane_fraction": float((test_sim.labels == 1).mean()),
                       "predicted_membrane_fraction": float(pred.mean())}
                blocks += [{**key, "block": "-".join(map(str, c)), "dice": d}
                           for c, d in block_dice(pred, test_sim.labels, settings.test_block, spec.ignore_index)]
                runs.append(row)
                done.add((seed, protocol, kind, n))
                _write_csv(blocks_path, blocks, BLOCK_FIELDS)
                _write_csv(runs_path, runs, RUN_FIELDS)
                say(f"seed {seed}: {protocol:11s} {kind:13s} N={n:3d}  Dice {scores['dice']:.3f}  surface Dice "
                    f"{scores['surface_dice']:.3f}  ({train_seconds:.0f} s training, {predict_seconds:.0f} s predicting)")
                if seed == settings.seeds[0] and n == max(settings.n_patches) and protocol == settings.protocols[0]:
                    _save_example(out / f"example_seed{seed}_{kind}.png", test_vol, prob, test_sim.labels,
                                  settings.voxel_size, f"{KIND_LABELS[kind]}, N={n}, seed {seed}: Dice {scores['dice']:.3f}")
    seconds = time.perf_counter() - t_start
    report = _report(out, stored, runs, inputs, {**unavailable, **failed}, {
        "status": "finished", "unavailable": unavailable, "failed": failed, "seconds_this_session": seconds,
        "torch_threads": torch.get_num_threads(),
        "device": str(device or ("cuda" if torch.cuda.is_available() else "cpu"))})
    if not keep_cache:
        import shutil

        shutil.rmtree(out / "cache", ignore_errors=True)
    return {**report, "seconds": seconds}


def _report(out: Path, settings: ExperimentSettings, runs: list[dict], inputs: list[dict], unavailable: Mapping,
            record: Mapping) -> dict:
    """Write the summary files of the rows in ``out`` and ``experiment.json`` (``settings`` + ``record``)."""
    summary = summarize(runs, inputs, _read_csv(out / "blocks.csv"))
    verdict = conclusiveness(summary, settings)
    tables = format_tables(summary, settings, unavailable=unavailable, verdict=verdict)
    _write_csv(out / "summary.csv", summary["rows"], SUMMARY_FIELDS)
    _write_csv(out / "paired.csv", summary["paired"], PAIRED_FIELDS)
    _atomic_write_text(out / "summary.md", tables)
    paths = {"runs": out / "runs.csv", "inputs": out / "inputs.csv", "summary_csv": out / "summary.csv",
             "summary_md": out / "summary.md", "config": out / "experiment.json"}
    if summary["rows"]:
        paths["plot"] = plot_dice(summary, out / "dice_vs_patches.png", settings)
    _atomic_write_text(paths["config"], json.dumps({"settings": settings.to_dict(), **record, "verdict": verdict},
                                                   indent=2, default=str) + "\n")
    return {"settings": settings, "runs": runs, "inputs": inputs, "summary": summary, "tables": tables,
            "unavailable": dict(unavailable), "verdict": verdict, "paths": paths}


def merge_experiments(sources: Sequence[str | os.PathLike], out: str | os.PathLike, overwrite: bool = False) -> dict:
    """Combine the results of experiment folders run in parallel (e.g. one process per input kind)
    into ``out`` and write its summary, as :func:`run_experiment` would.

    The folders must hold the same experiment (:func:`incompatible_settings`: only the grid may
    differ, and the denoiser settings only where a folder has no denoised results). A result
    (seed, kind, N) found in several folders must agree; the grid of ``out`` is their union.
    Example pictures are copied. ``out`` must be new or empty unless ``overwrite``.
    """
    import shutil

    out = Path(out)
    sources = [Path(s) for s in sources]
    if not sources:
        raise CetMonaiError("merge needs at least one experiment folder")
    configs = []
    for src in sources:
        path = src / "experiment.json"
        if not path.is_file():
            raise CetMonaiError(f"{src}: not an experiment folder (no experiment.json)")
        configs.append(json.loads(path.read_text())["settings"])
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise CetMonaiError(f"{out}: exists and is not empty; choose another folder or pass overwrite")
    rows = [(_read_csv(src / "runs.csv"), _read_csv(src / "inputs.csv")) for src in sources]
    settings = [ExperimentSettings(**c) for c in configs]
    owner = {}  # denoiser kind -> the settings of the (first) folder with its results
    for st, (r, i) in zip(settings, rows):
        for kind in {x["kind"] for x in r + i} & set(DENOISER_KINDS):
            owner.setdefault(kind, st)
    merged = settings[0].with_overrides(denoise_overrides=_per_kind_overrides(
        {k: owner.get(k, settings[0]) for k in DENOISER_KINDS}))
    merged = merged.with_overrides(**{k: _union(*(getattr(st, k) for st in settings)) for k in GRID_AXES})
    for src, config, (r, i) in zip(sources, configs, rows):
        problem = incompatible_settings(config, merged, r + i)
        if problem:
            raise CetMonaiError(f"{src}: another experiment than {sources[0]} ({problem})")
    runs: dict[tuple, dict] = {}
    inputs: dict[tuple, dict] = {}
    blocks: dict[tuple, dict] = {}
    for src, (r, i) in zip(sources, rows):
        b = _read_csv(src / "blocks.csv")
        for table, items, key in ((runs, r, ("seed", "protocol", "kind", "n_patches")), (inputs, i, ("seed", "kind")),
                                  (blocks, b, ("seed", "protocol", "kind", "n_patches", "block"))):
            for row in items:
                k = tuple(row[f] for f in key)
                if k in table and any(table[k].get(f) != row.get(f) for f in ("dice", "psnr") if f in row):
                    raise CetMonaiError(f"{src}: result {dict(zip(key, k))} differs from the same result in another folder")
                table.setdefault(k, row)
    out.mkdir(parents=True, exist_ok=True)
    def order(r):
        return int(r["seed"]), _protocol_order(r["protocol"]), _kind_order(r["kind"]), int(r["n_patches"])

    runs_list = sorted(runs.values(), key=order)
    inputs_list = sorted(inputs.values(), key=lambda r: (int(r["seed"]), _kind_order(r["kind"])))
    _write_csv(out / "blocks.csv", sorted(blocks.values(), key=order), BLOCK_FIELDS)
    _write_csv(out / "runs.csv", runs_list, RUN_FIELDS)
    _write_csv(out / "inputs.csv", inputs_list, INPUT_FIELDS)
    for src in sources:
        for png in src.glob("example_*.png"):
            shutil.copyfile(png, out / png.name)
    return _report(out, merged, runs_list, inputs_list, {}, {"status": "merged", "sources": [str(s) for s in sources]})


def _kind_order(kind: str) -> int:
    return ALL_KINDS.index(kind) if kind in ALL_KINDS else len(ALL_KINDS)


def cut_patches_multi(volumes: Sequence[np.ndarray], corners, patch_size: int) -> list[np.ndarray]:
    """Patches ``(tomogram, z, y, x)`` cut from a list of volumes."""
    p = patch_size
    return [np.ascontiguousarray(np.asarray(volumes[t])[z:z + p, y:y + p, x:x + p]) for (t, z, y, x) in corners]


def _save_example(path: Path, volume, prob, labels, voxel_size, title):
    from cet_monai.visualize import save_orthoslices

    save_orthoslices(path, {"input": volume, "membrane probability": prob,
                            "prediction": (prob > 0.5).astype(np.uint8), "ground truth": np.asarray(labels, np.uint8)},
                     voxel_size=voxel_size, title=title)


# ----------------------------------------------------------------------------- reporting

SUMMARY_FIELDS = ["protocol", "kind", "n_patches", "seeds", "dice_mean", "dice_std", "surface_dice_mean",
                  "surface_dice_std", "background_dice", "all_membrane_dice", "train_seconds_mean", "predict_seconds_mean"]
PAIRED_FIELDS = ["protocol", "kind", "n_patches", "seeds", "dice_minus_raw_mean", "dice_minus_raw_std", "better_than_raw",
                 "blocks", "block_diff_mean", "block_diff_low", "block_diff_high", "blocks_better"]


def _mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray([v for v in values if not (isinstance(v, float) and math.isnan(v))], dtype=np.float64)
    if a.size == 0:
        return math.nan, math.nan
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def _protocol_order(protocol: str) -> int:
    return PROTOCOLS.index(protocol) if protocol in PROTOCOLS else len(PROTOCOLS)


def summarize(runs: list[dict], inputs: list[dict], blocks: Sequence[Mapping] = ()) -> dict:
    """Mean and sample standard deviation over seeds, per (protocol, kind, N) and per kind for the
    inputs; paired differences to the raw input (same protocol, seed and N), and with ``blocks``
    (rows of ``blocks.csv``) their per-block mean with a 95 % bootstrap interval over test blocks x
    seeds (:func:`~cet_monai.segmentation.statistics.paired_bootstrap`)."""
    runs = [dict(r, protocol=r.get("protocol") or "denoised") for r in runs]
    rows = []
    keys = sorted({(r["protocol"], r["kind"], int(r["n_patches"])) for r in runs},
                  key=lambda k: (_protocol_order(k[0]), _kind_order(k[1]), k[2]))
    for protocol, kind, n in keys:
        sel = [r for r in runs if r["protocol"] == protocol and r["kind"] == kind and int(r["n_patches"]) == n]
        dm, ds = _mean_std([float(r["dice"]) for r in sel])
        sm, ss = _mean_std([float(r["surface_dice"]) for r in sel])
        bg, _ = _mean_std([float(r["background_dice"]) for r in sel])
        tm, _ = _mean_std([float(r["train_seconds"]) for r in sel])
        pm, _ = _mean_std([float(r["predict_seconds"]) for r in sel if r.get("predict_seconds") not in (None, "")])
        fg = [2 * p / (1 + p) for p in (float(r["test_membrane_fraction"]) for r in sel)]
        rows.append({"protocol": protocol, "kind": kind, "n_patches": n, "seeds": len(sel), "dice_mean": dm,
                     "dice_std": ds, "surface_dice_mean": sm, "surface_dice_std": ss, "background_dice": bg,
                     "all_membrane_dice": _mean_std(fg)[0], "train_seconds_mean": tm, "predict_seconds_mean": pm})
    block_dice_of: dict[tuple, dict] = {}
    for b in blocks:
        k = (b.get("protocol") or "denoised", b["kind"], int(b["n_patches"]), int(b["seed"]))
        block_dice_of.setdefault(k, {})[b["block"]] = float(b["dice"])
    paired = []  # kind - raw, seed by seed (same patches, initialisation and batches)
    for protocol, kind, n in keys:
        if kind == "raw":
            continue
        # the raw input's row is the same under both protocols (its network is the raw-trained one)
        raw = {int(r["seed"]): float(r["dice"]) for r in runs
               if r["kind"] == "raw" and int(r["n_patches"]) == n and r["protocol"] in ("denoised", protocol)}
        sel = [r for r in runs if r["protocol"] == protocol and r["kind"] == kind and int(r["n_patches"]) == n
               and int(r["seed"]) in raw]
        if not sel:
            continue
        diffs = [float(r["dice"]) - raw[int(r["seed"])] for r in sel]
        m, sd = _mean_std(diffs)
        row = {"protocol": protocol, "kind": kind, "n_patches": n, "seeds": len(diffs), "dice_minus_raw_mean": m,
               "dice_minus_raw_std": sd, "better_than_raw": sum(d > 0 for d in diffs)}
        per_seed = {}
        for r in sel:
            seed = int(r["seed"])
            mine = block_dice_of.get((protocol, kind, n, seed), {})
            base = block_dice_of.get((protocol, "raw", n, seed)) or block_dice_of.get(("denoised", "raw", n, seed), {})
            common = sorted(set(mine) & set(base))
            if common:
                per_seed[seed] = [mine[c] - base[c] for c in common]
        if per_seed:
            boot = paired_bootstrap(per_seed)
            row.update(blocks=boot["blocks"], block_diff_mean=boot["mean"], block_diff_low=boot["low"],
                       block_diff_high=boot["high"], blocks_better=boot["positive"])
        paired.append(row)
    inp = []
    for kind in sorted({r["kind"] for r in inputs}, key=_kind_order):
        sel = [r for r in inputs if r["kind"] == kind]
        pm, ps = _mean_std([float(r["psnr"]) for r in sel])
        qm, qs = _mean_std([float(r["ssim"]) for r in sel])
        tm, _ = _mean_std([float(r["prepare_seconds"]) for r in sel])
        sig = [float(r["sigma"]) for r in sel if str(r.get("sigma", "")) not in ("", "None")]
        inp.append({"kind": kind, "seeds": len(sel), "psnr_mean": pm, "psnr_std": ps, "ssim_mean": qm, "ssim_std": qs,
                    "sigmas": sig, "prepare_seconds_mean": tm})
    return {"rows": rows, "inputs": inp, "paired": paired}


def conclusiveness(summary: dict, settings: ExperimentSettings) -> dict:
    """Per N: is the raw input's mean Dice at least :data:`CONCLUSIVE_MARGIN` above an
    all-background prediction's? ``{"per_n": {N: bool}, "conclusive": any, "text": ...}``."""
    per_n = {}
    for r in summary["rows"]:
        if r["kind"] == "raw":
            per_n[r["n_patches"]] = bool(r["dice_mean"] - r["background_dice"] >= CONCLUSIVE_MARGIN)
    if not per_n:
        text = "inconclusive: no raw-input runs (the raw baseline decides whether the comparison means anything)"
        return {"per_n": {}, "conclusive": False, "text": text}
    bad = [n for n, ok in per_n.items() if not ok]
    if len(bad) == len(per_n):
        text = (f"inconclusive: the raw-input Dice never beats an all-background prediction by {CONCLUSIVE_MARGIN} "
                "(the segmentation network learned too little to compare inputs)")
    elif bad:
        text = f"inconclusive for N = {', '.join(map(str, bad))} (raw-input Dice within {CONCLUSIVE_MARGIN} of all-background); conclusive for the others"
    else:
        text = f"conclusive: the raw-input Dice beats an all-background prediction by more than {CONCLUSIVE_MARGIN} at every N"
    return {"per_n": per_n, "conclusive": not bad, "text": text}


def _mean_cell(mean: float, std: float, seeds: int, planned: int) -> str:
    """``mean +- std``, with the number of seeds when it is not the planned number."""
    if seeds == 1:
        return f"{mean:.3f} (1 seed)"
    return f"{mean:.3f} +- {std:.3f}" + ("" if seeds == planned else f" ({seeds} seeds)")


def _settings_line(settings: ExperimentSettings, summary: dict) -> str:
    sim = settings.simulation()
    used = {r["kind"] for r in summary["rows"] + summary["inputs"]}
    return (f"Settings: size `{settings.size}`, setting `{settings.setting}` ({sim.description}; SNR {sim.snr:g}), "
            f"tomograms {'x'.join(map(str, settings.shape))} voxels of {settings.voxel_size:g} A "
            f"({settings.simulation_mode}), {settings.n_train_tomograms} training tomogram(s) + 1 test tomogram per "
            f"seed, patches {settings.patch_size}^3, {settings.iterations} iterations x batch {settings.batch_size}, "
            f"DynUNet {list(settings.features)}, seeds {list(settings.seeds)}"
            + "".join(f"; {KIND_LABELS[k]}: {settings.denoiser_overrides(k)}"
                      for k in settings.kinds if k in DENOISER_KINDS and settings.denoiser_overrides(k) and k in used)
            + "; mean +- std over seeds.")


def format_tables(summary: dict, settings: ExperimentSettings, unavailable: Mapping | None = None,
                  verdict: dict | None = None) -> str:
    """Markdown: per protocol, Dice and surface Dice (mean +- std over seeds) per input kind and
    N, the paired differences to raw with their bootstrap intervals; the prepared inputs'
    PSNR/SSIM and preparation time, the verdict and what was not run."""
    verdict = verdict or conclusiveness(summary, settings)
    ns = sorted({r["n_patches"] for r in summary["rows"]})
    cell = {(r["protocol"], r["kind"], r["n_patches"]): r for r in summary["rows"]}
    lines = [_settings_line(settings, summary), "", f"**Verdict:** {verdict['text']}.", ""]
    protocols = [pr for pr in PROTOCOLS if any(r["protocol"] == pr for r in summary["rows"])]
    for protocol in protocols:
        kinds = [k for k in ALL_KINDS if (protocol, k) in {(r["protocol"], r["kind"]) for r in summary["rows"]}]
        for metric, title in (("dice", "Test Dice"),
                              ("surface_dice", f"Test surface Dice (tolerance {settings.surface_tolerance:g} voxels)")):
            head = ["input"] + [f"N={n}" + ("" if verdict["per_n"].get(n, True) else " (inconclusive)") for n in ns]
            lines += [f"### {title}, {PROTOCOL_LABELS[protocol]}", "", "| " + " | ".join(head) + " |",
                      "|" + "---|" * len(head)]
            for k in kinds:
                vals = []
                for n in ns:
                    r = cell.get((protocol, k, n))
                    vals.append("" if r is None else _mean_cell(r[metric + "_mean"], r[metric + "_std"], r["seeds"],
                                                                 len(settings.seeds)))
                lines.append(f"| {KIND_LABELS[k]} | " + " | ".join(vals) + " |")
            if metric == "dice" and summary["rows"]:
                bg = summary["rows"][0]["background_dice"]
                fg = summary["rows"][0]["all_membrane_dice"]
                lines.append("| all background | " + " | ".join(f"{bg:.3f}" for _ in ns) + " |")
                lines.append("| all membrane (for scale) | " + " | ".join(f"{fg:.3f}" for _ in ns) + " |")
            lines.append("")
        paired = [r for r in summary.get("paired", []) if r["protocol"] == protocol]
        if paired:
            pn = sorted({r["n_patches"] for r in paired})
            pk = [k for k in ALL_KINDS if any(r["kind"] == k for r in paired)]
            pc = {(r["kind"], r["n_patches"]): r for r in paired}
            lines += [f"### Dice minus raw, {PROTOCOL_LABELS[protocol]}: per test block, mean [95 % bootstrap "
                      "interval over blocks x seeds] (seeds whose whole-tomogram Dice beat raw)", "",
                      "| input | " + " | ".join(f"N={n}" for n in pn) + " |", "|" + "---|" * (len(pn) + 1)]
            for k in pk:
                vals = []
                for n in pn:
                    r = pc.get((k, n))
                    if r is None:
                        vals.append("")
                    elif "block_diff_mean" in r:
                        vals.append(f"{r['block_diff_mean']:+.3f} [{r['block_diff_low']:+.3f}, {r['block_diff_high']:+.3f}]"
                                    f" ({r['better_than_raw']}/{r['seeds']})")
                    else:
                        spread = f" +- {r['dice_minus_raw_std']:.3f}" if r["seeds"] > 1 else ""
                        vals.append(f"{r['dice_minus_raw_mean']:+.3f}{spread} ({r['better_than_raw']}/{r['seeds']})")
                lines.append(f"| {KIND_LABELS[k]} | " + " | ".join(vals) + " |")
            lines.append("")
    if summary["inputs"]:
        lines += ["### Prepared test inputs against the clean reconstruction", "",
                  "| input | PSNR (dB) | SSIM | seconds per tomogram | note |", "|---|---|---|---|---|"]
        for r in summary["inputs"]:
            notes = [f"sigma {', '.join(f'{s:g}' for s in r['sigmas'])} voxels"] if r["sigmas"] else []
            if r["seeds"] != len(settings.seeds):
                notes.append(f"{r['seeds']} seed{'s' if r['seeds'] != 1 else ''}")
            spread = r["seeds"] > 1
            lines.append(f"| {KIND_LABELS.get(r['kind'], r['kind'])} | {r['psnr_mean']:.2f}"
                         + (f" +- {r['psnr_std']:.2f}" if spread else "") + f" | {r['ssim_mean']:.3f}"
                         + (f" +- {r['ssim_std']:.3f}" if spread else "")
                         + f" | {r['prepare_seconds_mean']:.0f} | {'; '.join(notes)} |")
        lines.append("")
    if unavailable:
        lines += ["Not run:", ""] + [f"* {KIND_LABELS.get(k, k)}: {v}" for k, v in unavailable.items()] + [""]
    return "\n".join(lines)


def plot_dice(summary: dict, path, settings: ExperimentSettings | None = None) -> Path:
    """PNG: test Dice against N (log2 axis), one panel per protocol, one line per input kind,
    error bars = std over seeds."""
    from matplotlib.figure import Figure

    path = Path(path)
    protocols = [pr for pr in PROTOCOLS if any(r["protocol"] == pr for r in summary["rows"])]
    fig = Figure(figsize=(5.5 * len(protocols), 4.2), dpi=110)
    axes = np.atleast_1d(fig.subplots(1, len(protocols)))
    ns = sorted({r["n_patches"] for r in summary["rows"]})
    for ax, protocol in zip(axes, protocols):
        for kind in ALL_KINDS:
            rows = sorted((r for r in summary["rows"] if r["kind"] == kind and r["protocol"] == protocol),
                          key=lambda r: r["n_patches"])
            if not rows:
                continue
            ax.errorbar([r["n_patches"] for r in rows], [r["dice_mean"] for r in rows],
                        yerr=[r["dice_std"] for r in rows], marker="o", capsize=3, label=KIND_LABELS[kind])
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns)
        ax.set_xticklabels([str(n) for n in ns])
        ax.set_xlabel("training patches N")
        ax.set_ylabel("test Dice")
        ax.set_title(PROTOCOL_LABELS[protocol], fontsize=10)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    if settings is not None:
        fig.suptitle(f"membrane segmentation, setting {settings.setting} ({settings.size}: {settings.patch_size}^3 "
                     f"patches, {settings.iterations} iterations, {len(settings.seeds)} seed(s))", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


EXPORT_FIELDS = ["setting", "protocol", "kind", "sigma", "seed", "n_patches", "dice", "surface_dice", "input_psnr",
                 "input_ssim", "prepare_seconds", "train_seconds", "predict_seconds"]


def export_results(folders: Sequence[str | os.PathLike], path: str | os.PathLike,
                   blocks_path: str | os.PathLike | None = None) -> dict:
    """One machine-readable table of several experiment folders (e.g. one per simulation setting):
    a row per (setting, protocol, kind, seed, N) with its Dice, surface Dice and the prepared test
    input's PSNR/SSIM and sigma (:data:`EXPORT_FIELDS`); ``blocks_path`` also gets the per-block
    Dice of all folders. Returns ``{"rows": n, "blocks": m}``.
    """
    rows, block_rows = [], []
    for folder in map(Path, folders):
        config = folder / "experiment.json"
        if not config.is_file():
            raise CetMonaiError(f"{folder}: not an experiment folder (no experiment.json)")
        setting = json.loads(config.read_text())["settings"].get("setting", "standard")
        inputs = {(int(r["seed"]), r["kind"]): r for r in _read_csv(folder / "inputs.csv")}
        for r in _read_csv(folder / "runs.csv"):
            i = inputs.get((int(r["seed"]), r["kind"]), {})
            rows.append({**r, "setting": r.get("setting") or setting, "sigma": i.get("sigma", ""),
                         "input_psnr": i.get("psnr", ""), "input_ssim": i.get("ssim", ""),
                         "prepare_seconds": i.get("prepare_seconds", "")})
        block_rows += [{**b, "setting": b.get("setting") or setting} for b in _read_csv(folder / "blocks.csv")]
    _write_csv(Path(path), rows, EXPORT_FIELDS)
    if blocks_path is not None:
        _write_csv(Path(blocks_path), block_rows, BLOCK_FIELDS)
    return {"rows": len(rows), "blocks": len(block_rows)}
