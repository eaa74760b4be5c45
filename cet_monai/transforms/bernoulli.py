"""Real-space Bernoulli masking (Self2Self with dropout) as MONAI transforms.

From a patch ``x`` of shape ``(C, Z, Y, X)`` a mask ``b`` with ``P(b = 1) = keep_prob`` is drawn
(one spatial mask shared by all channels); the network sees ``b * x`` and is trained to
reproduce ``x`` on the voxels it did not see, i.e. under the loss mask ``1 - b``
(:class:`cet_monai.losses.MaskedMSELoss`). Intensities are not rescaled.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Hashable, Mapping, NamedTuple, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform
from monai.transforms.traits import MultiSampleTrait
from monai.utils import TransformBackends

from ._utils import RNG, as_rng, block_bool, check_prob, rand_bool, rand_uniform, spatial_shape_argument, to_tensor, wrap_like

__all__ = [
    "bernoulli_mask",
    "RandBernoulliMask",
    "RandBernoulliMaskd",
    "BernoulliVersions",
    "bernoulli_versions",
]


def bernoulli_mask(
    rng: RNG,
    spatial_shape: Sequence[int],
    keep_prob: float = 0.5,
    block_scale: int = 8,
    block_mask_prob: float = 0.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """One boolean keep-mask ``b`` of ``spatial_shape`` (``True`` = voxel shown to the network).

    With probability ``block_mask_prob`` the mask is a block mask: Bernoulli(``keep_prob``) on a
    grid ``block_scale`` times coarser, upsampled by nearest neighbour (random grid offset);
    otherwise an element-wise Bernoulli(``keep_prob``) mask. Either way ``P(b = 1) = keep_prob``
    per voxel (up to the 1/65536 quantisation of RandomState draws). The block-or-not decision is
    drawn only when ``block_mask_prob > 0``.
    """
    use_blocks = block_mask_prob > 0 and rand_uniform(rng) < block_mask_prob
    if use_blocks:
        return block_bool(rng, spatial_shape, keep_prob, block_scale, device)
    return rand_bool(rng, spatial_shape, keep_prob, device)


class RandBernoulliMask(RandomizableTransform, MultiSampleTrait):
    """Self2Self input/target/loss-mask triples from one patch.

    Args:
        keep_prob: probability that a voxel is shown to the network (``b = 1``).
        num_samples: number of masks :meth:`draw` returns (M).
        block_scale: edge length, in voxels, of the blocks of a block mask.
        block_mask_prob: probability that a mask is a block mask instead of voxel-wise.
        prob: probability that the transform applies at all (MONAI's meaning). When it does not,
            ``b = 1`` everywhere: the input is ``x`` and the loss mask is all zeros, so such an
            item contributes nothing to :class:`~cet_monai.losses.MaskedMSELoss`.
        dtype: output dtype.

    Input: ``img`` of shape ``(C, Z, Y, X)``, numpy array or torch tensor (any device).
    Output (torch, on the input's device, MetaTensor with the input's metadata when metadata is
    tracked): ``(input, target, loss_mask)``, each ``(C, Z, Y, X)``: ``input = b * x``,
    ``target = x``, ``loss_mask = 1 - b`` (the mask is shared by all channels). All randomness
    comes from ``self.R`` (masks drawn on the CPU, applied on the input's device).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        keep_prob: float = 0.5,
        num_samples: int = 6,
        block_scale: int = 8,
        block_mask_prob: float = 0.0,
        prob: float = 1.0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        self.keep_prob = check_prob("keep_prob", keep_prob)
        self.block_mask_prob = check_prob("block_mask_prob", block_mask_prob)
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples}.")
        if int(block_scale) < 1:
            raise ValueError(f"block_scale must be >= 1, got {block_scale}.")
        self.num_samples = int(num_samples)
        self.block_scale = int(block_scale)
        self.dtype = dtype
        self._masks: list[torch.Tensor] | None = None

    def randomize(self, spatial_shape: Sequence[int], num_samples: int = 1) -> None:  # type: ignore[override]
        """Decide whether to apply (``prob``) and draw ``num_samples`` keep-masks ``(Z, Y, X)``."""
        spatial_shape = spatial_shape_argument(spatial_shape, type(self).__name__)
        super().randomize(None)
        if not self._do_transform:
            self._masks = None
            return
        self._masks = [
            bernoulli_mask(self.R, spatial_shape, self.keep_prob, self.block_scale, self.block_mask_prob)
            for _ in range(num_samples)
        ]

    def _apply(self, img, x: torch.Tensor, mask: torch.Tensor | None):
        if mask is None:
            b = torch.ones((1,) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
        else:
            b = mask.to(device=x.device, dtype=x.dtype).unsqueeze(0)
        inp = x * b
        loss_mask = (1 - b).expand_as(x).contiguous()
        return wrap_like(inp, img), wrap_like(x.clone(), img), wrap_like(loss_mask, img)

    def _prepare(self, img) -> torch.Tensor:
        x, _ = to_tensor(img)
        if x.ndim != 4:
            raise ValueError(f"expected a (C, Z, Y, X) array, got shape {tuple(x.shape)}.")
        return x.to(self.dtype)

    def __call__(self, img, randomize: bool = True):  # type: ignore[override]
        """One ``(input, target, loss_mask)`` triple (see the class docstring)."""
        x = self._prepare(img)
        if randomize:
            self.randomize(x.shape[1:], 1)
        masks = self._masks
        return self._apply(img, x, masks[0] if masks else None)

    def draw(self, img, num_samples: int | None = None, randomize: bool = True) -> list[tuple]:
        """``num_samples`` (default ``self.num_samples``) triples from independent masks."""
        x = self._prepare(img)
        n = self.num_samples if num_samples is None else int(num_samples)
        if randomize:
            self.randomize(x.shape[1:], n)
        if self._masks is None:
            return [self._apply(img, x, None) for _ in range(n)]
        if len(self._masks) != n:
            raise RuntimeError("randomize=False needs masks drawn for the same num_samples.")
        return [self._apply(img, x, m) for m in self._masks]


class RandBernoulliMaskd(RandomizableTransform, MapTransform, MultiSampleTrait):
    """Dictionary version of :class:`RandBernoulliMask` (MONAI ``num_samples`` convention).

    Consumes ``d[key]`` (one key, ``(C, Z, Y, X)``) and returns a list of ``num_samples`` dicts,
    each a copy of ``d`` with:

    * ``d[key]`` = ``b * x``, shape ``(C, Z, Y, X)`` (the network input),
    * ``d[label_key]`` = ``concatenate([x, 1 - b], axis=0)``, shape ``(2C, Z, Y, X)``: target
      and loss mask travel together, so an unmodified ``SupervisedTrainer`` calls
      ``MaskedMSELoss()(pred, label)``.

    ``set_random_state`` seeds this transform and the wrapped array transform alike (the
    RandGaussianNoised pattern), so with ``prob=1`` it reproduces
    ``RandBernoulliMask(...).set_random_state(seed).draw(x)``.
    """

    backend = RandBernoulliMask.backend

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str = "label",
        keep_prob: float = 0.5,
        num_samples: int = 6,
        block_scale: int = 8,
        block_mask_prob: float = 0.0,
        prob: float = 1.0,
        dtype: torch.dtype = torch.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if len(self.keys) != 1:
            raise ValueError(f"RandBernoulliMaskd takes exactly one key, got {self.keys}.")
        self.label_key = label_key
        self.masker = RandBernoulliMask(
            keep_prob=keep_prob,
            num_samples=num_samples,
            block_scale=block_scale,
            block_mask_prob=block_mask_prob,
            prob=1.0,
            dtype=dtype,
        )

    @property
    def num_samples(self) -> int:
        return self.masker.num_samples

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.masker.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, object]) -> list[dict]:  # type: ignore[override]
        d = dict(data)
        self.randomize(None)
        keys = list(self.key_iterator(d))
        if not keys:
            return [deepcopy(d) for _ in range(self.num_samples)]
        key = keys[0]
        img = d[key]
        if self._do_transform:
            triples = self.masker.draw(img)
        else:
            x = self.masker._prepare(img)
            triples = [self.masker._apply(img, x, None) for _ in range(self.num_samples)]
        out = []
        for inp, tgt, lmask in triples:
            item = {k: deepcopy(v) for k, v in d.items() if k != key}
            item[key] = inp
            item[self.label_key] = torch.cat([tgt, lmask], dim=0)
            out.append(item)
        return out


class BernoulliVersions(NamedTuple):
    """``inputs``: ``(K, B, C, Z, Y, X)`` = ``b_k * x``; ``keep_masks``: ``(K, B, 1, Z, Y, X)`` bool."""

    inputs: torch.Tensor
    keep_masks: torch.Tensor


def bernoulli_versions(
    x: torch.Tensor,
    num_versions: int,
    keep_prob: float = 0.5,
    block_scale: int = 8,
    block_mask_prob: float = 0.0,
    generator: torch.Generator | np.random.RandomState | int | None = None,
) -> BernoulliVersions:
    """Per-window helper for Monte-Carlo inference: K masked copies of a batch of windows.

    Args:
        x: ``(B, C, Z, Y, X)`` torch tensor (any device; the result stays there).
        num_versions: K.
        generator: a ``torch.Generator`` (draws on its device: put it on ``x.device`` for speed),
            a ``numpy.random.RandomState``, an int seed or None.

    Each window gets its own K masks (shared by its channels). To restrict a prediction to the
    voxels its input did not see, weight it with ``~keep_masks[k]``.
    """
    if x.ndim != 5:
        raise ValueError(f"expected (B, C, Z, Y, X), got {tuple(x.shape)}.")
    rng = as_rng(generator)
    b_, _, *spatial = x.shape
    masks = torch.stack(
        [
            torch.stack(
                [bernoulli_mask(rng, spatial, keep_prob, block_scale, block_mask_prob, x.device) for _ in range(b_)]
            )
            for _ in range(int(num_versions))
        ]
    ).unsqueeze(2)
    inputs = x.unsqueeze(0) * masks.to(x.dtype)
    return BernoulliVersions(inputs, masks)
