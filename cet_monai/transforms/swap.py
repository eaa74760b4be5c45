"""Random exchange of two keys, e.g. the input and target halves of a Noise2Noise pair."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import TransformBackends

__all__ = ["RandSwapKeysd"]


class RandSwapKeysd(RandomizableTransform, MapTransform):
    """Swap the values of two keys with probability ``prob`` (e.g. even and odd halves).

    Noise2Noise between two half tomograms is symmetric: swapping which half is the input
    doubles the pairs the network sees. Values are exchanged, not copied.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, keys: KeysCollection, prob: float = 0.5, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if len(self.keys) != 2:
            raise ValueError(f"RandSwapKeysd swaps exactly two keys, got {self.keys}")

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        self.randomize(None)
        if self._do_transform:
            a, b = self.keys
            d[a], d[b] = d[b], d[a]
        return d
