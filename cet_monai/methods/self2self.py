"""Self2Self with dropout: real-space Bernoulli sampling of one tomogram.

From a patch ``x`` Bernoulli masks ``b`` are drawn (voxel-wise, or ``block_scale``-voxel blocks
with probability ``block_mask_prob``); the input is ``b * x`` and the loss is taken on the hidden
voxels only (:class:`~cet_monai.transforms.RandBernoulliMaskd`,
:class:`~cet_monai.losses.MaskedMSELoss`). Inference keeps dropout on: each of the N = K x T
Bernoulli samples of a window goes through its own thinned network, and the predictions are
averaged (:class:`~cet_monai.inferers.samplers.BernoulliSampler`), overlapping windows blended.
"""

from __future__ import annotations

from dataclasses import dataclass

from cet_monai.methods.base import DenoisingMethod, _positive, _probability, register_method

__all__ = ["RealSpaceBernoulli"]


@register_method
@dataclass(frozen=True)
class RealSpaceBernoulli(DenoisingMethod):
    """Real-space Bernoulli masks (Self2Self with dropout).

    Args:
        keep_prob: probability that a voxel is shown to the network.
        block_mask_prob: probability that a mask is made of blocks instead of single voxels.
        block_scale: block edge (voxels) of block masks.
        patch_size, margin, pairs_per_patch, versions, passes: see :class:`DenoisingMethod`
            (real-space masks need no margin: default 0; N = K x T samples per window).
    """

    name = "real"

    margin: int = 0
    pairs_per_patch: int = 2
    passes: int = 2
    keep_prob: float = 0.5
    block_mask_prob: float = 0.0
    block_scale: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "keep_prob", _probability("keep_prob", self.keep_prob))
        object.__setattr__(self, "block_mask_prob", _probability("block_mask_prob", self.block_mask_prob, low_open=False))
        object.__setattr__(self, "block_scale", _positive("block_scale", self.block_scale))

    def training_pairing(self, source=None, seed: int = 0):
        """``image = b * x``, ``label = [x, 1 - b]`` (target and loss mask)."""
        from cet_monai.transforms import RandBernoulliMaskd

        return RandBernoulliMaskd(keys="image", label_key="label", keep_prob=self.keep_prob, num_samples=self.pairs_per_patch,
                                  block_scale=self.block_scale, block_mask_prob=self.block_mask_prob)

    def sampler(self, num_versions: int | None = None):
        from cet_monai.inferers.samplers import BernoulliSampler

        return BernoulliSampler(num_versions=self.versions if num_versions is None else int(num_versions), keep_prob=self.keep_prob,
                                block_scale=self.block_scale, block_mask_prob=self.block_mask_prob)
