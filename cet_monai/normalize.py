"""Whole-tomogram intensity normalisation.

A tomogram is normalised once, with statistics of the whole volume: intensities are clipped to
the ``[lower, upper]`` percentiles (0.5 % and 99.5 % by default, which tames gold fiducials and
reconstruction edge artefacts) and then standardised to mean 0 and standard deviation 1 (mean and
std of the *clipped* values). Patches are normalised with these same numbers. Normalising each
patch by its own statistics is deliberately not offered: per-patch offsets and gains differ from
patch to patch and show up as a patchwork in the stitched, denoised tomogram.

The statistics of a large volume come from a deterministic strided subsample of about
``max_samples`` voxels (2 million by default), read plane by plane so a memory-mapped multi-GB
tomogram is never loaded or cast to float64 whole. Volumes with at most ``max_samples`` voxels
use every voxel.

:meth:`TomogramNormalizer.inverse` maps network outputs back to the input's intensity scale; the
clipping is not undone (values that were clipped stay at the percentile bounds).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

__all__ = ["TomogramNormalizer", "NormalizeTomogram", "NormalizeTomogramd", "subsample", "subsample_strides"]


def subsample_strides(shape, max_samples: int) -> tuple[int, ...]:
    """Per-axis strides so that the strided grid of ``shape`` has at most ``max_samples`` points.

    The axis that currently has the most grid points has its stride raised, one step at a time,
    so thin axes (few Z sections) are thinned last and the grid stays roughly isotropic. The loop
    ends because ``max_samples >= 1``: at worst every stride equals its axis length (one point).
    """
    if max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    shape = tuple(int(n) for n in shape)
    strides = [1] * len(shape)

    def counts():
        return [math.ceil(n / s) for n, s in zip(shape, strides)]

    while math.prod(counts()) > max_samples:
        axis = int(np.argmax(counts()))
        strides[axis] += 1
    return tuple(strides)


def subsample(volume, max_samples: int = 2_000_000) -> np.ndarray:
    """A deterministic strided subsample of ``volume`` as a 1D float32 array.

    Every voxel when ``volume.size <= max_samples``; otherwise the voxels of a regular grid with
    strides :func:`subsample_strides`, offset by half a stride from the borders. ``volume`` may be
    a numpy array, a memmap (read one plane of axis 0 at a time) or a torch tensor.
    """
    volume = _numpy(volume)
    if math.prod(volume.shape) == 0:
        raise ValueError("cannot take statistics of an empty volume")
    strides = subsample_strides(volume.shape, max_samples)
    index = tuple(slice(min(s // 2, n - 1), None, s) for s, n in zip(strides, volume.shape))
    if len(volume.shape) == 0:
        return np.asarray(volume, dtype=np.float32).reshape(1)
    first, rest = index[0], index[1:]
    planes = range(volume.shape[0])[first]
    per_plane = math.prod(len(range(n)[sl]) for n, sl in zip(volume.shape[1:], rest))
    out = np.empty(len(planes) * per_plane, dtype=np.float32)
    from cet_monai.io.utils import release_pages

    for i, z in enumerate(planes):
        out[i * per_plane:(i + 1) * per_plane] = np.asarray(volume[(z, *rest)], dtype=np.float32).ravel()
        if i % 32 == 31:
            release_pages(volume)  # a strided read touches most pages of a memory map: give them back as it goes
    release_pages(volume)
    return out


def _numpy(x):
    """torch tensors as numpy; numpy arrays, memmaps and other array-likes as they are (not loaded)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.as_tensor() if hasattr(x, "as_tensor") else x).numpy()
    return x if hasattr(x, "shape") and hasattr(x, "__getitem__") else np.asarray(x)


class TomogramNormalizer:
    """Percentile clipping followed by standardisation, with statistics of the whole tomogram.

    Args:
        lower: lower clipping percentile (0-100).
        upper: upper clipping percentile (0-100).
        max_samples: voxels used for the statistics of large volumes (see :func:`subsample`).
        clip: clip to the percentile values before standardising.

    Example::

        norm = TomogramNormalizer().fit(tomogram)        # tomogram (Z, Y, X), e.g. a memmap
        x = norm.transform(patch)                         # numpy or torch, any shape
        y = norm.inverse(model(x))                        # back to the tomogram's scale
        torch.save({"normalizer": norm.state_dict()}, path)

    After :meth:`fit`, ``lower_value``/``upper_value`` are the clipping bounds and ``mean``/``std``
    the statistics of the clipped volume, in the input's intensity units.
    """

    def __init__(self, lower: float = 0.5, upper: float = 99.5, max_samples: int = 2_000_000, clip: bool = True):
        if not 0.0 <= lower < upper <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {lower}, {upper}")
        self.lower = float(lower)
        self.upper = float(upper)
        self.max_samples = int(max_samples)
        self.clip = bool(clip)
        self.lower_value: float | None = None
        self.upper_value: float | None = None
        self.mean: float | None = None
        self.std: float | None = None
        self.n_samples: int = 0

    @property
    def fitted(self) -> bool:
        return self.std is not None

    def fit(self, volume) -> TomogramNormalizer:
        """Compute the clipping bounds, mean and std of ``volume`` (any shape; numpy, memmap or
        torch) from :func:`subsample`. Raises ``ValueError`` for NaN/Inf or a (nearly) constant volume."""
        sample = subsample(volume, self.max_samples)
        if not np.isfinite(sample).all():
            raise ValueError("volume contains NaN or Inf values; check it with cet_monai.io.check_volume")
        lo, hi = (float(v) for v in np.percentile(sample, [self.lower, self.upper]))
        if self.clip:
            np.clip(sample, lo, hi, out=sample)
        mean = float(sample.mean(dtype=np.float64))
        std = float(sample.std(dtype=np.float64))
        if not std > 0:
            raise ValueError(f"volume is constant between the {self.lower} and {self.upper} percentiles "
                             f"(value {lo}); nothing to normalise")
        self.lower_value, self.upper_value, self.mean, self.std = lo, hi, mean, std
        self.n_samples = int(sample.size)
        return self

    def _check_fitted(self):
        if not self.fitted:
            raise RuntimeError("TomogramNormalizer is not fitted: call fit(volume) or load_state_dict() first")

    def transform(self, x):
        """``(clip(x, lower_value, upper_value) - mean) / std`` for a volume or a patch.

        numpy in, numpy out; torch in, torch out (same device; a ``MetaTensor`` stays one). Floats
        keep their precision (float16 becomes float32), integers become float32.
        """
        self._check_fitted()
        if isinstance(x, torch.Tensor):
            xf = x if x.dtype in (torch.float32, torch.float64) else x.to(torch.float32)
            if self.clip:
                xf = xf.clamp(self.lower_value, self.upper_value)
            return (xf - self.mean) / self.std
        x = np.asarray(x)
        xf = x if x.dtype in (np.float32, np.float64) else x.astype(np.float32)
        out = np.clip(xf, self.lower_value, self.upper_value) if self.clip else xf.copy()
        out -= self.mean
        out /= self.std
        return out

    __call__ = transform

    def transform_slabwise(self, volume, out: np.ndarray | None = None) -> np.ndarray:
        """:meth:`transform` of a ``(Z, Y, X)`` volume into a float32 array, one Z slab at a
        time: the same values, but a memory-mapped input is never resident whole (its pages are
        released after each slab) and no float64 or unclipped copy of the whole volume is made.

        ``out``: a float32 array of the volume's shape to write into (e.g. a disk-backed
        :func:`~cet_monai.io.utils.disk_array`, whose pages are released after each slab too);
        default a new array in memory. Returns ``out``."""
        from cet_monai.io.utils import iter_slabs, release_pages

        self._check_fitted()
        if out is None:
            out = np.empty(np.shape(volume), dtype=np.float32)
        elif tuple(out.shape) != tuple(np.shape(volume)) or out.dtype != np.float32:
            raise ValueError(f"out must be float32 of shape {tuple(np.shape(volume))}, got {out.dtype} {tuple(out.shape)}")
        for sl in iter_slabs(out.shape):
            out[sl] = self.transform(volume[sl])
            release_pages(volume)
            release_pages(out)
        return out

    def fit_transform(self, volume):
        """:meth:`fit` then :meth:`transform` the same volume."""
        return self.fit(volume).transform(volume)

    def inverse(self, y):
        """``y * std + mean``: normalised values back to the input's intensity scale.

        The clipping is not inverted: for input voxels outside ``[lower_value, upper_value]``,
        ``inverse(transform(x))`` is the bound, not ``x``.
        """
        self._check_fitted()
        if isinstance(y, torch.Tensor):
            yf = y if y.dtype in (torch.float32, torch.float64) else y.to(torch.float32)
            return yf * self.std + self.mean
        y = np.asarray(y)
        yf = y if y.dtype in (np.float32, np.float64) else y.astype(np.float32)
        out = yf * self.std  # Python floats keep the array's float32/float64 (NEP 50)
        out += self.mean
        return out

    def state_dict(self) -> dict:
        """Plain Python numbers (JSON/YAML/``torch.save`` friendly) that :meth:`from_state_dict` restores."""
        return {
            "lower": self.lower,
            "upper": self.upper,
            "max_samples": self.max_samples,
            "clip": self.clip,
            "lower_value": self.lower_value,
            "upper_value": self.upper_value,
            "mean": self.mean,
            "std": self.std,
            "n_samples": self.n_samples,
        }

    def load_state_dict(self, state: Mapping) -> TomogramNormalizer:
        """Restore what :meth:`state_dict` returned (in place; returns ``self``)."""
        self.__init__(state["lower"], state["upper"], state.get("max_samples", 2_000_000), state.get("clip", True))
        for key in ("lower_value", "upper_value", "mean", "std"):
            value = state.get(key)
            setattr(self, key, None if value is None else float(value))
        self.n_samples = int(state.get("n_samples", 0))
        return self

    @classmethod
    def from_state_dict(cls, state: Mapping) -> TomogramNormalizer:
        """A normalizer restored from :meth:`state_dict` (e.g. out of a checkpoint)."""
        return cls().load_state_dict(state)

    def __repr__(self) -> str:
        stats = (f", lower_value={self.lower_value:.6g}, upper_value={self.upper_value:.6g}, "
                 f"mean={self.mean:.6g}, std={self.std:.6g}") if self.fitted else ", not fitted"
        return f"{type(self).__name__}(lower={self.lower}, upper={self.upper}{stats})"


class NormalizeTomogram(Transform):
    """MONAI transform applying a fitted :class:`TomogramNormalizer` (whole-tomogram statistics)
    to an image or patch of any shape; ``inverse`` undoes the standardisation (not the clipping).

    Args:
        normalizer: a fitted normalizer, or its ``state_dict()``.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, normalizer: TomogramNormalizer | Mapping):
        if isinstance(normalizer, Mapping):
            normalizer = TomogramNormalizer.from_state_dict(normalizer)
        normalizer._check_fitted()
        self.normalizer = normalizer

    def __call__(self, img):
        return self.normalizer.transform(img)

    def inverse(self, img):
        return self.normalizer.inverse(img)


class NormalizeTomogramd(MapTransform):
    """Dictionary version of :class:`NormalizeTomogram`: the same normalizer for every key in ``keys``."""

    backend = NormalizeTomogram.backend

    def __init__(self, keys: KeysCollection, normalizer: TomogramNormalizer | Mapping, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.transform = NormalizeTomogram(normalizer)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d

    def inverse(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform.inverse(d[key])
        return d
