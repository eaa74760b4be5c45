"""Spatial augmentation that keeps the missing wedge where it is.

With the tilt axis along Y the missing wedge lies in the kz-kx plane, around kz, the same for
every ky. Flipping any spatial axis maps ``k_i -> -k_i``, which leaves the wedge
(``|kz| > tan(a) |kx|``) unchanged, and so do all compositions of flips (the 180-degree
rotations included). A 90-degree rotation in the Z-X plane would move the wedge to the kx axis,
one in the Y-X or Z-Y plane would tilt it towards ky; they are not used.
"""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence

import numpy as np
from monai.config import KeysCollection
from monai.transforms import InvertibleTransform, MapTransform, RandFlipd, RandomizableTransform
from monai.utils import MAX_SEED

from ._utils import check_prob

__all__ = ["RandWedgeFlipd"]


class RandWedgeFlipd(RandomizableTransform, MapTransform, InvertibleTransform):
    """Independent random flips along each spatial axis, the same for all ``keys``.

    A thin composition of MONAI's :class:`monai.transforms.RandFlipd`, one per axis (reused, not
    reimplemented: metadata, affine updates and inversion are MONAI's), so all 8 flip
    combinations occur, each with probability ``prod(flip_prob or 1 - flip_prob)``.

    Args:
        keys: keys to flip together (e.g. ``["image", "label"]`` AFTER the pairing transform).
        flip_prob: probability of flipping each axis, independently (default 0.5: uniform over
            the 8 combinations).
        spatial_axes: spatial axes that may flip (0 = Z, 1 = Y, 2 = X).
        prob: probability that the transform applies at all (MONAI's meaning).

    Works on ``(C, Z, Y, X)`` numpy arrays or tensors (any device); returns MetaTensors.
    ``inverse`` undoes it. ``set_random_state`` seeds this transform and, from its stream, each
    per-axis flip (as ``monai.transforms.Compose`` does), so the axes flip independently.
    """

    backend = RandFlipd.backend

    def __init__(
        self,
        keys: KeysCollection,
        flip_prob: float = 0.5,
        spatial_axes: Sequence[int] = (0, 1, 2),
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.flip_prob = check_prob("flip_prob", flip_prob)
        axes = tuple(int(a) for a in spatial_axes)
        if any(a not in (0, 1, 2) for a in axes) or len(set(axes)) != len(axes):
            raise ValueError(f"spatial_axes must be distinct values in (0, 1, 2), got {spatial_axes}.")
        self.spatial_axes = axes
        self.flippers = [
            RandFlipd(keys, prob=self.flip_prob, spatial_axis=a, allow_missing_keys=allow_missing_keys) for a in axes
        ]

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        for f in self.flippers:
            f.set_random_state(seed=int(self.R.randint(MAX_SEED, dtype="uint32")))
        return self

    def __call__(self, data: Mapping[Hashable, object]) -> dict:  # type: ignore[override]
        d = dict(data)
        self.randomize(None)
        for f in self.flippers:
            if self._do_transform:
                d = f(d)
            else:  # record a no-op flip so that inverse() stays consistent
                saved, f.prob = f.prob, 0.0
                try:
                    d = f(d)
                finally:
                    f.prob = saved
        return d

    def inverse(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for f in reversed(self.flippers):
            d = f.inverse(d)
        return d
