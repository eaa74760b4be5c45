"""Noise2Noise between even/odd half tomograms (needs two half tomograms, e.g. from frame splitting).

Not a single-tomogram method: the upper bound the single-tomogram methods are compared with
(cryoCARE's setting). A patch of one half is the input, the same patch of the other the target,
the two swapped at random (:class:`~cet_monai.transforms.swap.RandSwapKeysd`). Inference applies
the network to the full tomogram's windows as they are (K = 1; dropout passes only if trained
with dropout), or with ``flip_versions`` to K copies of each window, copy k flipped by pattern
k mod 8 (the same test-time flips as the default method's, for a like-for-like comparison).
"""

from __future__ import annotations

from dataclasses import dataclass

from cet_monai.errors import CetMonaiError
from cet_monai.methods.base import DenoisingMethod, register_method

__all__ = ["EvenOddHalves"]


@register_method
@dataclass(frozen=True)
class EvenOddHalves(DenoisingMethod):
    """Even/odd half tomograms as input and target (see the module docstring)."""

    name = "halves"

    margin: int = 0
    versions: int = 1
    passes: int = 0

    @property
    def patch_margin(self) -> int:
        return 0

    @property
    def patch_keys(self) -> tuple[str, ...]:
        return ("image", "label")  # the source's items hold both halves

    def check_several_tomograms(self) -> None:
        raise CetMonaiError("even/odd Noise2Noise pairs the two halves of one tomogram: it fits one model on one tomogram only")

    def training_pairing(self, source=None, seed: int = 0):
        from cet_monai.transforms.swap import RandSwapKeysd

        return RandSwapKeysd(keys=["image", "label"])

    def sampler(self, num_versions: int | None = None):
        from cet_monai.inferers import IdentitySampler

        return IdentitySampler(self.versions if num_versions is None else int(num_versions))
