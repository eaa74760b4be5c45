"""Tomogram + label-map pairs as segmentation training data.

:class:`SegmentationData` reads one or several ``{image, label}`` pairs (MRC / NIfTI / TIFF through
:func:`cet_monai.io.read_volume`) -- or, with none, simulates them
(:func:`cet_monai.data.simulate_tomogram`, one seed per tomogram) -- normalises each tomogram
with its own whole-tomogram statistics (:class:`~cet_monai.normalize.TomogramNormalizer`; never
per patch) and serves:

* training items: references to the normalised tomograms with their label maps and, for
  :class:`monai.transforms.RandCropByLabelClassesd`, precomputed (and capped) voxel indices of
  the background and membrane classes, so random crops are centred half on membrane, half
  elsewhere, never on an ignored voxel;
* validation items: whole validation tomograms (``validation_pairs`` or simulation seeds), or,
  when there are none, the last ``validation_fraction`` of the Y axis of every training pair.

Labels: 0 background, 1 membrane, ``ignore_index`` (2) unknown. Any other value is refused.

:func:`augmentations` is the random flips / rotations used for training, shared by the bundle
and the experiment. Only transforms that keep the missing wedge along Z are used: flips along
any axis (the wedge is symmetric) and 90-degree rotations about Z (in the Y-X plane: the tilt
axis turns within the specimen plane, the beam direction stays Z). Rotations about X or Y
would tilt the wedge off the Z axis and are not offered.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Compose, RandFlipd, RandRotate90d

from cet_monai.engines.data import is_unset
from cet_monai.errors import TomogramError
from cet_monai.io import VolumeHeader, read_volume
from cet_monai.normalize import TomogramNormalizer

__all__ = ["SegmentationData", "load_pair", "check_labels", "class_indices", "augmentations", "LABELS"]

logger = logging.getLogger(__name__)

#: label values of the maps this package reads and writes
LABELS = {"background": 0, "membrane": 1, "unknown": 2}


def check_labels(labels: np.ndarray, path="<labels>", ignore_index: int | None = 2) -> np.ndarray:
    """``labels`` as uint8 after checking its values are 0, 1 or ``ignore_index`` (else TomogramError)."""
    arr = np.asarray(labels)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or np.any(arr != np.round(arr)):
            raise TomogramError(path, "label map has non-integer values; labels must be 0 (background), "
                                      "1 (membrane)" + (f" or {ignore_index} (unknown)" if ignore_index is not None else ""))
    values = np.unique(arr)
    allowed = {0, 1} | ({int(ignore_index)} if ignore_index is not None else set())
    bad = [v for v in values.tolist() if int(v) not in allowed]
    if bad:
        raise TomogramError(path, f"label map holds values {bad[:10]}; only {sorted(allowed)} are allowed "
                                  "(0 background, 1 membrane" + (f", {ignore_index} unknown" if ignore_index is not None else "") + ")")
    return arr.astype(np.uint8)


def load_pair(image, label, percentiles=(0.5, 99.5), ignore_index: int | None = 2):
    """Read a tomogram and its label map; returns ``(image (1,Z,Y,X) float32 tensor normalised,
    label (1,Z,Y,X) uint8 tensor, header, normalizer)``. Shapes must match."""
    raw, header = read_volume(image, mmap=True, validate=True)
    lab, _ = read_volume(label)
    if tuple(lab.shape) != tuple(raw.shape):
        raise TomogramError(label, f"label map shape {tuple(lab.shape)} differs from the tomogram's {tuple(raw.shape)} ({image})")
    lab = check_labels(lab, label, ignore_index)
    normalizer = TomogramNormalizer(*percentiles).fit(raw)
    img = torch.as_tensor(np.asarray(normalizer.transform(raw), dtype=np.float32))[None]
    return img, torch.as_tensor(lab)[None], header, normalizer


def class_indices(label: torch.Tensor | np.ndarray, max_per_class: int = 2_000_000, seed: int = 0) -> list[np.ndarray]:
    """Flat voxel indices of background (0) and membrane (1) in ``label`` ((1,)Z,Y,X), at most
    ``max_per_class`` each (a seeded random subset beyond that), for ``RandCropByLabelClassesd``'s
    ``indices_key``. Ignored voxels are in neither list, so no crop is centred on one."""
    lab = np.asarray(label.numpy() if isinstance(label, torch.Tensor) else label).reshape(-1)
    rng = np.random.default_rng(seed)
    out = []
    for value in (0, 1):
        idx = np.flatnonzero(lab == value)
        if idx.size > max_per_class:
            idx = np.sort(rng.choice(idx, size=max_per_class, replace=False))
        out.append(idx)
    return out


def augmentations(keys=("image", "label"), patch_size=None, flip_prob: float = 0.5, rotate_prob: float = 0.75) -> Compose:
    """Random flips along Z, Y and X and 90-degree rotations about Z (see the module docstring).

    The rotations are left out when the patch is not square in Y-X (``patch_size`` given and
    ``Y != X``): they would change the patch shape.
    """
    keys = list(keys)
    transforms = [RandFlipd(keys=keys, prob=flip_prob, spatial_axis=axis) for axis in (0, 1, 2)]
    if patch_size is None or int(patch_size[1]) == int(patch_size[2]):
        transforms.append(RandRotate90d(keys=keys, prob=rotate_prob, max_k=3, spatial_axes=(1, 2)))
    elif rotate_prob > 0:
        logger.warning("patch %s is not square in Y-X: no rotations about Z", tuple(patch_size))
    return Compose(transforms)


def _pair_list(pairs) -> list[dict]:
    if is_unset(pairs):
        return []
    if isinstance(pairs, Mapping):
        pairs = [pairs]
    out = []
    for i, p in enumerate(pairs):
        if not isinstance(p, Mapping) or "image" not in p or "label" not in p:
            raise ValueError(f"pair {i} must be a mapping with 'image' and 'label' paths, got {p!r}")
        out.append({"image": str(p["image"]), "label": str(p["label"])})
    return out


class SegmentationData:
    """Training and validation data for membrane segmentation.

    Args:
        pairs: ``[{"image": tomogram path, "label": label map path}, ...]``; ``None`` or empty:
            simulated tomograms, one per entry of ``simulation_seeds``.
        validation_pairs: pairs used only for validation; ``None``: simulated ones from
            ``validation_seeds`` when simulating, else the held-out Y fraction of each pair.
        simulation: keyword arguments of :func:`cet_monai.data.simulate_tomogram` (``seed`` is
            set per tomogram).
        simulation_seeds, validation_seeds: seeds of the simulated training / validation tomograms.
        validation_fraction: held-out part of Y when there are no validation tomograms (0: none).
        patch_size: training patch ``(Z, Y, X)``; every training region must be at least this big.
        percentiles: normalisation clipping percentiles.
        ignore_index: the "unknown" label (``None``: labels are only 0 and 1).
        max_indices_per_class: cap of the stored crop-centre candidates per class and tomogram.
    """

    def __init__(
        self,
        pairs: Sequence[Mapping] | None = None,
        validation_pairs: Sequence[Mapping] | None = None,
        simulation: Mapping | None = None,
        simulation_seeds: Sequence[int] = (1, 2),
        validation_seeds: Sequence[int] = (3,),
        validation_fraction: float = 0.125,
        patch_size: Sequence[int] = (48, 48, 48),
        percentiles: Sequence[float] = (0.5, 99.5),
        ignore_index: int | None = 2,
        max_indices_per_class: int = 2_000_000,
    ) -> None:
        if not 0.0 <= validation_fraction < 0.5:
            raise ValueError(f"validation_fraction must be in [0, 0.5), got {validation_fraction}")
        self.patch_size = tuple(int(p) for p in patch_size)
        self.percentiles = tuple(float(p) for p in percentiles)
        self.ignore_index = ignore_index
        self.pairs = _pair_list(pairs)
        val_pairs = _pair_list(validation_pairs)
        self.simulated = not self.pairs
        self.headers: list[VolumeHeader] = []
        train: list[tuple[torch.Tensor, torch.Tensor]] = []
        val: list[tuple[torch.Tensor, torch.Tensor]] = []
        if self.simulated:
            from cet_monai.data import simulate_tomogram

            options = dict(simulation or {})
            options.pop("seed", None)
            if not simulation_seeds:
                raise ValueError("no training data: give pairs or at least one simulation seed")
            for seed in simulation_seeds:
                train.append(self._simulated(simulate_tomogram, options, int(seed)))
            if not val_pairs:
                for seed in validation_seeds or ():
                    val.append(self._simulated(simulate_tomogram, options, int(seed), header=False))
        else:
            for p in self.pairs:
                img, lab, header, _ = load_pair(p["image"], p["label"], self.percentiles, ignore_index)
                self.headers.append(header)
                train.append((img, lab))
        for p in val_pairs:
            img, lab, _, _ = load_pair(p["image"], p["label"], self.percentiles, ignore_index)
            val.append((img, lab))
        self.hold_out = not val and validation_fraction > 0
        if self.hold_out:
            held = []
            for img, lab in train:
                y0 = img.shape[2] - int(round(img.shape[2] * validation_fraction))
                val.append((img[:, :, y0:], lab[:, :, y0:]))
                held.append((img[:, :, :y0], lab[:, :, :y0]))
            train = held
        for i, (img, _) in enumerate(train):
            if any(n < p for n, p in zip(img.shape[1:], self.patch_size)):
                name = self.pairs[i]["image"] if self.pairs else f"simulated tomogram {i}"
                raise ValueError(f"{name}: training region {tuple(img.shape[1:])} is smaller than the patch {self.patch_size}"
                                 + (" (after holding out the validation fraction of Y)" if self.hold_out else ""))
        self.train = train
        self.validation = val
        self._items = [
            {"image": img, "label": lab, "label_cls_indices": class_indices(lab, max_indices_per_class, seed=i)}
            for i, (img, lab) in enumerate(train)
        ]
        for item, (img, _) in zip(self._items, train):
            if item["label_cls_indices"][1].size == 0:
                logger.warning("a training tomogram %s has no membrane voxels", tuple(img.shape[1:]))

    def _simulated(self, simulate, options, seed, header: bool = True):
        sim = simulate(**{**options, "seed": seed})
        normalizer = TomogramNormalizer(*self.percentiles).fit(sim.noisy)
        img = torch.as_tensor(np.asarray(normalizer.transform(sim.noisy), dtype=np.float32))[None]
        if header:
            self.headers.append(VolumeHeader(voxel_size=sim.voxel_size_zyx))
        return img, torch.as_tensor(sim.labels.astype(np.uint8))[None]

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        return self.headers[0].voxel_size if self.headers else (1.0, 1.0, 1.0)

    @property
    def dataset_dir(self) -> str:
        return str(Path(self.pairs[0]["image"]).parent) if self.pairs else ""

    def training_items(self, count: int) -> list[dict]:
        """``count`` items cycling through the training tomograms (references, nothing copied)."""
        return [self._items[i % len(self._items)] for i in range(int(count))]

    def validation_items(self) -> list[dict]:
        """``[{"image": (1,Z,Y,X), "label": (1,Z,Y,X)}, ...]``: whole validation volumes."""
        return [{"image": img, "label": lab} for img, lab in self.validation]

    def membrane_fraction(self) -> float:
        """Fraction of membrane voxels over the training regions (class balance, for logs)."""
        n = sum(int((lab == 1).sum()) for _, lab in self.train)
        return n / max(1, sum(lab.numel() for _, lab in self.train))

    def __repr__(self) -> str:
        src = f"{len(self.pairs)} pair(s)" if self.pairs else f"{len(self.train)} simulated tomogram(s)"
        return (f"SegmentationData({src}, {len(self.validation)} validation volume(s)"
                f"{' held out in Y' if self.hold_out else ''}, patch {self.patch_size})")

