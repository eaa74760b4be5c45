"""Fourier-space Bernoulli sampling's pool: whole-tomogram Fourier samples, built once per tomogram.

Memory: the pool never holds its S samples as float32 in RAM. Samples are computed one at a
time (one channel's half spectrum, one mask, one inverse FFT in memory) and stored as float16
-- by default in a memory-mapped file on disk (``storage="memmap"``), or in RAM
(``storage="ram"``, half the naive footprint). Each stored sample is normalised by its own mean
and standard deviation before the float16 cast (kept in float64), so the cast costs a relative
error of about 5e-4 of the sample's standard deviation whatever the tomogram's units.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from typing import Sequence

import numpy as np
import torch
from monai.utils import MAX_SEED

from ._utils import check_prob, quantized_prob
from .fourier_masks import (
    FFT_DIMS,
    LowpassBall,
    _check_fraction_range,
    _tilt_axis_index,
    measured_mask,
    bernoulli_fourier_mask,
    split_fourier_mask,
    split_scales,
    shared_lowpass_mask,
    split_weights,
)

__all__ = ["FourierSamplePool"]


def _cleanup(path: str, directory: str | None, owner_pid: int) -> None:
    if os.getpid() != owner_pid:
        return
    try:
        os.remove(path)
    except OSError:
        pass
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)


def _irfftn_low_memory(spec: torch.Tensor, shape: Sequence[int], out: torch.Tensor, chunk: int = 16) -> None:
    """``out[:] = irfftn(spec, s=shape)``, overwriting ``spec``; temporaries of a few slabs only.

    The 3D inverse transform is separable: a 2D complex inverse FFT over (Z, Y) in place, a few
    X-columns at a time, then the 1D real inverse FFT along X, a few Z-slices at a time. A single
    ``torch.fft.irfftn`` call needs about two more spectrum-sized buffers.
    """
    for j in range(0, spec.shape[-1], chunk):
        sl = spec[..., j : j + chunk]
        sl.copy_(torch.fft.ifftn(sl, dim=(-3, -2)))
    for z in range(0, shape[0], chunk):
        out[z : z + chunk] = torch.fft.irfft(spec[z : z + chunk], n=int(shape[-1]), dim=-1)


class FourierSamplePool:
    """S whole-tomogram Fourier samples of one tomogram, read back patch by patch.

    Args:
        tomogram: ``(C, Z, Y, X)`` (or ``(Z, Y, X)``) numpy array, numpy memmap or torch tensor.
            One channel at a time is copied to float32 for its FFT.
        num_samples: S, pool size (default 40). ``kind="split"`` needs an even S: members
            ``2i`` and ``2i+1`` are the two halves of split ``i``.
        kind: ``"bernoulli"`` (Bernoulli-block masks with a kept low-frequency ball and sign flips, ``clip(ball + blocks, 1) * sign``) or ``"split"``
            (complementary masks over the measured coefficients, scaled by ``scaling``).
        seed: seed of the pool's own random stream. Sample ``s`` uses a
            ``RandomState`` seeded from it, so any sample can be regenerated alone.
        keep_prob, block_scale, flip_prob, lowpass_fraction, split_block_size, shared_lowpass, tilt_range_deg,
        tilt_axis, scaling, keep_dc: as in :class:`~cet_monai.transforms.RandFourierPair`.
        storage: ``"memmap"`` (float16 file on disk, default) or ``"ram"`` (float16 array).
        directory: where the memmap file goes (default: a new temporary directory, removed with
            the pool by :meth:`close` / garbage collection in the creating process).
        device: where the FFTs run while building (``"cpu"`` or a CUDA device).

    After construction, :meth:`read` returns float32 patches; nothing else is recomputed.
    """

    KINDS = ("bernoulli", "split")

    def __init__(
        self,
        tomogram,
        num_samples: int = 40,
        kind: str = "bernoulli",
        seed: int = 0,
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
        storage: str = "memmap",
        directory: str | os.PathLike | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if kind == "seed":
            raise ValueError("FourierSamplePool kind 'seed' was renamed 'bernoulli' (Bernoulli-block masks with a "
                             "kept low-frequency ball and sign flips)")
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS}, got {kind!r}.")
        if storage not in ("memmap", "ram"):
            raise ValueError(f"storage must be 'memmap' or 'ram', got {storage!r}.")
        s_ = int(num_samples)
        if s_ < 2 or (kind == "split" and s_ % 2):
            raise ValueError(f"num_samples must be >= 2 (and even for kind='split'), got {num_samples}.")
        if tomogram.ndim == 3:
            tomogram = tomogram[None]
        if tomogram.ndim != 4:
            raise ValueError(f"expected a (C, Z, Y, X) tomogram, got shape {tuple(tomogram.shape)}.")
        self.kind = kind
        self.num_samples = s_
        self.seed = int(seed)
        self.keep_prob = check_prob("keep_prob", keep_prob)
        self.block_scale = int(block_scale)
        self.flip_prob = check_prob("flip_prob", flip_prob)
        self.lowpass_fraction = _check_fraction_range(lowpass_fraction)
        self.split_block_size = int(split_block_size)
        self.shared_lowpass = float(shared_lowpass)
        self.tilt_range_deg = tilt_range_deg
        self.tilt_axis = tilt_axis
        if tilt_range_deg is not None:
            _tilt_axis_index(tilt_axis)
        self.scaling = scaling
        self.keep_dc = bool(keep_dc)
        if kind == "split":
            split_scales(keep_prob, scaling)
        self.storage = storage
        self.channels = int(tomogram.shape[0])
        self.spatial_shape = tuple(int(s) for s in tomogram.shape[1:])
        self.shape = (s_, self.channels) + self.spatial_shape
        self.sample_seeds = np.random.RandomState(self.seed).randint(0, MAX_SEED, size=s_ // (2 if kind == "split" else 1))
        # per (sample, channel) normalisation of the float16 storage: value = stored * scale + offset
        self.offset = np.zeros((s_, self.channels), dtype=np.float64)
        self.scale = np.ones((s_, self.channels), dtype=np.float64)
        self.path: str | None = None
        self._owner_pid = os.getpid()
        self._finalizer = None
        if storage == "ram":
            self._data = np.empty(self.shape, dtype=np.float16)
            self._file = None
        else:
            made_dir = None
            if directory is None:
                directory = made_dir = tempfile.mkdtemp(prefix="cet_monai_pool_")
            fd, self.path = tempfile.mkstemp(suffix=".f16", dir=str(directory))
            self._file = os.fdopen(fd, "wb")
            self._file.truncate(int(np.prod(self.shape)) * 2)
            self._finalizer = weakref.finalize(self, _cleanup, self.path, made_dir, self._owner_pid)
            self._data = None
        try:
            self._build(tomogram, torch.device(device))
        finally:
            if self._file is not None:
                self._file.close()
                self._file = None
        if storage == "memmap":
            self._data = np.memmap(self.path, dtype=np.float16, mode="r", shape=self.shape)

    # ---- building

    def _members(self, rng_seed: int, shape, measured, ball, device):
        rng = np.random.RandomState(int(rng_seed))
        if self.kind == "bernoulli":
            return [
                bernoulli_fourier_mask(
                    rng, shape, self.keep_prob, self.block_scale, self.flip_prob, self.lowpass_fraction, device, ball
                )
            ]
        m = split_fourier_mask(rng, shape, self.keep_prob, self.split_block_size, device)
        shared = shared_lowpass_mask(shape, self.shared_lowpass, device)
        return list(split_weights(m, measured, self.keep_prob, self.scaling, self.keep_dc, shared=shared))

    def _store(self, s: int, c: int, sample: torch.Tensor) -> None:
        # any offset/scale works (they are kept exactly); they only have to bring values near 1
        std, mean = (float(v) for v in torch.std_mean(sample))
        std = std if std > 0 and np.isfinite(std) else 1.0
        self.offset[s, c], self.scale[s, c] = mean, std
        sample.sub_(mean).div_(std)
        half = sample.to(device="cpu", dtype=torch.float16).numpy()
        if self._data is not None:
            self._data[s, c] = half
        else:
            n = half.size
            self._file.seek(((s * self.channels) + c) * n * 2)
            half.tofile(self._file)

    def _build(self, tomogram, device: torch.device) -> None:
        shape = self.spatial_shape
        ball = LowpassBall(shape) if self.kind == "bernoulli" else None
        measured = measured_mask(shape, self.tilt_range_deg, self.tilt_axis, device) if self.kind == "split" else None
        out = torch.empty(shape, dtype=torch.float32, device=device)
        for c in range(self.channels):
            chan = tomogram[c]
            if isinstance(chan, torch.Tensor):
                xc = chan.detach().to(device=device, dtype=torch.float32)
            else:
                xc = torch.from_numpy(np.asarray(chan, dtype=np.float32)).to(device)
            spec = torch.fft.rfftn(xc, dim=FFT_DIMS)
            del xc
            prod = torch.empty_like(spec)
            s = 0
            for rng_seed in self.sample_seeds:
                for w in self._members(rng_seed, shape, measured, ball, device):
                    torch.mul(spec, w, out=prod)
                    del w
                    _irfftn_low_memory(prod, shape, out)
                    self._store(s, c, out)
                    s += 1
            del spec, prod

    # ---- access

    def __len__(self) -> int:
        return self.num_samples

    @property
    def num_pairs(self) -> int:
        """Number of complementary pairs (kind ``"split"``); 0 for Bernoulli-mask pools."""
        return self.num_samples // 2 if self.kind == "split" else 0

    @property
    def nbytes(self) -> int:
        """Bytes of sample storage (float16), on disk or in RAM."""
        return int(np.prod(self.shape)) * 2

    def read(self, indices: Sequence[int], start: Sequence[int], size: Sequence[int]) -> np.ndarray:
        """Float32 ``(len(indices), C, *size)`` patches of pool members ``indices`` at ``start`` (ZYX)."""
        if self._data is None:
            raise RuntimeError("the pool is closed.")
        start = [int(v) for v in start]
        size = [int(v) for v in size]
        if any(s0 < 0 or s0 + n > d for s0, n, d in zip(start, size, self.spatial_shape)):
            raise ValueError(f"patch start {start} size {size} leaves the tomogram {self.spatial_shape}.")
        sl = tuple(slice(s0, s0 + n) for s0, n in zip(start, size))
        out = np.empty((len(indices), self.channels, *size), dtype=np.float32)
        for j, i in enumerate(indices):
            i = int(i)
            out[j] = self._data[(i, slice(None)) + sl]
            out[j] *= self.scale[i].reshape(-1, 1, 1, 1)
            out[j] += self.offset[i].reshape(-1, 1, 1, 1)
        return out

    def sample(self, index: int) -> np.ndarray:
        """Whole member ``index`` as float32 ``(C, Z, Y, X)`` (for checks; S such arrays never coexist)."""
        return self.read([index], (0, 0, 0), self.spatial_shape)[0]

    def close(self) -> None:
        """Drop the storage (and delete the memmap file this pool created)."""
        self._data = None
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- pickling (DataLoader workers started with spawn): reopen the file, never own it

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_finalizer"] = None
        state["_file"] = None
        if self.storage == "memmap":
            state["_data"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.storage == "memmap" and self.path is not None and os.path.exists(self.path):
            self._data = np.memmap(self.path, dtype=np.float16, mode="r", shape=self.shape)

    def __repr__(self) -> str:
        return (
            f"FourierSamplePool(kind={self.kind!r}, num_samples={self.num_samples}, shape={self.spatial_shape}, "
            f"channels={self.channels}, storage={self.storage!r}, path={self.path!r})"
        )

    # keep the realised probabilities visible for docs/tests
    @property
    def realised_keep_prob(self) -> float:
        return quantized_prob(self.keep_prob)
