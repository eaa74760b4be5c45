"""What every denoising method is: one frozen, validated settings class that builds its objects.

A method (e.g. :class:`~cet_monai.methods.RecorruptedPairs`) holds its settings and nothing
else; from them it builds what training and inference need:

* :meth:`DenoisingMethod.fitted_to` - the method with what it learns from the tomogram (or each
  of several tomograms, for one model fitted on all) before training (the noise spectrum of
  recorrupted pairs; most methods: nothing);
* :meth:`~DenoisingMethod.patching` and :meth:`~DenoisingMethod.training_pairing` - the MONAI
  transforms that make training pairs of one tomogram;
* :meth:`~DenoisingMethod.sampler`, :meth:`~DenoisingMethod.inferer` and
  :meth:`~DenoisingMethod.validation_inferer` - sliding-window inference with K input versions x
  T dropout passes per window.

:meth:`~DenoisingMethod.to_dict` / :func:`method_from_dict` is what a checkpoint stores
(:class:`MethodRecord`, with the network's class and arguments), so inference rebuilds the
method exactly as trained without the training config. Bundles only wire: their ``method_def``
entry names the class (``_target_``) and its settings.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from cet_monai.errors import CetMonaiError

__all__ = ["DenoisingMethod", "MethodRecord", "build_inferer", "check_std_predictions", "load_record", "method_from_dict", "register_method", "METHODS"]

#: name -> method class, filled by :func:`register_method`.
METHODS: dict[str, type[DenoisingMethod]] = {}


def register_method(cls):
    """Class decorator: make ``cls`` known to :func:`method_from_dict` under ``cls.name``."""
    METHODS[cls.name] = cls
    return cls


def check_std_predictions(versions: int, passes: int) -> None:
    """A per-voxel standard deviation needs more than one prediction per window (K x T > 1)."""
    if int(versions) * max(int(passes), 1) < 2:
        raise CetMonaiError(
            f"--save-std needs more than one prediction per window, but K x T = {int(versions)} x {int(passes)} here: "
            "raise --versions (K) or --passes (T, with a network trained with dropout)"
        )


def _positive(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < minimum:
        raise CetMonaiError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _probability(name: str, value, low_open: bool = True) -> float:
    value = float(value)
    if not ((0.0 < value) if low_open else (0.0 <= value)) or value > 1.0:
        raise CetMonaiError(f"{name} must be in {'(0' if low_open else '[0'}, 1], got {value!r}")
    return value


@dataclass(frozen=True)
class DenoisingMethod:
    """Settings shared by every method (voxels; K and T at inference).

    Args:
        patch_size: training patch (Z, Y, X) in voxels; also the inference window.
        margin: voxels around each patch (and window) that the pairing sees and then crops away.
        pairs_per_patch: M, training pairs drawn from each patch.
        versions: K, input versions per window at inference.
        passes: T, dropout passes per version at inference (0: dropout off).
        flip_versions: at inference, version ``k`` of each window goes through the network
            flipped along Z, Y and/or X (pattern ``k mod 8``, all flips that keep the missing
            wedge) and is flipped back (:class:`~cet_monai.inferers.MCDropoutInferer`); same cost.
    """

    name: ClassVar[str] = ""
    #: fields learned from the tomogram by :meth:`fitted_to` (stored, but not settings).
    fitted_fields: ClassVar[tuple[str, ...]] = ()
    #: settings added after checkpoints were written, with the value those checkpoints were
    #: trained with (used by :func:`method_from_dict` where a record lacks them).
    absent_in_old_records: ClassVar[dict[str, Any]] = {}

    patch_size: tuple[int, int, int] = (32, 32, 32)
    margin: int = 8
    pairs_per_patch: int = 1
    versions: int = 8
    passes: int = 1
    flip_versions: bool = False

    def __post_init__(self) -> None:
        size = self.patch_size
        size = [size] * 3 if isinstance(size, int) else list(size)
        if len(size) != 3:
            raise CetMonaiError(f"patch_size needs 3 edges (Z, Y, X), got {self.patch_size!r}")
        object.__setattr__(self, "patch_size", tuple(_positive("patch_size", s) for s in size))
        object.__setattr__(self, "margin", _positive("margin", self.margin, 0))
        object.__setattr__(self, "pairs_per_patch", _positive("pairs_per_patch", self.pairs_per_patch))
        object.__setattr__(self, "versions", _positive("versions (K)", self.versions))
        object.__setattr__(self, "passes", _positive("passes (T)", self.passes, 0))
        if not isinstance(self.flip_versions, bool):
            raise CetMonaiError(f"flip_versions must be true or false, got {self.flip_versions!r}")

    # ------------------------------------------------------------------ record
    @classmethod
    def settings(cls) -> list[str]:
        """Names of the settings (``--set`` keys a method accepts)."""
        return [f.name for f in dataclasses.fields(cls) if f.name not in cls.fitted_fields]

    def to_dict(self) -> dict[str, Any]:
        """Plain values and tensors (``torch.load(weights_only=True)`` reads them): ``{"name", settings..., fitted...}``
        (fields declared with ``metadata={"recorded": False}``, which only a live run needs, left out)."""
        out: dict[str, Any] = {"name": self.name}
        for f in dataclasses.fields(self):
            if not f.metadata.get("recorded", True):
                continue
            value = getattr(self, f.name)
            out[f.name] = value.state_dict() if hasattr(value, "state_dict") else (list(value) if isinstance(value, tuple) else value)
        return out

    def state_dict(self) -> dict[str, Any]:
        """:meth:`to_dict`, for fingerprints and checkpoints."""
        return self.to_dict()

    def load_state_dict(self, state: Mapping) -> None:
        """Nothing to restore into a live run: the method is rebuilt from the config."""

    @classmethod
    def _from_fields(cls, values: dict[str, Any]) -> DenoisingMethod:
        return cls(**values)

    # ------------------------------------------------------------------ before training
    def fitted_to(self, source, seed: int = 0) -> DenoisingMethod:
        """The method with what it learns from ``source`` before training: a
        :class:`~cet_monai.engines.TomogramSource`, or a :class:`~cet_monai.engines.TomogramCollection`
        for one model fitted on several tomograms (refused by :meth:`check_several_tomograms`
        where the method cannot do that). Most methods learn nothing."""
        if holds_several_tomograms(source):
            self.check_several_tomograms()
        return self

    def check_several_tomograms(self) -> None:
        """Raise :class:`~cet_monai.errors.CetMonaiError` (one line, naming the way out) when one
        model of this method, with these settings, cannot be fitted on several tomograms (its
        pairing or inference needs one whole tomogram). Nothing by default: patches and windows
        are drawn from whichever tomogram they come from."""

    def write_diagnostics(self, output_dir, source) -> list:
        """Write what the run's folder should show about the fitted method (pictures); returns the
        paths written. Training calls it once, before the first step. Nothing by default."""
        return []

    # ------------------------------------------------------------------ training pairs
    @property
    def patch_margin(self) -> int:
        """Margin cut with each training patch (voxels)."""
        return self.margin

    @property
    def patch_keys(self) -> tuple[str, ...]:
        return ("image",)

    def patching(self, num_samples: int):
        """:class:`~cet_monai.transforms.RandTomogramPatchd` cutting ``num_samples`` patches (plus margin) per item."""
        from cet_monai.transforms import RandTomogramPatchd

        keys = list(self.patch_keys) if len(self.patch_keys) > 1 else self.patch_keys[0]
        return RandTomogramPatchd(keys=keys, patch_size=list(self.patch_size), num_samples=int(num_samples), margin=self.patch_margin)

    def training_pairing(self, source=None, seed: int = 0):
        """The MONAI transform turning a patch into input/target pairs (``image``/``label``)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ inference
    def sampler(self, num_versions: int | None = None):
        """The window sampler making K input versions of each window (``num_versions`` overrides K)."""
        raise NotImplementedError

    def window_inferer(self, *, versions: int | None = None, passes: int | None = None, sw_batch_size: int = 2,
                       overlap: float = 0.5, seed: int = 0, return_std: bool = False, sw_device=None, device=None,
                       progress: bool = False):
        """:class:`~cet_monai.inferers.MCDropoutInferer`: windows x K versions x T passes, Gaussian blending."""
        from cet_monai.inferers import MCDropoutInferer

        return MCDropoutInferer(
            roi_size=list(self.patch_size), sampler=self.sampler(versions), passes=self.passes if passes is None else int(passes),
            sw_batch_size=sw_batch_size, overlap=overlap, mode="gaussian", seed=seed, return_std=return_std,
            sw_device=sw_device, device=device, progress=progress, flip_versions=self.flip_versions,
        )

    def inferer(self, *, versions: int | None = None, passes: int | None = None, overlap: float = 0.5, sw_batch_size: int = 2,
                return_std: bool = False, sw_device=None, device=None, progress: bool = False, seed: int = 0,
                slab_voxels: int | None = None):
        """The whole-tomogram inferer (``versions``/``passes``: K/T overrides).

        ``slab_voxels``: run in Z slabs of at most that many voxels, the result on disk
        (:class:`~cet_monai.inferers.streaming.SlabInferer`); ``None``: the whole tomogram in one call.
        """
        from cet_monai.inferers.streaming import SlabInferer

        window = self.window_inferer(versions=versions, passes=passes, overlap=overlap, sw_batch_size=sw_batch_size, seed=seed,
                                     return_std=return_std, sw_device=sw_device, device=device, progress=progress)
        if return_std:
            check_std_predictions(window.sampler.num_versions, window.passes)
        return window if slab_voxels is None else SlabInferer(window, slab_voxels=int(slab_voxels), progress=progress)

    def validation_versions(self) -> int:
        """K while training validates (with a clean reference)."""
        return self.versions

    def reference_inferer(self):
        """Validation with a clean reference: the estimate of the held-out region (T capped at 2)."""
        return self.window_inferer(versions=self.validation_versions(), passes=min(self.passes, 2), sw_batch_size=4, overlap=0.25)

    def pair_inferer(self):
        """Validation without a reference: the network on held-out pairs, scored by the training loss."""
        from monai.inferers import SlidingWindowInferer

        return SlidingWindowInferer(roi_size=list(self.patch_size), sw_batch_size=4, overlap=0.25, mode="gaussian")


def holds_several_tomograms(source) -> bool:
    """Whether ``source`` holds several tomograms (a :class:`~cet_monai.engines.TomogramCollection`)."""
    from cet_monai.engines.data import TomogramCollection

    return isinstance(source, TomogramCollection)


def method_from_dict(state: Mapping) -> DenoisingMethod:
    """The method that :meth:`DenoisingMethod.to_dict` recorded; unknown names or settings are refused."""
    from cet_monai import methods as _registry  # noqa: F401 - registers every method module

    state = dict(state)
    name = state.pop("name", None)
    if name not in METHODS:
        raise CetMonaiError(f"unknown denoising method {name!r}; known: {', '.join(sorted(METHODS))}")
    cls = METHODS[name]
    # a record written before a setting existed: the value it was trained with, not today's default
    state = {**cls.absent_in_old_records, **state}
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(state) - known)
    if unknown:
        close = {u: difflib.get_close_matches(u, sorted(known), n=1) for u in unknown}
        hint = "; ".join(f"{u}" + (f" (did you mean {c[0]}?)" if c else "") for u, c in close.items())
        raise CetMonaiError(f"method {name}: unknown settings {hint}; its settings are {', '.join(cls.settings())}")
    return cls._from_fields(state)


def _qualname(obj) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


class MethodRecord:
    """What a checkpoint stores besides the weights (``"method"``): the method's :meth:`~DenoisingMethod.to_dict`
    and the network's class and constructor arguments.

    Args:
        method: the trained method (after :meth:`~DenoisingMethod.fitted_to`).
        network: the plain network (not a DDP wrapper); it must expose its constructor
            arguments as ``config`` (as :class:`~cet_monai.networks.DropoutUNet` does).
    """

    def __init__(self, method: DenoisingMethod, network: torch.nn.Module) -> None:
        self.method = method
        self.network = network

    def state_dict(self) -> dict:
        return {
            "method": self.method.to_dict(),
            "network_class": _qualname(self.network),
            "network_args": dict(getattr(self.network, "config", {}) or {}),
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Nothing to restore into a live training: the record is rebuilt from the config."""

    @classmethod
    def from_state_dict(cls, state: Mapping) -> MethodRecord:
        record = cls.__new__(cls)
        record.method = method_from_dict(state["method"])
        record.network = None
        record._state = dict(state)
        return record

    def build_network(self) -> torch.nn.Module:
        """The recorded network class with its saved constructor arguments (weights not loaded)."""
        state = getattr(self, "_state", None) or self.state_dict()
        if not state.get("network_args"):
            raise CetMonaiError(f"the checkpoint does not record the arguments of {state.get('network_class')}; pass --network_def")
        module, _, name = state["network_class"].rpartition(".")
        return getattr(importlib.import_module(module), name)(**state["network_args"])


def build_inferer(record: MethodRecord | DenoisingMethod, **options):
    """``record.method.inferer(**options)``: the whole-tomogram inferer of a recorded (or live) method,
    for bundle configs (``_target_: cet_monai.methods.build_inferer``)."""
    method = record.method if isinstance(record, MethodRecord) else record
    return method.inferer(**options)


def load_record(checkpoint: str | os.PathLike) -> MethodRecord:
    """The :class:`MethodRecord` of a training checkpoint (a clear error for anything else)."""
    if checkpoint in (None, ""):
        raise CetMonaiError("a checkpoint is needed: pass --checkpoint PATH (written by training)")
    if not os.path.isfile(checkpoint):
        raise CetMonaiError(f"{checkpoint}: checkpoint file not found")
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise CetMonaiError(f"{checkpoint}: not a readable checkpoint ({error})") from None
    if isinstance(state, Mapping) and "recipe" in state and "method" not in state:
        raise CetMonaiError(
            f"{checkpoint}: written by an earlier cet-monai (its 'recipe' entry was replaced by 'method', the "
            "method's settings); train again with this version (the same command, with --no-resume)"
        )
    if not isinstance(state, Mapping) or not isinstance(state.get("method"), Mapping) or "network" not in state:
        raise CetMonaiError(
            f"{checkpoint}: holds no method record; use a checkpoint written by a cet-monai training bundle "
            "(checkpoint_final_iteration=N.pt or checkpoint_epoch=N.pt)"
        )
    return MethodRecord.from_state_dict(state["method"])
