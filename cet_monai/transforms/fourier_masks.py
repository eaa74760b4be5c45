"""Fourier-space mask maths for Noise2Noise from one tomogram: pure functions, no transforms.

Everything works on the rfft half spectrum: for a volume of spatial shape ``(Z, Y, X)`` the
spectrum ``F = torch.fft.rfftn(x, dim=(-3, -2, -1))`` has shape ``(Z, Y, X//2 + 1)`` and samples
are ``torch.fft.irfftn(F * w, s=(Z, Y, X), dim=(-3, -2, -1))`` -- real by construction, odd
sizes included. Every mask is made Hermitian-consistent on the planes that hold their own
conjugates (last-axis index 0 and, for even X, X//2; see
:func:`~cet_monai.transforms._utils.hermitian_symmetrize`), so a half-spectrum mask means the
same as the full-spectrum mask with ``w(-k) = w(k)``.

Two families of masks:

* **Bernoulli-block** masks (the original Fourier masks): ``w = clip(ball + blocks, max=1) * sign``. ``ball`` is a
  low-pass ball always kept, its radius drawn per mask so that it holds a fraction
  ``f ~ U(lowpass_fraction)`` (default 5-10 %) of the half-spectrum coefficients (radius in
  cycles/voxel, so anisotropic shapes get a physically round ball); ``blocks`` is
  Bernoulli(``keep_prob``) on a grid ``block_scale`` times coarser than the half spectrum,
  upsampled by nearest neighbour with a random grid offset; ``sign`` is -1 with probability
  ``flip_prob`` per coefficient. Samples are not rescaled. Over masks,
  ``E[w(k)] = (1 - 2 q) * (P_ball(k) + (1 - P_ball(k)) * p)`` with ``p = keep_prob``,
  ``q = flip_prob`` (:func:`expected_bernoulli_mask`), hence ``E[sample] = irfftn(F * E[w])``: a
  smooth low-pass of ``x`` (0.8 at the lowest frequencies, 0.4 at the highest, by default).
  Input and target of a pair come from independent masks, so they share the ball and about a
  quarter of the other coefficients: their noise is correlated.
* **split** masks: a Bernoulli(``keep_prob``) mask ``m`` (per coefficient, or
  in blocks of ``split_block_size``) restricted to the coefficients the tomogram measured
  (outside the missing wedge, :func:`missing_wedge_mask`); the input gets ``m``, the target
  the complement. Scaling (``scaling=``): input weights ``c_in * m * W``, target weights
  ``c_t * (1 - m) * W`` with ``W`` the measured region and

  - ``"energy"`` (default): ``c_in = 1/sqrt(p)``, ``c_t = 1/sqrt(1-p)``: each sample has, in
    expectation over masks, the energy (power spectrum) of the measured full spectrum -- for
    white noise its variance equals that of the wedge-filtered input. Then
    ``E[input] = sqrt(p) * x_W`` and ``E[target] = sqrt(1-p) * x_W``;
  - ``"mean"``: ``c_in = 1/p``, ``c_t = 1/(1-p)``: ``E[input] = E[target] = x_W``;
  - ``"none"``: ``c = 1``: ``E[input] = p * x_W``, ``E[target] = (1-p) * x_W``,

  where ``x_W = irfftn(F * W)`` is the wedge-filtered input (``x`` itself with
  ``tilt_range_deg=None``) and ``p`` is the realised ``keep_prob`` (quantised to 1/65536).
  With ``keep_dc=True`` (default) the DC coefficient (the mean) is the one exception: it goes,
  unscaled, to both samples, so every sample keeps the input's mean and the expectations
  above hold for ``x_W - mean(x)`` with ``mean(x)`` added back unchanged. Because a
  coefficient and its conjugate always go to the same half, for white noise the input and
  target noise are independent (apart from the shared DC, which a Pearson correlation removes).
  Computation: ``a = irfftn(F * (m & W))``, ``input = c_in * a``, ``target = c_t * (x_W - a)``
  (linearity), i.e. one inverse FFT per pair plus one for ``x_W``.

The transforms built on these (:class:`~cet_monai.transforms.RandFourierPair`,
:class:`~cet_monai.transforms.FourierSamplePool`) and the inference helpers
(:func:`~cet_monai.transforms.fourier_versions`) live in :mod:`.fourier` and :mod:`.pool`.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
import torch

from ._utils import (
    RNG,
    block_bool,
    block_bool_np,
    hermitian_symmetrize,
    quantized_prob,
    rand_bool,
    rand_bool_np,
    rand_uniform,
)

__all__ = [
    "FFT_DIMS",
    "SCALINGS",
    "half_shape",
    "missing_wedge_mask",
    "measured_mask",
    "LowpassBall",
    "lowpass_ball",
    "bernoulli_fourier_mask",
    "expected_bernoulli_mask",
    "split_fourier_mask",
    "split_weights",
    "shared_lowpass_mask",
    "split_scales",
    "masked_irfft",
]


FFT_DIMS = (-3, -2, -1)
SCALINGS = ("energy", "mean", "none")


def half_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    z, y, x = (int(s) for s in shape[-3:])
    return z, y, x // 2 + 1


# ------------------------------------------------------------------ missing wedge


def _tilt_axis_index(tilt_axis) -> int:
    if isinstance(tilt_axis, str):
        key = tilt_axis.upper()
        if key not in ("Y", "X"):
            raise ValueError(f"tilt_axis must be 'Y' or 'X' (Z is the beam axis), got {tilt_axis!r}.")
        return 1 if key == "Y" else 2
    idx = int(tilt_axis)
    if idx not in (1, 2):
        raise ValueError(f"tilt_axis must be spatial axis 1 (Y) or 2 (X), got {tilt_axis!r}.")
    return idx


def missing_wedge_mask(
    shape: Sequence[int],
    tilt_range_deg: float = 60.0,
    tilt_axis: str | int = "Y",
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean mask, ``True`` INSIDE the missing wedge, on the rfft half-spectrum grid.

    Args:
        shape: spatial shape ``(Z, Y, X)`` of the volume (voxels assumed isotropic).
        tilt_range_deg: largest tilt angle in degrees; the tilt series spans
            ``[-tilt_range_deg, +tilt_range_deg]`` about the tilt axis.
        tilt_axis: ``"Y"`` (default, spatial axis 1) or ``"X"`` (axis 2); Z is the beam direction.

    Returns:
        ``(Z, Y, X//2 + 1)`` bool tensor. With the tilt axis along Y a coefficient
        ``(kz, ky, kx)`` (cycles/voxel) was measured iff ``|kz| <= tan(tilt_range) * |kx|``; the
        wedge lies in the kz-kx plane around the kz axis and is the same for every ky. The DC
        coefficient is measured. The mask is symmetric under ``k -> -k`` (Hermitian-consistent).
    """
    nz, ny, nx = (int(s) for s in shape[-3:])
    t = math.tan(math.radians(float(tilt_range_deg))) if float(tilt_range_deg) < 90 else math.inf
    kz = torch.fft.fftfreq(nz, dtype=torch.float64).abs().view(-1, 1, 1)
    if _tilt_axis_index(tilt_axis) == 1:
        other = torch.fft.rfftfreq(nx, dtype=torch.float64).abs().view(1, 1, -1)
    else:
        other = torch.fft.fftfreq(ny, dtype=torch.float64).abs().view(1, -1, 1)
    if math.isinf(t):
        missing = torch.zeros((nz, ny, nx // 2 + 1), dtype=torch.bool)
    else:
        missing = (kz > t * other + 1e-12).expand(nz, ny, nx // 2 + 1).contiguous()
    return missing.to(device) if device is not None else missing


def measured_mask(
    shape: Sequence[int],
    tilt_range_deg: float | None = 60.0,
    tilt_axis: str | int = "Y",
    device: torch.device | str | None = None,
) -> torch.Tensor | None:
    """``~missing_wedge_mask(...)``, or None (= every coefficient) when ``tilt_range_deg`` is None."""
    if tilt_range_deg is None:
        return None
    return ~missing_wedge_mask(shape, tilt_range_deg, tilt_axis, device)


@functools.lru_cache(maxsize=16)
def _measured_cached(shape: tuple, tilt_range_deg, tilt_axis) -> torch.Tensor | None:
    return measured_mask(shape, tilt_range_deg, tilt_axis)


# ------------------------------------------------------------------ low-pass ball


class LowpassBall:
    """Radii of the low-pass ball of Bernoulli-block masks for one spatial shape.

    ``rho2`` is the squared frequency radius (cycles/voxel) of every half-spectrum coefficient;
    the ball holding a fraction ``f`` of the ``N`` half-spectrum coefficients is
    ``rho2 <= r2(f)`` with ``r2(f)`` the ``ceil(f N)``-th smallest ``rho2`` (ties included).
    """

    def __init__(self, shape: Sequence[int]):
        self.shape = tuple(int(s) for s in shape[-3:])
        self.rho2 = self._grid(self.shape)
        self.rho2_np = self.rho2.numpy()
        self.sorted = np.sort(self.rho2_np.ravel())
        self.n = self.sorted.size

    @staticmethod
    def _grid(shape) -> torch.Tensor:
        nz, ny, nx = shape
        fz = torch.fft.fftfreq(nz, dtype=torch.float64).pow(2).to(torch.float32).view(-1, 1, 1)
        fy = torch.fft.fftfreq(ny, dtype=torch.float64).pow(2).to(torch.float32).view(1, -1, 1)
        fx = torch.fft.rfftfreq(nx, dtype=torch.float64).pow(2).to(torch.float32).view(1, 1, -1)
        return (fz + fy) + fx  # float32 throughout: no float64 grid (pool-sized shapes)

    def radius2(self, fraction: float) -> float:
        idx = min(max(math.ceil(fraction * self.n) - 1, 0), self.n - 1)
        return float(self.sorted[idx])

    def ball(self, fraction: float, device=None) -> torch.Tensor:
        """Boolean ball ``(Z, Y, X//2+1)`` holding ``fraction`` of the coefficients, on ``device``."""
        dev = torch.device(device) if device is not None else self.rho2.device
        if dev != self.rho2.device:
            cached = getattr(self, "_on_device", None)
            if cached is None or cached.device != dev:
                self._on_device = cached = self.rho2.to(dev)
            return cached <= self.radius2(fraction)
        return self.rho2 <= self.radius2(fraction)

    def inclusion_probability(self, fraction_range: tuple[float, float]) -> np.ndarray:
        """``P(k in ball)`` for ``f ~ U(fraction_range)``, per half-spectrum coefficient (float64)."""
        f0, f1 = (float(v) for v in fraction_range)
        j0 = np.searchsorted(self.sorted, self.rho2_np, side="left").astype(np.float64)
        if f1 == f0:
            return (f0 * self.n > j0).astype(np.float64)
        return np.clip((f1 - j0 / self.n) / (f1 - f0), 0.0, 1.0)


@functools.lru_cache(maxsize=8)
def _lowpass_cached(shape: tuple) -> LowpassBall:
    return LowpassBall(shape)


def lowpass_ball(shape: Sequence[int]) -> LowpassBall:
    """The (cached, for up to 8 shapes of at most 16M coefficients) :class:`LowpassBall` of a shape."""
    shape = tuple(int(s) for s in shape[-3:])
    if np.prod(half_shape(shape)) > 16_000_000:
        return LowpassBall(shape)
    return _lowpass_cached(shape)


def _check_fraction_range(lowpass_fraction) -> tuple[float, float]:
    f0, f1 = (float(v) for v in lowpass_fraction)
    if not 0.0 <= f0 <= f1 <= 1.0:
        raise ValueError(f"lowpass_fraction must be (low, high) with 0 <= low <= high <= 1, got {lowpass_fraction}.")
    return f0, f1


# ------------------------------------------------------------------ masks


def bernoulli_fourier_mask(
    rng: RNG,
    shape: Sequence[int],
    keep_prob: float = 0.5,
    block_scale: int = 8,
    flip_prob: float = 0.1,
    lowpass_fraction: tuple[float, float] = (0.05, 0.10),
    device: torch.device | str | None = None,
    ball: LowpassBall | None = None,
) -> torch.Tensor:
    """One seed-method mask ``clip(ball + blocks, max=1) * sign`` on the half spectrum of ``shape``.

    Returns a float32 tensor ``(Z, Y, X//2 + 1)`` with values in {-1, 0, 1}, Hermitian-consistent.
    Draw order: ball fraction, block offsets and block grid, sign flips.
    """
    shape = tuple(int(s) for s in shape[-3:])
    hs = half_shape(shape)
    ball = ball if ball is not None else lowpass_ball(shape)
    f0, f1 = _check_fraction_range(lowpass_fraction)
    fraction = rand_uniform(rng, f0, f1)
    if isinstance(rng, torch.Generator):
        keep = hermitian_symmetrize(block_bool(rng, hs, keep_prob, block_scale, device), shape[2])
        flips = hermitian_symmetrize(rand_bool(rng, hs, flip_prob, device), shape[2])
        keep |= ball.ball(fraction, keep.device)
        kf = keep.to(torch.float32)
        return torch.where(flips, -kf, kf)
    # RandomState: numpy on the CPU (much faster than torch for these boolean ops), then move
    keep = hermitian_symmetrize(block_bool_np(rng, hs, keep_prob, block_scale), shape[2])
    flips = hermitian_symmetrize(rand_bool_np(rng, hs, flip_prob), shape[2])
    keep |= ball.rho2_np <= ball.radius2(fraction)
    mask = (keep.view(np.int8) * (1 - 2 * flips.view(np.int8))).astype(np.float32)
    out = torch.from_numpy(mask)
    return out.to(device) if device is not None else out


def expected_bernoulli_mask(
    shape: Sequence[int],
    keep_prob: float = 0.5,
    flip_prob: float = 0.1,
    lowpass_fraction: tuple[float, float] = (0.05, 0.10),
    quantized: bool = True,
) -> torch.Tensor:
    """``E[w]`` over Bernoulli-block masks: ``(1 - 2q) * (P_ball + (1 - P_ball) * p)``, float64 ``(Z, Y, X//2+1)``.

    ``quantized=True`` uses the probabilities RandomState draws realise (1/65536 steps).
    ``E[sample] = irfftn(F * expected_bernoulli_mask(...))`` (then cropped, for per-patch samples).
    """
    p = quantized_prob(keep_prob) if quantized else float(keep_prob)
    q = quantized_prob(flip_prob) if quantized else float(flip_prob)
    pb = lowpass_ball(shape).inclusion_probability(_check_fraction_range(lowpass_fraction))
    return torch.from_numpy((1.0 - 2.0 * q) * (pb + (1.0 - pb) * p))


def shared_lowpass_mask(shape: Sequence[int], fraction: float, device=None) -> torch.Tensor | None:
    """Bool half-spectrum mask of the low-frequency ball holding ``fraction`` of the coefficients
    (None when ``fraction`` is 0): coefficients a split gives to BOTH input and target.

    Why: a complementary split makes input and target orthogonal (disjoint spectra), so the
    network can only predict the target's half from structure. Sharing the lowest frequencies,
    where tomographic noise (ramp-weighted) is weakest and the signal strongest, gives the pair a
    common signal at the cost of sharing a little noise; the rest stays split (independent noise).
    Measured on the simulated default: see docs/denoising.md.
    """
    if not fraction:
        return None
    return lowpass_ball(tuple(int(v) for v in shape[-3:])).ball(float(fraction), device)


def split_fourier_mask(
    rng: RNG,
    shape: Sequence[int],
    keep_prob: float = 0.5,
    block_size: int = 1,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean split mask ``m`` on the half spectrum ``(Z, Y, X//2 + 1)`` (``True`` -> input half).

    Bernoulli(``keep_prob``) per coefficient (``block_size=1``) or per block of ``block_size``
    coefficients (random grid offset), Hermitian-consistent. Combine with the measured region
    through :func:`split_weights`.
    """
    shape = tuple(int(s) for s in shape[-3:])
    if isinstance(rng, torch.Generator):
        return hermitian_symmetrize(block_bool(rng, half_shape(shape), keep_prob, block_size, device), shape[2])
    m = torch.from_numpy(hermitian_symmetrize(block_bool_np(rng, half_shape(shape), keep_prob, block_size), shape[2]))
    return m.to(device) if device is not None else m


def split_scales(keep_prob: float, scaling: str = "energy") -> tuple[float, float]:
    """``(c_in, c_t)`` of the module docstring for the realised ``keep_prob``."""
    p = quantized_prob(keep_prob)
    if not 0.0 < p < 1.0:
        raise ValueError(f"split masks need 0 < keep_prob < 1, got {keep_prob}.")
    if scaling == "energy":
        return 1.0 / math.sqrt(p), 1.0 / math.sqrt(1.0 - p)
    if scaling == "mean":
        return 1.0 / p, 1.0 / (1.0 - p)
    if scaling == "none":
        return 1.0, 1.0
    raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}.")


def split_weights(
    m: torch.Tensor,
    measured: torch.Tensor | None,
    keep_prob: float = 0.5,
    scaling: str = "energy",
    keep_dc: bool = True,
    shared: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 spectral weights ``(w_in, w_t)`` of a split: ``c_in * m * W`` and ``c_t * (1-m) * W``.

    ``measured`` (``W``) is a bool mask broadcastable to ``m`` or None (all coefficients).
    With ``keep_dc`` the DC coefficient gets weight 1 in both. ``shared`` (bool, e.g. a
    low-frequency ball from :func:`shared_lowpass_mask`) marks coefficients that go, unscaled,
    to BOTH halves instead of being split.
    """
    c_in, c_t = split_scales(keep_prob, scaling)
    if measured is not None:
        measured = measured.to(m.device)
        a, b = m & measured, (~m) & measured
    else:
        a, b = m, ~m
    if shared is not None:
        shared = shared.to(m.device)
        a, b = a & ~shared, b & ~shared
    w_in = a.to(torch.float32) * c_in
    w_t = b.to(torch.float32) * c_t
    if shared is not None:
        w_in = w_in + shared.to(torch.float32)
        w_t = w_t + shared.to(torch.float32)
    if keep_dc:
        w_in[..., 0, 0, 0] = 1.0
        w_t[..., 0, 0, 0] = 1.0
    return w_in, w_t


def masked_irfft(spectrum: torch.Tensor, weights: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``irfftn(spectrum * weights, s=shape)`` over the last three axes (broadcasting).

    ``weights`` real (float or bool); a bool mask selects coefficients.
    """
    w = weights.to(torch.float32) if weights.dtype == torch.bool else weights
    return torch.fft.irfftn(spectrum * w, s=tuple(int(s) for s in shape[-3:]), dim=FFT_DIMS)


def _irfft_many(spectrum: torch.Tensor, weights: list[torch.Tensor], shape, batch_voxels: int = 2**21):
    """``[masked_irfft(spectrum, w, shape) for w in weights]``, batched for small volumes.

    A batched irfftn is slower than a loop for large volumes on CPU, and a loop of tiny FFTs is
    dominated by per-call overhead; batches hold about ``batch_voxels`` voxels.
    """
    numel = int(np.prod(shape)) * (spectrum.shape[0] if spectrum.ndim == 4 else 1)
    chunk = max(1, batch_voxels // max(numel, 1))
    out: list[torch.Tensor] = []
    for i in range(0, len(weights), chunk):
        ws = [w.to(spectrum.device) for w in weights[i : i + chunk]]
        if len(ws) == 1:
            out.append(masked_irfft(spectrum, ws[0], shape))
            continue
        w = torch.stack([v.to(torch.float32) if v.dtype == torch.bool else v for v in ws]).unsqueeze(1)
        out.extend(masked_irfft(spectrum.unsqueeze(0), w, shape).unbind(0))
    return out


def _int_tuple(value, name: str) -> tuple[int, int, int]:
    """An int, 3 ints, or a numpy/torch vector of 3 ints (e.g. from metadata) as a tuple."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value).reshape(-1)
    if arr.size == 1:
        return (int(arr[0]),) * 3
    if arr.size != 3:
        raise ValueError(f"{name} must be an int or 3 ints, got {value!r}.")
    return tuple(int(v) for v in arr)


def _crop(x: torch.Tensor, margin: Sequence[int]) -> torch.Tensor:
    if not any(margin):
        return x
    sl = [slice(None)] * (x.ndim - 3) + [slice(m, x.shape[x.ndim - 3 + i] - m) for i, m in enumerate(margin)]
    return x[tuple(sl)]
