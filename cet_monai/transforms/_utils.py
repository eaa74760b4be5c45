"""Shared helpers of the transforms: random draws, block masks, Hermitian symmetry, metadata.

Random draws accept either a ``numpy.random.RandomState`` (what MONAI's ``Randomizable.R`` is,
so ``set_random_state`` is honoured) or a ``torch.Generator`` (fast draws on the generator's
device, used by the per-window inference helpers). Masks are always returned as torch tensors
on the requested device; numpy draws happen on the CPU and are then moved.
"""

from __future__ import annotations

import copy
import functools
from typing import Sequence, Union

import numpy as np
import torch
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta

RNG = Union[np.random.RandomState, torch.Generator]

#: Bernoulli draws from a RandomState use 16-bit random integers, so a probability ``p`` is
#: realised as ``round(p * 65536) / 65536`` (exact for 0, 0.25, 0.5, 0.75, 1; 0.1 -> 0.100006).
BERNOULLI_RESOLUTION = 65536


def spatial_shape_argument(value, owner: str) -> tuple[int, ...]:
    """``value`` as a spatial shape (a sequence of ints), for the array transforms' ``randomize``.

    MONAI's ``Compose.randomize(data)`` calls every transform's ``randomize`` with the *data*
    and skips (with a warning) those that raise ``TypeError``; these transforms take a shape
    instead and draw when called, so anything else is a ``TypeError``, not a crash.
    """
    if not isinstance(value, Sequence) or isinstance(value, str):  # tensors, arrays and dicts are no Sequence
        raise TypeError(f"{owner}.randomize takes a spatial shape (Z, Y, X), got {type(value).__name__}; "
                        "it draws its own masks when called")
    try:
        return tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{owner}.randomize takes a spatial shape (Z, Y, X), got {value!r}") from None


def as_rng(rng: RNG | int | None) -> RNG:
    """An int or None becomes a ``numpy.random.RandomState``; generators pass through."""
    if isinstance(rng, (np.random.RandomState, torch.Generator)):
        return rng
    return np.random.RandomState(rng)


def quantized_prob(p: float) -> float:
    """The probability a RandomState Bernoulli draw of :func:`rand_bool` actually realises."""
    return round(float(p) * BERNOULLI_RESOLUTION) / BERNOULLI_RESOLUTION


def check_prob(name: str, p: float) -> float:
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {p}.")
    return p


def rand_bool_np(rng: np.random.RandomState, shape: Sequence[int], p: float) -> np.ndarray:
    """Numpy boolean array, ``P(True) = p`` quantised to 1/65536 (16-bit random integers)."""
    shape = tuple(int(s) for s in shape)
    n = int(np.prod(shape)) if shape else 1
    thr = round(float(p) * BERNOULLI_RESOLUTION)
    if thr >= BERNOULLI_RESOLUTION:
        rng.bytes(2 * n)  # keep the stream aligned whatever p is
        return np.ones(shape, dtype=bool)
    return np.frombuffer(rng.bytes(2 * n), dtype=np.uint16).reshape(shape) < thr


def rand_bool(rng: RNG, shape: Sequence[int], p: float, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean tensor of ``shape`` with independent entries, ``P(True) = p``.

    A RandomState draws 16-bit integers on the CPU (``p`` quantised to 1/65536, see
    :data:`BERNOULLI_RESOLUTION`); a torch.Generator draws ``torch.rand`` on its own device.
    """
    shape = tuple(int(s) for s in shape)
    if isinstance(rng, torch.Generator):
        out = torch.rand(shape, generator=rng, device=rng.device) < p
        return out.to(device) if device is not None else out
    out = torch.from_numpy(rand_bool_np(rng, shape, p))
    return out.to(device) if device is not None else out


def rand_uniform(rng: RNG, low: float = 0.0, high: float = 1.0) -> float:
    if isinstance(rng, torch.Generator):
        u = torch.rand((), generator=rng, device=rng.device).item()
    else:
        u = rng.random_sample()
    return float(low + (high - low) * u)


def rand_int(rng: RNG, low: int, high: int) -> int:
    """Uniform integer in ``[low, high)``."""
    if high <= low:
        raise ValueError(f"empty range [{low}, {high})")
    if isinstance(rng, torch.Generator):
        return int(torch.randint(low, high, (), generator=rng, device=rng.device).item())
    return int(rng.randint(low, high))


def _blocks(block, ndim) -> tuple[int, ...]:
    blocks = (int(block),) * ndim if np.isscalar(block) else tuple(int(b) for b in block)
    if any(b < 1 for b in blocks):
        raise ValueError(f"block sizes must be >= 1, got {blocks}.")
    return blocks


def block_bool_np(rng: np.random.RandomState, shape: Sequence[int], p: float, block: int | Sequence[int]) -> np.ndarray:
    """Numpy version of :func:`block_bool` (same draws, same result)."""
    shape = tuple(int(s) for s in shape)
    blocks = _blocks(block, len(shape))
    if all(b == 1 for b in blocks):
        return rand_bool_np(rng, shape, p)
    offsets = [int(rng.randint(0, b)) if b > 1 else 0 for b in blocks]
    coarse_shape = [(n + o + b - 1) // b for n, o, b in zip(shape, offsets, blocks)]
    out = rand_bool_np(rng, coarse_shape, p)
    for ax, (n, o, b) in enumerate(zip(shape, offsets, blocks)):
        if b > 1:
            out = np.take(out, (np.arange(n) + o) // b, axis=ax)
    return np.ascontiguousarray(out)


def block_bool(
    rng: RNG, shape: Sequence[int], p: float, block: int | Sequence[int], device: torch.device | str | None = None
) -> torch.Tensor:
    """Bernoulli(p) on a grid ``block`` times coarser than ``shape``, upsampled (nearest) to ``shape``.

    The coarse grid is shifted by a random offset in ``[0, block)`` per axis, so block edges are
    not always at the same place; every element still is ``True`` with probability ``p``.
    ``block == 1`` gives an ordinary element-wise Bernoulli mask (and draws no offsets).
    """
    if not isinstance(rng, torch.Generator):
        out = torch.from_numpy(block_bool_np(rng, shape, p, block))
        return out.to(device) if device is not None else out
    shape = tuple(int(s) for s in shape)
    blocks = _blocks(block, len(shape))
    if all(b == 1 for b in blocks):
        return rand_bool(rng, shape, p, device)
    offsets = [rand_int(rng, 0, b) if b > 1 else 0 for b in blocks]
    coarse_shape = [(n + o + b - 1) // b for n, o, b in zip(shape, offsets, blocks)]
    out = rand_bool(rng, coarse_shape, p, device)
    for ax, (n, o, b) in enumerate(zip(shape, offsets, blocks)):
        if b > 1:
            idx = torch.div(torch.arange(n, device=out.device) + o, b, rounding_mode="floor")
            out = out.index_select(ax, idx)
    return out.contiguous()


@functools.lru_cache(maxsize=32)
def _first_of_pair(nz: int, ny: int) -> torch.Tensor:
    """True where (i, j) is the canonical member of its conjugate pair {(i, j), (-i, -j)} (mod shape)."""
    i = torch.arange(nz).view(-1, 1)
    j = torch.arange(ny).view(1, -1)
    lin = i * ny + j
    lin_conj = ((-i) % nz) * ny + ((-j) % ny)
    return lin <= lin_conj


def _conj_plane(p):
    """``out[..., i, j] = p[..., -i mod Z, -j mod Y]`` (torch tensor or numpy array)."""
    if isinstance(p, np.ndarray):
        return np.roll(np.flip(p, axis=(-2, -1)), shift=(1, 1), axis=(-2, -1))
    return torch.roll(torch.flip(p, dims=(-2, -1)), shifts=(1, 1), dims=(-2, -1))


def _self_conjugate_planes(last_size: int) -> list[int]:
    return [0] + ([last_size // 2] if last_size % 2 == 0 and last_size // 2 > 0 else [])


def hermitian_symmetrize(mask, last_size: int):
    """Make a real mask on the rfft half-spectrum grid ``(..., Z, Y, X//2+1)`` Hermitian-consistent.

    On the planes that hold their own conjugates (last-axis index 0 and, for even ``last_size``,
    ``X//2``), the value at ``(-kz, -ky)`` is set to the value at ``(kz, ky)`` for one canonical
    member of each pair. Then ``irfftn(F * mask)`` equals the real inverse FFT of the
    full spectrum multiplied by the full-grid mask with ``mask(-k) = mask(k)``, so a coefficient
    and its conjugate always go to the same side of a split. Returns a new tensor (or numpy
    array, for a numpy input).
    """
    nz, ny = mask.shape[-3], mask.shape[-2]
    first = _first_of_pair(nz, ny)
    if isinstance(mask, np.ndarray):
        out = mask.copy()
        first = first.numpy()
        for j in _self_conjugate_planes(last_size):
            p = out[..., j]
            out[..., j] = np.where(first, p, _conj_plane(p))
        return out
    out = mask.clone()
    first = first.to(out.device)
    for j in _self_conjugate_planes(last_size):
        p = out[..., j]
        out[..., j] = torch.where(first, p, _conj_plane(p))
    return out


def is_hermitian_consistent(mask: torch.Tensor, last_size: int) -> bool:
    """Whether a half-spectrum mask already satisfies :func:`hermitian_symmetrize`'s condition."""
    return all(torch.equal(mask[..., j], _conj_plane(mask[..., j])) for j in _self_conjugate_planes(last_size))


def to_tensor(img) -> tuple[torch.Tensor, bool]:
    """(plain float tensor view of ``img``, whether ``img`` was a numpy array)."""
    if isinstance(img, MetaTensor):
        return img.as_tensor(), False
    if isinstance(img, torch.Tensor):
        return img, False
    return torch.as_tensor(np.asarray(img)), True


def wrap_like(out: torch.Tensor, img, crop_start: Sequence[int] | None = None, extra_meta: dict | None = None):
    """Return ``out`` as a MetaTensor carrying ``img``'s metadata when metadata is tracked.

    ``crop_start`` (voxels, spatial axes) moves the affine's origin as a crop of ``img`` would;
    ``extra_meta`` entries are added to the (copied) meta dict.
    """
    if not get_track_meta():
        return out
    if isinstance(img, MetaTensor):
        meta = copy.copy(img.meta)
        if crop_start is not None and any(int(s) != 0 for s in crop_start) and "affine" in meta:
            aff = torch.as_tensor(meta["affine"]).clone()
            nd = len(crop_start)
            start = torch.as_tensor([float(s) for s in crop_start], dtype=aff.dtype)
            aff[:nd, nd] += aff[:nd, :nd] @ start
            meta["affine"] = aff
        if extra_meta:
            meta.update(extra_meta)
        return MetaTensor(out, meta=meta, applied_operations=list(img.applied_operations))
    res = MetaTensor(out)
    if extra_meta:
        res.meta.update(extra_meta)
    return res


def spatial_tuple(value, name: str, n: int = 3) -> tuple[int, ...]:
    if np.isscalar(value):
        return (int(value),) * n
    t = tuple(int(v) for v in value)
    if len(t) != n:
        raise ValueError(f"{name} must be an int or {n} ints, got {value!r}.")
    return t


def get_meta_value(d_or_img, name: str, key=None):
    """Look ``name`` up in a dict item (top-level key, then ``d[key].meta``) or a MetaTensor's meta."""
    if isinstance(d_or_img, dict):
        if name in d_or_img:
            return d_or_img[name]
        if key is not None and isinstance(d_or_img.get(key), MetaTensor):
            return d_or_img[key].meta.get(name)
        return None
    if isinstance(d_or_img, MetaTensor):
        return d_or_img.meta.get(name)
    return None


def pair_items(d: dict, key, label_key, pairs, drop=()) -> list[dict]:
    """One dict per ``(input, target)`` pair: a copy of ``d`` (without ``key`` and ``drop``) with
    ``d[key] = input`` and ``d[label_key] = target``; ``patch_margin`` becomes 0 (cropped away)."""
    out = []
    for inp, tgt in pairs:
        item = {k: copy.deepcopy(v) for k, v in d.items() if k != key and k not in drop}
        item[key] = inp
        item[label_key] = tgt
        if "patch_margin" in item:
            item["patch_margin"] = torch.zeros(3, dtype=torch.int64)
        out.append(item)
    return out
