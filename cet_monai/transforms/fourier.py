"""Fourier-space sample generation (Noise2Noise from one tomogram) as MONAI transforms, and the
per-window helpers of Monte-Carlo inference.

The mask maths (the two mask families, their expectations, the missing wedge, the scalings of a
split) are pure functions in :mod:`.fourier_masks`, re-exported here.

The pairs are drawn BEFORE any flip augmentation: apply :class:`~cet_monai.transforms.RandWedgeFlipd`
to ``image`` and ``label`` together afterwards.
"""

from __future__ import annotations

import math
from copy import deepcopy
from typing import TYPE_CHECKING, Hashable, Mapping, NamedTuple, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform
from monai.transforms.traits import MultiSampleTrait
from monai.utils import TransformBackends

from ._utils import (
    as_rng,
    check_prob,
    get_meta_value,
    pair_items,
    quantized_prob,
    spatial_shape_argument,
    spatial_tuple,
    to_tensor,
    wrap_like,
)
from .fourier_masks import __all__ as _mask_names
from .fourier_masks import (  # noqa: F401  (re-exported: the mask maths' public names)
    FFT_DIMS,
    SCALINGS,
    LowpassBall,
    _check_fraction_range,
    _crop,
    _int_tuple,
    _irfft_many,
    _measured_cached,
    _tilt_axis_index,
    bernoulli_fourier_mask,
    expected_bernoulli_mask,
    half_shape,
    lowpass_ball,
    masked_irfft,
    measured_mask,
    missing_wedge_mask,
    shared_lowpass_mask,
    split_fourier_mask,
    split_scales,
    split_weights,
)

if TYPE_CHECKING:  # pragma: no cover
    from .pool import FourierSamplePool

__all__ = [
    *_mask_names,
    "RandFourierPair",
    "RandFourierPaird",
    "FourierVersions",
    "fourier_versions",
    "combine_split_predictions",
]

# ------------------------------------------------------------------ transforms


class RandFourierPair(RandomizableTransform, MultiSampleTrait):
    """Noise2Noise input/target pairs made in Fourier space from one tomogram.

    Args:
        mode: ``"patch"``: Bernoulli-block masks applied to the spectrum of each (margin-padded) patch,
            on the fly; ``"split"``: complementary split masks per patch; ``"pool"``: read the
            pair from a precomputed :class:`~cet_monai.transforms.FourierSamplePool` (whose
            ``kind``, ``"bernoulli"`` or ``"split"``, decides the masks, and whose own mask
            parameters apply; the mask arguments below are then unused) at the patch position.
        num_samples: M, the number of pairs :meth:`draw` returns.
        pool: the :class:`FourierSamplePool` (mode ``"pool"`` only).
        margin: voxels cropped from each side of every spatial axis after masking (int or 3
            ints). None: read ``patch_margin`` from the image's metadata (as written by
            :class:`RandTomogramPatchd`), 0 if absent. In pool mode it only fixes the size of the
            central patch (image spatial shape minus twice the margin).
        keep_prob: Bernoulli-block masks: block keep probability; split masks: fraction of measured
            coefficients given to the input.
        block_scale: Bernoulli-block masks: block edge length in half-spectrum coefficients.
        flip_prob: Bernoulli-block masks: probability that a coefficient's sign is flipped.
        lowpass_fraction: Bernoulli-block masks: ``(low, high)`` range of the fraction of half-spectrum
            coefficients inside the always-kept low-pass ball.
        split_block_size: split masks: edge length of the blocks that go to one half together
            (1 = per coefficient).
        shared_lowpass: split masks: fraction of the half-spectrum coefficients, in a
            low-frequency ball, that go unscaled to both input and target (0: none; see
            :func:`shared_lowpass_mask`).
        tilt_range_deg, tilt_axis: missing wedge excluded from both halves of a split
            (:func:`missing_wedge_mask`); None: use every coefficient.
        scaling, keep_dc: split sample scaling, see the module docstring.
        average: seed-style modes only: return ONE pair, the mean of the M inputs and the mean of
            the M targets.
        prob: probability that the transform applies at all; when it does not, each pair is
            ``(x, x)`` (cropped by the margin; the patch itself in pool mode).
        dtype: output dtype.

    Input: ``img`` ``(C, Z', Y', X')`` numpy array or torch tensor, any device (the patch with
    its margin). Output: torch tensors ``(C, Z'-2m, Y'-2m, X'-2m)`` on the input's device,
    MetaTensors with the input's metadata (affine moved by the margin) when metadata is tracked.
    Masks are shared by all channels. All randomness comes from ``self.R`` (drawn on the CPU).

    Pool mode needs the patch position: ``patch_start`` argument or ``img.meta["patch_start"]``
    (start of the central patch in tomogram voxels, ZYX). A seed pool draws 2M distinct members
    per call, the first M paired element-wise with the last M; a split pool draws M distinct
    complementary pairs, and swaps input and target at random when ``keep_prob == 0.5``.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]
    MODES = ("patch", "split", "pool")

    def __init__(
        self,
        mode: str = "patch",
        num_samples: int = 6,
        pool: FourierSamplePool | None = None,
        margin: int | Sequence[int] | None = None,
        keep_prob: float = 0.5,
        block_scale: int = 8,
        flip_prob: float = 0.1,
        lowpass_fraction: tuple[float, float] = (0.05, 0.10),
        split_block_size: int = 1,
        shared_lowpass: float = 0.0,
        tilt_range_deg: float | None = 60.0,
        tilt_axis: str | int = "Y",
        scaling: str = "energy",
        keep_dc: bool = True,
        average: bool = False,
        prob: float = 1.0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}.")
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples}.")
        if mode == "pool":
            if pool is None:
                raise ValueError("mode='pool' needs a FourierSamplePool (pool=...).")
            limit = pool.num_pairs if pool.kind == "split" else len(pool) // 2
            if int(num_samples) > limit:
                raise ValueError(
                    f"num_samples={num_samples} needs more than the pool's {len(pool)} members "
                    f"({'M pairs' if pool.kind == 'split' else '2M members'} without replacement)."
                )
        self.mode = mode
        self.pool = pool
        self.num_samples = int(num_samples)
        self.margin = None if margin is None else spatial_tuple(margin, "margin")
        self.keep_prob = check_prob("keep_prob", keep_prob)
        self.flip_prob = check_prob("flip_prob", flip_prob)
        self.block_scale = int(block_scale)
        self.lowpass_fraction = _check_fraction_range(lowpass_fraction)
        self.split_block_size = int(split_block_size)
        self.shared_lowpass = float(shared_lowpass)
        self.tilt_range_deg = tilt_range_deg
        self.tilt_axis = tilt_axis
        if tilt_range_deg is not None:
            _tilt_axis_index(tilt_axis)
        self.scaling = scaling
        self.keep_dc = bool(keep_dc)
        self.average = bool(average)
        if self.is_split and self.average:
            raise ValueError("average=True would mix the halves of different splits; use it with Bernoulli-block masks only.")
        if mode == "split":
            split_scales(keep_prob, scaling)  # validates
        self.dtype = dtype
        self._draws: list | None = None

    @property
    def is_split(self) -> bool:
        return self.mode == "split" or (self.mode == "pool" and self.pool is not None and self.pool.kind == "split")

    @property
    def outputs_per_call(self) -> int:
        """Pairs returned by :meth:`draw`: 1 with ``average``, else ``num_samples``."""
        return 1 if self.average else self.num_samples

    # ---- randomness

    def randomize(self, spatial_shape: Sequence[int], num_samples: int = 1) -> None:  # type: ignore[override]
        """Decide whether to apply, then draw the masks (or pool members) of ``num_samples`` pairs.

        ``spatial_shape`` is the shape the masks live on: the patch WITH its margin.
        """
        spatial_shape = spatial_shape_argument(spatial_shape, type(self).__name__)
        super().randomize(None)
        if not self._do_transform:
            self._draws = None
            return
        n = int(num_samples)
        shape = tuple(int(s) for s in spatial_shape)
        if self.mode == "patch":
            ball = lowpass_ball(shape)
            masks = [
                bernoulli_fourier_mask(
                    self.R, shape, self.keep_prob, self.block_scale, self.flip_prob, self.lowpass_fraction, ball=ball
                )
                for _ in range(2 * n)
            ]
            self._draws = [(masks[j], masks[n + j]) for j in range(n)]
        elif self.mode == "split":
            measured = _measured_cached(shape, self.tilt_range_deg, self.tilt_axis)
            self._draws = []
            for _ in range(n):  # store the input's coefficients: the target's follow (measured minus these)
                seen = split_fourier_mask(self.R, shape, self.keep_prob, self.split_block_size)
                if measured is not None:
                    seen &= measured
                shared = shared_lowpass_mask(shape, self.shared_lowpass)
                if shared is not None:
                    seen &= ~shared
                if self.keep_dc:
                    seen[0, 0, 0] = False  # the DC goes, unscaled, to both samples
                self._draws.append(seen)
        else:
            pool = self.pool
            if pool.kind == "split":
                pairs = self.R.choice(pool.num_pairs, size=n, replace=False)
                swap = (
                    self.R.random_sample(n) < 0.5 if quantized_prob(pool.keep_prob) == 0.5 else np.zeros(n, dtype=bool)
                )
                self._draws = [
                    (2 * int(i) + int(s), 2 * int(i) + 1 - int(s)) for i, s in zip(pairs, swap)
                ]
            else:
                idx = self.R.choice(len(pool), size=2 * n, replace=False)
                self._draws = [(int(idx[j]), int(idx[n + j])) for j in range(n)]

    # ---- application

    def _margin(self, img, margin=None) -> tuple[int, int, int]:
        if margin is None:
            margin = self.margin
        if margin is None:
            margin = get_meta_value(img, "patch_margin")
        if margin is None:
            return (0, 0, 0)
        return _int_tuple(margin, "margin")

    def _prepare(self, img, margin=None):
        x, _ = to_tensor(img)
        if x.ndim != 4:
            raise ValueError(f"expected a (C, Z, Y, X) array, got shape {tuple(x.shape)}.")
        margin = self._margin(img, margin)
        if any(2 * m >= s for m, s in zip(margin, x.shape[1:])):
            raise ValueError(f"margin {margin} leaves nothing of spatial shape {tuple(x.shape[1:])}.")
        return x, margin

    def _patch_start(self, img, patch_start):
        if patch_start is None:
            patch_start = get_meta_value(img, "patch_start")
        if patch_start is None:
            raise ValueError(
                "pool mode needs the patch position: pass patch_start= or give an image whose metadata "
                "has 'patch_start' (RandTomogramPatchd writes it)."
            )
        return _int_tuple(patch_start, "patch_start")

    def _pairs(self, img, x: torch.Tensor, margin, patch_start, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Plain-tensor pairs for the current draws (``n`` identity pairs when not applied)."""
        spatial = tuple(x.shape[1:])
        if self._draws is None:
            c = _crop(x, margin).to(self.dtype)
            return [(c.clone(), c.clone()) for _ in range(1 if self.average else n)]
        if self.mode == "pool":
            start = self._patch_start(img, patch_start)
            size = tuple(s - 2 * m for s, m in zip(spatial, margin))
            flat = [i for pair in self._draws for i in pair]
            data = torch.from_numpy(self.pool.read(flat, start, size)).to(device=x.device, dtype=self.dtype)
            if data.shape[1] != x.shape[0]:
                raise ValueError(f"pool has {data.shape[1]} channels, image has {x.shape[0]}.")
            pairs = [(data[2 * j], data[2 * j + 1]) for j in range(len(self._draws))]
        elif self.mode == "patch":
            spec = torch.fft.rfftn(x.to(torch.float32), dim=FFT_DIMS)
            ws = [w for pair in self._draws for w in pair]
            outs = _irfft_many(spec, ws, spatial)
            pairs = [
                (_crop(outs[2 * j], margin).to(self.dtype), _crop(outs[2 * j + 1], margin).to(self.dtype))
                for j in range(len(self._draws))
            ]
        else:
            # split: input a = irfft(F * seen); target from the complement by linearity,
            # irfft(F * (measured - seen)) = x_W - a, so one inverse FFT per pair (+ one for x_W)
            spec = torch.fft.rfftn(x.to(torch.float32), dim=FFT_DIMS)
            c_in, c_t = split_scales(self.keep_prob, self.scaling)
            measured = _measured_cached(spatial, self.tilt_range_deg, self.tilt_axis)
            xw = x.to(torch.float32) if measured is None else masked_irfft(spec, measured.to(x.device), spatial)
            if self.keep_dc:
                dc = (spec[..., 0, 0, 0].real / float(np.prod(spatial))).view(-1, 1, 1, 1)
                xw = xw - dc
            shared = shared_lowpass_mask(spatial, self.shared_lowpass, x.device)
            if shared is not None:
                if self.keep_dc:
                    shared = shared.clone()
                    shared[0, 0, 0] = False  # the DC is added once, below
                common = masked_irfft(spec, shared.to(torch.float32), spatial)
                xw = xw - masked_irfft(spec, (shared & measured.to(x.device)).to(torch.float32) if measured is not None else shared.to(torch.float32), spatial)
            pairs = []
            for a in _irfft_many(spec, self._draws, spatial):
                inp, tgt = c_in * a, c_t * (xw - a)
                if shared is not None:
                    inp, tgt = inp + common, tgt + common
                if self.keep_dc:
                    inp, tgt = inp + dc, tgt + dc
                pairs.append((_crop(inp, margin).to(self.dtype), _crop(tgt, margin).to(self.dtype)))
        if self.average:
            return [(torch.stack([a for a, _ in pairs]).mean(0), torch.stack([b for _, b in pairs]).mean(0))]
        return pairs

    def _wrap(self, pairs, img, margin):
        # the margin is cropped away: the outputs' metadata says so (the affine moves by it)
        extra = {"patch_margin": torch.zeros(3, dtype=torch.int64)} if get_meta_value(img, "patch_margin") is not None else None
        return [
            (wrap_like(a.contiguous(), img, margin, extra), wrap_like(b.contiguous(), img, margin, extra))
            for a, b in pairs
        ]

    def __call__(self, img, patch_start=None, margin=None, randomize: bool = True):  # type: ignore[override]
        """One ``(input, target)`` pair (M = 1). ``patch_start``/``margin`` override the metadata."""
        x, margin = self._prepare(img, margin)
        if randomize:
            self.randomize(x.shape[1:], 1)
        elif self._draws is not None and len(self._draws) != 1:
            raise RuntimeError("randomize=False needs draws for one pair.")
        pairs = self._pairs(img, x, margin, patch_start, 1)
        return self._wrap(pairs, img, margin)[0]

    def draw(
        self, img, num_samples: int | None = None, patch_start=None, margin=None, randomize: bool = True
    ) -> list[tuple]:
        """``num_samples`` (default M) ``(input, target)`` pairs, or one averaged pair with ``average``."""
        x, margin = self._prepare(img, margin)
        n = self.num_samples if num_samples is None else int(num_samples)
        if randomize:
            self.randomize(x.shape[1:], n)
        elif self._draws is not None and len(self._draws) != n:
            raise RuntimeError("randomize=False needs draws for the same num_samples.")
        pairs = self._pairs(img, x, margin, patch_start, n)
        return self._wrap(pairs, img, margin)

    def identity(self, img, num_samples: int | None = None, margin=None) -> list[tuple]:
        """What :meth:`draw` returns when the transform does not apply: ``(x, x)`` pairs."""
        x, margin = self._prepare(img, margin)
        n = self.num_samples if num_samples is None else int(num_samples)
        saved, self._draws = self._draws, None
        try:
            return self._wrap(self._pairs(img, x, margin, None, n), img, margin)
        finally:
            self._draws = saved


class RandFourierPaird(RandomizableTransform, MapTransform, MultiSampleTrait):
    """Dictionary version of :class:`RandFourierPair` (MONAI ``num_samples`` convention).

    Consumes ``d[key]`` (one key): the patch ``(C, Z', Y', X')`` -- with its margin in modes
    ``"patch"``/``"split"``; in mode ``"pool"`` only its shape and position are used, the
    position read from ``d["patch_start"]`` or ``d[key].meta["patch_start"]`` and the margin from
    ``d["patch_margin"]`` / meta (as :class:`RandTomogramPatchd` writes them) unless ``margin`` is
    given. Returns a list of M dicts (one with ``average=True``), each a copy of ``d`` with

    * ``d[key]`` = input sample, ``(C, Z'-2m, Y'-2m, X'-2m)``,
    * ``d[label_key]`` = target sample, same shape,

    so a standard ``SupervisedTrainer`` trains on them with ``MSELoss``. ``set_random_state``
    seeds this transform and the wrapped array transform alike; with ``prob=1`` it reproduces
    ``RandFourierPair(...).set_random_state(seed).draw(...)``.
    """

    backend = RandFourierPair.backend

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str = "label",
        mode: str = "patch",
        num_samples: int = 6,
        pool: FourierSamplePool | None = None,
        margin: int | Sequence[int] | None = None,
        keep_prob: float = 0.5,
        block_scale: int = 8,
        flip_prob: float = 0.1,
        lowpass_fraction: tuple[float, float] = (0.05, 0.10),
        split_block_size: int = 1,
        shared_lowpass: float = 0.0,
        tilt_range_deg: float | None = 60.0,
        tilt_axis: str | int = "Y",
        scaling: str = "energy",
        keep_dc: bool = True,
        average: bool = False,
        prob: float = 1.0,
        dtype: torch.dtype = torch.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if len(self.keys) != 1:
            raise ValueError(f"RandFourierPaird takes exactly one key, got {self.keys}.")
        self.label_key = label_key
        self.pairer = RandFourierPair(
            mode=mode,
            num_samples=num_samples,
            pool=pool,
            margin=margin,
            keep_prob=keep_prob,
            block_scale=block_scale,
            flip_prob=flip_prob,
            lowpass_fraction=lowpass_fraction,
            split_block_size=split_block_size,
            shared_lowpass=shared_lowpass,
            tilt_range_deg=tilt_range_deg,
            tilt_axis=tilt_axis,
            scaling=scaling,
            keep_dc=keep_dc,
            average=average,
            prob=1.0,
            dtype=dtype,
        )

    @property
    def num_samples(self) -> int:
        return self.pairer.num_samples

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.pairer.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, object]) -> list[dict]:  # type: ignore[override]
        d = dict(data)
        self.randomize(None)
        keys = list(self.key_iterator(d))
        if not keys:
            return [deepcopy(d) for _ in range(self.pairer.outputs_per_call)]
        key = keys[0]
        img = d[key]
        margin = self.pairer.margin if self.pairer.margin is not None else d.get("patch_margin")
        start = d.get("patch_start") if self.pairer.mode == "pool" else None
        if self._do_transform:
            pairs = self.pairer.draw(img, patch_start=start, margin=margin)
        else:
            pairs = self.pairer.identity(img, margin=margin)
        return pair_items(d, key, self.label_key, pairs)


# ------------------------------------------------------------------ inference helpers


class FourierVersions(NamedTuple):
    """Result of :func:`fourier_versions`.

    * ``inputs``: ``(K, B, C, Z, Y, X)`` Fourier versions of the windows.
    * ``input_weights``: ``(K, B, 1, Z, Y, X//2+1)`` float32 spectral weights each input was
      made with (seed: the mask in {-1, 0, 1}; split: ``w_in``, scale included).
    * ``input_masks``: split only, ``(K, B, 1, Z, Y, X//2+1)`` bool, ``True`` where the input
      saw the coefficient (``m & measured``, plus DC with ``keep_dc``); None for Bernoulli-block masks.
    * ``target_scale``: ``c_t`` of the split (1.0 for Bernoulli-block masks): a network trained on split
      pairs predicts ``c_t * signal`` on the coefficients its input did not see.
    """

    inputs: torch.Tensor
    input_weights: torch.Tensor
    input_masks: torch.Tensor | None
    target_scale: float
    shared_mask: torch.Tensor | None = None  # split: coefficients both halves kept (unscaled)


def fourier_versions(
    x: torch.Tensor,
    num_versions: int,
    mode: str = "split",
    generator: torch.Generator | np.random.RandomState | int | None = None,
    keep_prob: float = 0.5,
    block_scale: int = 8,
    flip_prob: float = 0.1,
    lowpass_fraction: tuple[float, float] = (0.05, 0.10),
    split_block_size: int = 1,
    tilt_range_deg: float | None = 60.0,
    tilt_axis: str | int = "Y",
    scaling: str = "energy",
    keep_dc: bool = True,
    shared_lowpass: float = 0.0,
) -> FourierVersions:
    """Per-window helper for Monte-Carlo inference: K Fourier versions of a batch of windows.

    Args:
        x: ``(B, C, Z, Y, X)`` torch tensor; everything is computed on ``x.device``.
        num_versions: K.
        mode: ``"split"`` (input half of a split; see :func:`combine_split_predictions`) or
            ``"bernoulli"`` (Bernoulli-block masks with a kept low-frequency ball and sign flips, as
            in modes ``"patch"``/``"pool"``).
        generator: ``torch.Generator`` (masks drawn on its device; put it on ``x.device``),
            ``numpy.random.RandomState``, int seed or None. Other arguments as in
            :class:`RandFourierPair`. Each window gets its own K masks (shared by its channels).
    """
    if x.ndim != 5:
        raise ValueError(f"expected (B, C, Z, Y, X), got {tuple(x.shape)}.")
    if mode == "seed":
        raise ValueError("fourier_versions mode 'seed' was renamed 'bernoulli' (Bernoulli-block masks)")
    if mode not in ("split", "bernoulli"):
        raise ValueError(f"mode must be 'split' or 'bernoulli', got {mode!r}.")
    rng = as_rng(generator)
    k_, b_ = int(num_versions), x.shape[0]
    shape = tuple(x.shape[-3:])
    dev = x.device
    weights, masks = [], []
    target_scale = 1.0
    if mode == "bernoulli":
        ball = lowpass_ball(shape)
        for _ in range(k_ * b_):
            weights.append(
                bernoulli_fourier_mask(rng, shape, keep_prob, block_scale, flip_prob, lowpass_fraction, dev, ball=ball)
            )
    else:
        measured = _measured_cached(shape, tilt_range_deg, tilt_axis)
        target_scale = split_scales(keep_prob, scaling)[1]
        shared = shared_lowpass_mask(shape, shared_lowpass, dev)
        for _ in range(k_ * b_):
            m = split_fourier_mask(rng, shape, keep_prob, split_block_size, dev)
            w_in, _ = split_weights(m, measured, keep_prob, scaling, keep_dc, shared=shared)
            seen = m & measured.to(dev) if measured is not None else m.clone()
            if shared is not None:
                seen |= shared
            if keep_dc:
                seen[0, 0, 0] = True
            weights.append(w_in)
            masks.append(seen)
    hs = half_shape(shape)
    w = torch.stack(weights).to(dev).view(k_, b_, 1, *hs)
    spec = torch.fft.rfftn(x.to(torch.float32), dim=FFT_DIMS).unsqueeze(0)
    inputs = masked_irfft(spec, w, shape).to(x.dtype if x.is_floating_point() else torch.float32)
    seen_t = torch.stack(masks).to(dev).view(k_, b_, 1, *hs) if masks else None
    shared_out = shared if mode == "split" else None
    return FourierVersions(inputs, w, seen_t, float(target_scale), shared_out)


def combine_split_predictions(
    preds: torch.Tensor,
    input_masks: torch.Tensor,
    target_scale: float = 1.0,
    keep_dc: bool = True,
    shared_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Merge K predictions, each restricted to the coefficients its input did NOT see.

    Coefficients in ``shared_mask`` (kept by both halves in training, so seen by every input)
    are the plain mean of the predictions, unscaled.

    Args:
        preds: ``(K, B, C, Z, Y, X)`` network outputs for the K inputs of :func:`fourier_versions`.
        input_masks: ``(K, B, 1, Z, Y, X//2+1)`` bool, ``FourierVersions.input_masks``.
        target_scale: ``FourierVersions.target_scale``; the merged spectrum is divided by it
            (except the DC coefficient when ``keep_dc``, which targets carry unscaled).

    Returns ``(B, C, Z, Y, X)``: per coefficient, the mean over the versions whose input did not
    see it (wedge coefficients, never seen, average all K); a coefficient seen by every input
    (only possible for small K) falls back to the mean of all K predictions.
    """
    shape = tuple(preds.shape[-3:])
    spec = torch.fft.rfftn(preds.to(torch.float32), dim=FFT_DIMS)
    unseen = (~input_masks).to(torch.float32)
    num = (spec * unseen).sum(0)
    cnt = unseen.sum(0)
    merged = torch.where(cnt > 0, num / cnt.clamp_min(1.0), spec.mean(0))
    scale = torch.full(merged.shape[-3:], 1.0 / float(target_scale), device=merged.device)
    if keep_dc:
        scale[0, 0, 0] = 1.0
    if shared_mask is not None:
        merged = torch.where(shared_mask.to(merged.device), spec.mean(0), merged)
        scale = torch.where(shared_mask.to(merged.device), torch.ones_like(scale), scale)
    return torch.fft.irfftn(merged * scale, s=shape, dim=FFT_DIMS)
