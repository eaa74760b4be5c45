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
import io
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from cet_monai.errors import CetMonaiError
from cet_monai.normalize import TomogramNormalizer

from .data import augmentations
from .inputs import DENOISER_KINDS, KIND_LABELS, denoiser_status, input_kinds
from .losses import MaskedDiceCELoss
from .metrics import dice_score, segmentation_scores
from .model import ModelSpec
from .predict import predict_probability
from .statistics import block_dice
from .experiment_settings import (  # noqa: F401  (re-exported: the experiment's public names stay here)
    CONCLUSIVE_MARGIN, DENOISER_SETTINGS, GRID_AXES, PROTOCOL_LABELS, PROTOCOLS, SIZES, ExperimentSettings,
    _per_kind_overrides, _union, _with_denoiser_settings_of, experiment_settings, incompatible_settings,
)
from .experiment_report import (  # noqa: F401
    PAIRED_FIELDS, SUMMARY_FIELDS, _kind_order, _protocol_order, conclusiveness, format_tables, plot_dice, summarize,
)

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
    # one engine per training set: its INFO lines would flood the experiment's log. A logger of its
    # own: the class logger Ignite gives every SupervisedTrainer is shared with the bundles' trainers
    trainer.logger = logging.getLogger(f"{__name__}.train_on_patches")
    trainer.logger.setLevel(logging.WARNING)
    trainer.run()
    return network.eval()


# ----------------------------------------------------------------------------- files












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
