"""Ignite handlers the training bundles add to MONAI's own (StatsHandler, CheckpointSaver, ...).

Each has one job and attaches like a MONAI handler (``handler.attach(engine)``), so the bundles
list them in ``train#handlers`` beside MONAI's.
"""

from __future__ import annotations

import glob
import logging
import os
import random
import re
from collections.abc import Iterable

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents
from monai.handlers import CheckpointLoader, CheckpointSaver
from monai.transforms import Compose, Randomizable

__all__ = [
    "GradientClipping",
    "WeightAveraging",
    "RandomStates",
    "latest_checkpoint",
    "ResumeFromCheckpoint",
    "TrainingCheckpointSaver",
    "TrainingProgressBar",
    "PreviewWriter",
    "EarlyStopOnValidation",
]

logger = logging.getLogger(__name__)


class GradientClipping:
    """Clip the gradient norm after every backward pass (before the optimiser step).

    Attaches to MONAI's ``IterationEvents.BACKWARD_COMPLETED``; with a GradScaler (fp16 AMP)
    the gradients are unscaled first so ``max_norm`` is in true gradient units.
    """

    def __init__(self, max_norm: float = 1.0, norm_type: float = 2.0) -> None:
        self.max_norm = float(max_norm)
        self.norm_type = float(norm_type)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        scaler = getattr(engine, "scaler", None)
        if scaler is not None and getattr(engine, "amp", False) and scaler.is_enabled():
            scaler.unscale_(engine.optimizer)
        torch.nn.utils.clip_grad_norm_(engine.network.parameters(), self.max_norm, self.norm_type)


class WeightAveraging:
    """Average the network's weights over the last part of training, then use the average.

    With noisy targets (Noise2Noise, recorrupted pairs) every step's gradient is dominated by the
    target's noise; averaging the weights of the last steps (Polyak / stochastic weight
    averaging) cancels part of it at no extra training cost. Uses PyTorch's own
    :class:`torch.optim.swa_utils.AveragedModel` (equal weights, or an exponential moving average
    with ``decay``). After the last iteration of the budget the average is copied into
    ``network`` (before the epoch's and the final checkpoint and validation, whatever the
    handler order), so the final checkpoint and the inference use it.

    Args:
        network: the trained module.
        start_iteration: iterations after which every step is averaged in; at or beyond the
            budget, nothing is averaged (off).
        decay: ``None`` for the plain mean of the averaged steps, else the EMA decay in (0, 1).

    ``state_dict`` / ``load_state_dict`` hold the running average, so a resumed run goes on with it
    (put the handler in the checkpoint's ``save_dict``).
    """

    def __init__(self, network: torch.nn.Module, start_iteration: int, decay: float | None = None) -> None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        if decay is not None and not 0.0 < float(decay) < 1.0:
            raise ValueError(f"decay must be in (0, 1) or None, got {decay}")
        self.network = network
        self.start_iteration = int(start_iteration)
        self.decay = None if decay is None else float(decay)
        fn = None if self.decay is None else get_ema_multi_avg_fn(self.decay)
        self.average = AveragedModel(network, multi_avg_fn=fn, use_buffers=True)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)

    def update(self, engine: Engine) -> None:
        if engine.state.iteration > self.start_iteration:
            self.average.update_parameters(self.network)
        if engine.state.iteration == engine.state.epoch_length * engine.state.max_epochs:
            self.apply()

    @property
    def count(self) -> int:
        """Steps averaged so far."""
        return int(self.average.n_averaged)

    def apply(self, engine: Engine | None = None) -> None:
        """Copy the average into the network (nothing when no step was averaged)."""
        if self.count == 0:
            return
        self.network.load_state_dict(self.average.module.state_dict())
        logger.info("network weights: the average of the last %d steps", self.count)

    def state_dict(self) -> dict:
        return self.average.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.average.load_state_dict(state)


def _randomizables(transform) -> list[Randomizable]:
    """Every ``Randomizable`` inside ``transform``, in a fixed order: Compose nesting followed, and
    the transforms a transform holds as attributes or in list/tuple attributes (e.g. the per-axis
    ``RandFlipd`` of :class:`~cet_monai.transforms.RandWedgeFlipd`)."""

    def held(t) -> list:
        out = []
        for v in vars(t).values():
            items = v if isinstance(v, (list, tuple)) else [v]
            out += [i for i in items if isinstance(i, (Compose, Randomizable)) and i is not t]
        return out

    found: list[Randomizable] = []
    stack = [transform]
    while stack:
        t = stack.pop(0)
        if isinstance(t, Compose):
            stack = list(t.transforms) + stack
        elif isinstance(t, Randomizable):
            found.append(t)
            stack = held(t) + stack
    return found


class RandomStates:
    """Every random state a training run depends on, as one checkpointable object.

    Holds: the random generators of the data transforms (each ``Randomizable``'s ``R``), the
    state some transforms keep between calls (a transform's own ``state_dict``/``load_state_dict``,
    e.g. the pending positions of each :class:`~cet_monai.transforms.RandTomogramPatchd`
    tiling), torch's CPU (and CUDA) generators,
    numpy's and Python's global generators. Put it in the ``save_dict`` of
    :class:`monai.handlers.CheckpointSaver` and the ``load_dict`` of the loader, and a resumed
    run draws exactly the patches, masks and dropout an uninterrupted run would have drawn.
    """

    def __init__(self, transforms: Iterable | Compose | None = None) -> None:
        if transforms is None:
            transforms = []
        if isinstance(transforms, Compose) or not isinstance(transforms, Iterable):
            transforms = [transforms]
        self.transforms = [r for t in transforms for r in _randomizables(t)]

    # numpy states become tensors and plain numbers, so checkpoints load with torch.load(weights_only=True)
    @staticmethod
    def _pack_numpy(state) -> dict:
        name, keys, pos, has_gauss, cached = state
        return {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}

    @staticmethod
    def _unpack_numpy(state: dict) -> tuple:
        return (state["name"], state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"], state["cached"])

    # state a transform keeps between calls, besides its generator (its own state_dict: tensors, for weights_only loading)
    @staticmethod
    def _transform_state(t) -> dict:
        return dict(t.state_dict()) if callable(getattr(t, "state_dict", None)) else {}

    @staticmethod
    def _load_transform_state(t, state: dict) -> None:
        if callable(getattr(t, "load_state_dict", None)):
            t.load_state_dict(state)

    def state_dict(self) -> dict:
        state = {
            "transforms": [self._pack_numpy(t.R.get_state()) for t in self.transforms],
            "transform_states": [self._transform_state(t) for t in self.transforms],
            "torch": torch.get_rng_state(),
            "numpy": self._pack_numpy(np.random.get_state()),
            "python": random.getstate(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        if len(state["transforms"]) != len(self.transforms):
            raise ValueError(
                f"checkpoint holds {len(state['transforms'])} transform random states, the pipeline has "
                f"{len(self.transforms)}: it was saved by a different pipeline"
            )
        for t, s in zip(self.transforms, state["transforms"]):
            t.R.set_state(self._unpack_numpy(s))
        for t, s in zip(self.transforms, state.get("transform_states", [])):  # absent in older checkpoints
            self._load_transform_state(t, s)
        torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8))
        np.random.set_state(self._unpack_numpy(state["numpy"]))
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def latest_checkpoint(directory: str, pattern: str = "checkpoint*.pt") -> str | None:
    """The checkpoint in ``directory`` whose trainer got furthest (``None`` if there is none).

    MONAI's :class:`~monai.handlers.CheckpointSaver` writes ``checkpoint_epoch=N.pt`` during
    training and ``checkpoint_final_iteration=N.pt`` at the end; names count epochs or
    iterations, so the iteration saved inside each file decides (ties: the newer file).
    Unreadable files are skipped.
    """
    best, best_key = None, None
    for path in glob.glob(os.path.join(directory, pattern)):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            iteration = int(state["trainer"]["iteration"])
        except Exception:  # noqa: BLE001 - a torn or foreign file is not a resume point
            continue
        key = (iteration, os.path.getmtime(path))
        if best_key is None or key > best_key:
            best, best_key = path, key
    return best


class ResumeFromCheckpoint:
    """Resume an interrupted run from the latest checkpoint in ``checkpoint_dir``, if there is one.

    A thin wrapper of :class:`monai.handlers.CheckpointLoader` that finds the file itself, so a
    bundle can list it unconditionally: the first run starts fresh, a rerun after a kill
    continues the iteration count, optimiser, scheduler and random states.

    When ``load_dict`` holds a ``"fingerprint"`` (:class:`~cet_monai.engines.RunFingerprint`),
    the checkpoint's stored fingerprint must match the current run's (same tomogram, same
    settings), else :class:`~cet_monai.engines.CheckpointMismatchError` is raised before anything
    is loaded. With ``enabled=False`` (start afresh) earlier checkpoints in the folder are moved
    into a ``superseded_<time>/`` subfolder, never deleted, so they cannot be mistaken for this
    run's.

    The engine it is attached to is added to ``load_dict`` as ``engine_key`` (so a bundle need not
    reference the trainer from the trainer's own handler list, a reference cycle).
    """

    def __init__(
        self,
        checkpoint_dir: str,
        load_dict: dict,
        enabled: bool = True,
        map_location=None,
        engine_key: str = "trainer",
        best_saver=None,
        best_file: str = "model_best.pt",
    ) -> None:
        from .preflight import as_bool

        self.checkpoint_dir = checkpoint_dir
        self.load_dict = load_dict
        self.enabled = as_bool(enabled, "resume")
        self.map_location = map_location
        self.engine_key = engine_key
        self.best_saver = best_saver
        self.best_file = best_file
        self._budget: dict = {}

    def _set_aside(self) -> None:
        import shutil
        import time

        old = sorted(glob.glob(os.path.join(self.checkpoint_dir, "checkpoint*.pt")) + glob.glob(os.path.join(self.checkpoint_dir, "model_best.pt")))
        if not old:
            return
        dest = os.path.join(self.checkpoint_dir, time.strftime("superseded_%Y%m%d-%H%M%S"))
        os.makedirs(dest, exist_ok=True)
        for path in old:
            shutil.move(path, os.path.join(dest, os.path.basename(path)))
        logger.warning("starting afresh: %d earlier checkpoint(s) moved to %s", len(old), dest)

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            self._set_aside()
            return
        path = latest_checkpoint(self.checkpoint_dir)
        if path is None:
            return
        fingerprint = self.load_dict.get("fingerprint")
        if fingerprint is not None:
            stored = torch.load(path, map_location="cpu", weights_only=True).get("fingerprint")
            fingerprint.check(stored, path)
        logger.info("resuming from %s", path)
        load_dict = {**self.load_dict, self.engine_key: engine}
        CheckpointLoader(load_path=path, load_dict=load_dict, map_location=self.map_location).attach(engine)
        # the budget is this run's, not the checkpoint's: a resume with more iterations follows
        # the longer cosine schedule (the loaded scheduler state carries the old T_max)
        scheduler = self.load_dict.get("lr_scheduler")
        if scheduler is not None and hasattr(scheduler, "T_max"):
            self._budget = {"T_max": scheduler.T_max, "eta_min": getattr(scheduler, "eta_min", None)}
            engine.add_event_handler(Events.STARTED, self._keep_budget, scheduler)  # after the loader's
        self._resume_best_score()

    def _keep_budget(self, engine: Engine, scheduler) -> None:
        for name, value in self._budget.items():
            if value is not None:
                setattr(scheduler, name, value)

    def _resume_best_score(self) -> None:
        """Give the validation's best-model saver the score of the ``model_best.pt`` on disk, so a
        resumed run replaces it only with a better model (it restarted from no score at all)."""
        best = os.path.join(self.checkpoint_dir, self.best_file)
        if self.best_saver is None or not os.path.isfile(best):
            return
        state = torch.load(best, map_location="cpu", weights_only=True)
        if "checkpointer" in state:
            self.best_saver.load_state_dict(state["checkpointer"])


class TrainingCheckpointSaver(CheckpointSaver):
    """MONAI's :class:`~monai.handlers.CheckpointSaver` that also saves the engine it is attached to.

    The engine goes into ``save_dict`` as ``engine_key`` at attach time, for the same reason as in
    :class:`ResumeFromCheckpoint`; everything else is MONAI's.
    """

    def __init__(self, *args, engine_key: str = "trainer", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.engine_key = engine_key

    def attach(self, engine: Engine) -> None:
        from cet_monai.faults import FAULT_ENV, fault_point

        self.save_dict[self.engine_key] = engine  # the Checkpoint objects hold this same dict
        super().attach(engine)
        if os.environ.get(FAULT_ENV):
            engine.add_event_handler(Events.ITERATION_COMPLETED, lambda _: fault_point("iteration"))

    def interval_completed(self, engine: Engine) -> None:
        from cet_monai.faults import fault_point

        fault_point("checkpoint")
        super().interval_completed(engine)

    def completed(self, engine: Engine) -> None:
        from cet_monai.faults import fault_point

        fault_point("checkpoint")
        super().completed(engine)


class TrainingProgressBar:
    """A tqdm progress bar over training iterations showing the current loss (ignite's ProgressBar)."""

    def __init__(self, enabled: bool = True) -> None:
        from .preflight import as_bool

        self.enabled = as_bool(enabled, "progress")

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        from ignite.handlers import ProgressBar

        def loss_of(output):
            if isinstance(output, list):
                output = output[0]
            return {"loss": float(output["loss"].detach())}

        ProgressBar(persist=True).attach(engine, output_transform=loss_of)


class PreviewWriter:
    """Every ``interval`` iterations, a PNG of central orthogonal slices: raw input vs current prediction.

    Args:
        output_path: the PNG written (atomically) and overwritten at each update.
        volume: (1, Z, Y, X) normalised tomogram (or a crop of it) to predict.
        inferer: called as ``inferer(volume[None], network)``; e.g. an
            :class:`~cet_monai.inferers.MCDropoutInferer` with few passes.
        interval: iterations between updates; the last iteration always writes one.
        voxel_size: (Z, Y, X) in angstrom, for the slices' aspect ratio.
    """

    def __init__(self, output_path: str, volume, inferer, interval: int = 100, voxel_size=None) -> None:
        self.output_path = output_path
        self.volume = torch.as_tensor(np.asarray(volume, dtype=np.float32))
        self.inferer = inferer
        self.interval = int(interval)
        self.voxel_size = voxel_size

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        from cet_monai.visualize import save_orthoslices

        device = next(engine.network.parameters()).device
        prediction = self.inferer(self.volume[None].to(device), engine.network)
        if isinstance(prediction, dict):
            prediction = prediction["mean"]
        save_orthoslices(
            self.output_path,
            {"raw": self.volume[0].numpy(), f"prediction (iteration {engine.state.iteration})": prediction[0, 0].cpu().numpy()},
            voxel_size=self.voxel_size,
        )


class EarlyStopOnValidation:
    """Stop training when the validation key metric has not improved for ``patience`` validations.

    Listed among the *trainer's* handlers (after the ``ValidationHandler``), so the bundle has
    no trainer <-> evaluator reference cycle; it attaches MONAI's
    :class:`~monai.handlers.EarlyStopHandler` to ``evaluator`` with the trainer set. The metric
    must be "higher is better" (PSNR, or minus a loss). ``patience <= 0`` disables it.
    """

    def __init__(self, evaluator, metric_name: str = "val_quality", patience: int = 5, min_delta: float = 0.0) -> None:
        self.evaluator = evaluator
        self.metric_name = metric_name
        self.patience = int(patience)
        self.min_delta = float(min_delta)

    def attach(self, engine: Engine) -> None:
        if self.patience <= 0 or self.evaluator is None:
            return
        from monai.handlers import EarlyStopHandler, stopping_fn_from_metric

        EarlyStopHandler(
            patience=self.patience,
            score_function=stopping_fn_from_metric(self.metric_name),
            trainer=engine,
            min_delta=self.min_delta,
        ).attach(self.evaluator)
