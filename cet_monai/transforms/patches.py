"""Patch sampling over a whole tomogram that covers it evenly.

Positions come from **randomised tilings**. Per spatial axis of length ``D`` and patch length
``p``, ``n = ceil((D - p) / (p * (1 - min_overlap))) + 1`` patches cover ``[0, D)`` (``n = 1``
when ``D == p``): the first starts at 0, the last at ``D - p``, and the total overlap
``n p - D`` is split at random (Dirichlet(1) weights, rounded) among the ``n - 1`` gaps, each
overlap in ``[0, p - 1]``, so no voxel is ever left out. A tiling is the
Cartesian product of the three axes' positions, filtered by the specimen mask, and shuffled;
calls pop ``num_samples`` positions from it and a new random tiling is drawn when it runs out.
Hence over every completed tiling **each voxel is covered at least once** (with a specimen
mask: each voxel of the patches that pass it). The
expected coverage is not perfectly flat: a voxel within one patch of a border can only be
covered by the first/last patch along that axis, while interior voxels also fall into the
random overlaps. Measured over 400 tilings (``tests/test_patches.py``), per axis, the
least-covered voxel gets 0.69 (D=200, p=96), 0.76 (D=512, p=96) and 0.80 (D=64, p=16) of the
mean coverage; uniform random starts in ``[0, D - p]`` would give the border voxel ``1/p`` of
the interior rate. (Exactly equal coverage needs patches reaching outside the volume; not done,
to keep padded content out of training patches.)
"""

from __future__ import annotations

from copy import deepcopy
from typing import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import BorderPad, InvertibleTransform, MapTransform, Randomizable, SpatialCrop
from monai.transforms.traits import MultiSampleTrait
from monai.utils import TraceKeys, TransformBackends

from cet_monai.io.utils import release_pages

from ._utils import spatial_shape_argument, spatial_tuple, wrap_like

__all__ = ["RandTomogramPatchd", "tiling_positions", "PATCH_START_KEY", "PATCH_MARGIN_KEY", "PATCH_SIZE_KEY", "TOMOGRAM_INDEX_KEY"]

PATCH_START_KEY = "patch_start"
PATCH_MARGIN_KEY = "patch_margin"
PATCH_SIZE_KEY = "patch_size"
#: item key of the tomogram an item comes from, when a data source holds several
#: (:class:`~cet_monai.engines.TomogramCollection`): an int, the tomogram's position in it
TOMOGRAM_INDEX_KEY = "tomogram_index"


def _axis_positions(rng: np.random.RandomState, length: int, patch: int, min_overlap: float) -> np.ndarray:
    if patch > length:
        raise ValueError(f"patch size {patch} exceeds the volume size {length} along an axis.")
    if patch == length:
        return np.zeros(1, dtype=np.int64)
    step = patch * (1.0 - min_overlap)
    n = int(np.ceil((length - patch) / step)) + 1
    slack = n * patch - length  # total overlap to distribute among the n - 1 gaps
    # uniform random split of the slack (Dirichlet(1) weights), each overlap < patch
    w = -np.log(1.0 - rng.random_sample(n - 1))
    overlaps = np.floor(w / w.sum() * slack).astype(np.int64)
    rest = slack - int(overlaps.sum())
    if rest > 0:
        overlaps[rng.choice(n - 1, size=rest, replace=False)] += 1
    cap = patch - 1
    excess = int(np.clip(overlaps - cap, 0, None).sum())
    overlaps = np.minimum(overlaps, cap)
    while excess > 0:
        room = np.flatnonzero(overlaps < cap)
        if room.size == 0:
            break
        overlaps[room[rng.randint(room.size)]] += 1
        excess -= 1
    starts = np.concatenate([[0], np.cumsum(patch - overlaps)])
    return np.clip(starts, 0, length - patch).astype(np.int64)


def tiling_positions(
    rng: np.random.RandomState, shape: Sequence[int], patch_size: Sequence[int], min_overlap: float = 0.25
) -> np.ndarray:
    """One randomised tiling: ``(N, 3)`` patch starts that cover the whole volume (module docstring)."""
    axes = [_axis_positions(rng, int(d), int(p), float(min_overlap)) for d, p in zip(shape, patch_size)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    return grid


class RandTomogramPatchd(Randomizable, MapTransform, InvertibleTransform, MultiSampleTrait):
    """Sample ``num_samples`` patches (with an optional margin) from whole tomograms.

    Args:
        keys: the volumes to crop, all ``(C, Z, Y, X)`` (numpy arrays, numpy memmaps or torch
            tensors / MetaTensors) of the same spatial shape; only the patches are read, the
            volumes are never copied whole.
        patch_size: central patch size in voxels (int or ZYX).
        num_samples: patches per call.
        margin: extra voxels read on every side of the central patch (int or ZYX), e.g. for the
            per-patch Fourier modes, which crop it away after masking. Where the margin leaves
            the volume it is filled by ``pad_mode`` (numpy ``np.pad`` mode, default "reflect"; numpy
            reflects again where the margin is wider than the volume, e.g. a 24-voxel margin on a
            16-voxel axis).
        mask_key: optional key of a specimen mask (``(Z, Y, X)`` or ``(1, Z, Y, X)``, nonzero =
            specimen); only positions whose central patch is at least ``min_mask_fraction``
            specimen are used (if none qualifies, the positions with the largest fraction).
        min_mask_fraction: see ``mask_key``.
        min_overlap: smallest mean overlap between neighbouring patches, as a fraction of the
            patch (sets how many patches per axis a tiling has; more overlap, more positional
            variety).
        tiling_key: item key naming the volume an item comes from (an int, e.g. the tomogram's
            index in a :class:`~cet_monai.engines.TomogramCollection`): each volume keeps its
            own tiling, so items of several tomograms taken in turn still cover each one evenly.
            Items without the key share one tiling.

    Returns a list of ``num_samples`` dicts, copies of the input with each key replaced by its
    patch ``(C, Z+2m, Y+2m, X+2m)`` (a MetaTensor when metadata is tracked, affine moved to the
    patch's first voxel) and, both as dict keys and in each patch's ``meta``:

    * ``"patch_start"``: int64 tensor ``(3,)``, start (ZYX, tomogram voxels) of the central patch,
    * ``"patch_margin"``: int64 tensor ``(3,)``, the margin,
    * ``"patch_size"``: int64 tensor ``(3,)``, the central patch size,

    plus ``meta["patch_index"]`` (position in the returned list). The mask key, if any, is
    dropped from the outputs. The tiling state lives in the transform (each DataLoader worker
    keeps its own; :meth:`state_dict` / :meth:`load_state_dict` hold it for checkpoints); all
    randomness comes from ``self.R``.

    When metadata is tracked each patch records the crop in its ``applied_operations``, so
    ``inverse`` (and MONAI's ``Invertd``) puts a patch back where it came from: a ``(C, Z, Y, X)``
    volume of the original shape, the patch's voxels inside the volume in place (the margin's
    padding outside it dropped), zeros elsewhere, the affine back at the volume's first voxel.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        keys: KeysCollection,
        patch_size: int | Sequence[int],
        num_samples: int = 1,
        margin: int | Sequence[int] = 0,
        mask_key: str | None = None,
        min_mask_fraction: float = 0.5,
        min_overlap: float = 0.25,
        pad_mode: str = "reflect",
        tiling_key: str | None = TOMOGRAM_INDEX_KEY,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.patch_size = spatial_tuple(patch_size, "patch_size")
        self.margin = spatial_tuple(margin, "margin")
        if any(p < 1 for p in self.patch_size) or any(m < 0 for m in self.margin):
            raise ValueError(f"bad patch_size {self.patch_size} or margin {self.margin}.")
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples}.")
        if not 0.0 <= float(min_overlap) < 1.0:
            raise ValueError(f"min_overlap must be in [0, 1), got {min_overlap}.")
        self.num_samples = int(num_samples)
        self.mask_key = mask_key
        self.min_mask_fraction = float(min_mask_fraction)
        self.min_overlap = float(min_overlap)
        self.pad_mode = pad_mode
        self.tiling_key = tiling_key
        #: volume (the item's ``tiling_key`` value; ``None`` without one) -> [spatial shape, positions left in its tiling]
        self._tilings: dict = {}
        self._volume = None  # whose tiling :meth:`randomize` draws from

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self._tilings = {}  # a reseeded sampler starts fresh tilings
        return self

    # ---- checkpoint state (:class:`~cet_monai.engines.RandomStates`)

    @staticmethod
    def _pack(shape, queue) -> dict:
        return {"queue": torch.as_tensor(np.asarray(queue, dtype=np.int64).reshape(-1, 3)),
                "queue_shape": torch.as_tensor(() if shape is None else shape, dtype=torch.int64)}

    @staticmethod
    def _unpack(state) -> list:
        shape = tuple(int(v) for v in state["queue_shape"])
        return [shape or None, [q.numpy().astype(np.int64) for q in state["queue"]]]

    def state_dict(self) -> dict:
        """The positions left in each volume's tiling, as tensors: ``queue`` and ``queue_shape``
        for items without a tiling key (one tomogram), and per keyed volume ``volumes`` (their
        keys), ``volume_queues`` and ``volume_shapes``."""
        state = self._pack(*self._tilings.get(None, (None, [])))
        keyed = sorted(k for k in self._tilings if k is not None)
        if keyed:
            state["volumes"] = torch.as_tensor(keyed, dtype=torch.int64)
            packed = [self._pack(*self._tilings[k]) for k in keyed]
            state["volume_queues"] = [p["queue"] for p in packed]
            state["volume_shapes"] = [p["queue_shape"] for p in packed]
        return state

    def load_state_dict(self, state) -> None:
        self._tilings = {}
        if len(state.get("queue", ())) or len(state.get("queue_shape", ())):
            self._tilings[None] = self._unpack(state)
        for key, queue, shape in zip(state.get("volumes", ()), state.get("volume_queues", ()), state.get("volume_shapes", ())):
            self._tilings[int(key)] = self._unpack({"queue": queue, "queue_shape": shape})

    # ---- positions

    def _mask_fraction(self, mask, start) -> float:
        sl = tuple(slice(int(s), int(s) + p) for s, p in zip(start, self.patch_size))
        sub = mask[(0,) + sl] if mask.ndim == 4 else mask[sl]
        sub = sub.detach().cpu().numpy() if isinstance(sub, torch.Tensor) else np.asarray(sub)
        return float(np.count_nonzero(sub)) / sub.size

    def _new_tiling(self, shape, mask) -> list[np.ndarray]:
        pos = tiling_positions(self.R, shape, self.patch_size, self.min_overlap)
        if mask is not None:
            frac = np.array([self._mask_fraction(mask, p) for p in pos])
            keep = frac >= self.min_mask_fraction
            if not keep.any():
                if frac.max() <= 0:
                    raise ValueError("the specimen mask is empty.")
                keep = frac >= frac.max()
            pos = pos[keep]
        order = self.R.permutation(len(pos))
        return [pos[i] for i in order]

    def randomize(self, data=None) -> None:  # type: ignore[override]
        """Pop ``num_samples`` positions (``data`` = (spatial shape, mask or None)).

        Anything else (MONAI's ``Compose.randomize(data)`` passes the data) is a ``TypeError``,
        which ``Compose`` skips with a warning: the positions are drawn when the transform is called.
        """
        if not (isinstance(data, (tuple, list)) and len(data) == 2):
            raise TypeError(f"{type(self).__name__}.randomize takes (spatial shape, mask or None), got {type(data).__name__}")
        shape, mask = data
        shape = spatial_shape_argument(shape, type(self).__name__)
        tiling = self._tilings.setdefault(self._volume, [None, []])
        if tiling[0] != shape:
            tiling[:] = [shape, []]
        self._positions = []
        for _ in range(self.num_samples):
            if not tiling[1]:
                tiling[1] = self._new_tiling(shape, mask)
            self._positions.append(tiling[1].pop())

    # ---- reading

    def _read(self, vol, start) -> tuple[object, list[int]]:
        """Patch with margin of ``vol`` at central ``start``; reads only the needed block."""
        spatial = vol.shape[1:]
        lo = [int(s) - m for s, m in zip(start, self.margin)]
        hi = [int(s) + p + m for s, p, m in zip(start, self.patch_size, self.margin)]
        clo = [max(v, 0) for v in lo]
        chi = [min(v, d) for v, d in zip(hi, spatial)]
        sl = (slice(None),) + tuple(slice(a, b) for a, b in zip(clo, chi))
        pads = [(a - l, h - b) for l, a, h, b in zip(lo, clo, hi, chi)]
        if isinstance(vol, torch.Tensor):
            block = vol.as_tensor()[sl] if isinstance(vol, MetaTensor) else vol[sl]
            if any(p != (0, 0) for p in pads):
                arr = np.pad(block.detach().cpu().numpy(), [(0, 0)] + pads, mode=self.pad_mode)
                block = torch.from_numpy(arr).to(vol.device)
            else:
                block = block.clone()
        else:
            block = np.array(vol[sl])  # copies only the block (memmaps included)
            if any(p != (0, 0) for p in pads):
                block = np.pad(block, [(0, 0)] + pads, mode=self.pad_mode)
            block = torch.from_numpy(block)
        # a memory-mapped volume (or a tensor viewing a disk-backed map) gives back the pages the
        # read touched, so training on a tomogram larger than RAM keeps a bounded resident set
        release_pages(vol)
        return block, lo

    def __call__(self, data: Mapping[Hashable, object]) -> list[dict]:  # type: ignore[override]
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            raise KeyError(f"none of the keys {self.keys} is in the data.")
        first = d[keys[0]]
        if first.ndim != 4:
            raise ValueError(f"expected (C, Z, Y, X) volumes, got shape {tuple(first.shape)} for {keys[0]!r}.")
        shape = tuple(int(s) for s in first.shape[1:])
        for k in keys[1:]:
            if tuple(d[k].shape[1:]) != shape:
                raise ValueError(f"{k!r} has spatial shape {tuple(d[k].shape[1:])}, {keys[0]!r} has {shape}.")
        mask = d.get(self.mask_key) if self.mask_key is not None else None
        if self.mask_key is not None and mask is None:
            raise KeyError(f"mask key {self.mask_key!r} is not in the data.")
        volume = d.get(self.tiling_key) if self.tiling_key is not None else None
        self._volume = None if volume is None else int(volume)
        self.randomize((shape, mask))
        others = {k: v for k, v in d.items() if k not in keys and k != self.mask_key}
        out = []
        for i, start in enumerate(self._positions):
            info = {
                PATCH_START_KEY: torch.as_tensor(np.asarray(start, dtype=np.int64)),
                PATCH_MARGIN_KEY: torch.as_tensor(self.margin, dtype=torch.int64),
                PATCH_SIZE_KEY: torch.as_tensor(self.patch_size, dtype=torch.int64),
            }
            item = {k: deepcopy(v) for k, v in others.items()}
            for k in keys:
                block, lo = self._read(d[k], start)
                meta = dict(info)
                meta["patch_index"] = i
                if get_track_meta():
                    item[k] = wrap_like(block, d[k], crop_start=lo, extra_meta=meta)
                    self.push_transform(item[k], orig_size=shape, extra_info={"start": lo})
                else:
                    item[k] = block
            item.update({k: v.clone() for k, v in info.items()})
            out.append(item)
        return out

    def inverse(self, data: Mapping[Hashable, object]) -> dict:
        """One patch dict back to the volume's shape (class docstring); other keys pass through."""
        d = dict(data)
        for k in self.key_iterator(d):
            op = self.pop_transform(d[k])
            shape = [int(s) for s in op[TraceKeys.ORIG_SIZE]]
            lo = [int(s) for s in op[TraceKeys.EXTRA_INFO]["start"]]
            size = [int(s) for s in d[k].shape[1:]]
            # the part of the patch inside the volume, then zeros around it: MONAI's crop and
            # pad, so the affine follows as it does for MONAI's own crops (not traced: this
            # undoes a recorded operation rather than adding one)
            inside = [slice(max(-a, 0), n - max(a + n - s, 0)) for a, n, s in zip(lo, size, shape)]
            pad = []
            for a, n, s in zip(lo, size, shape):
                start, stop = max(a, 0), min(a + n, s)
                pad += [start, s - stop]
            cropper, padder = SpatialCrop(roi_slices=inside), BorderPad(spatial_border=pad)
            with cropper.trace_transform(False), padder.trace_transform(False):
                d[k] = padder(cropper(d[k]))
        return d
