"""The noise power spectrum P(k) of one tomogram, estimated from the tomogram alone.

Recorrupted pairs (:mod:`cet_monai.transforms.recorrupt`) need noise with the tomogram's own
spectrum. The estimator assumes the noise is stationary (the same statistics in every region of
the volume). A lamella whose thickness, and so its noise, changes across the field breaks that:
with the noise standard deviation 2x from one end to the other the estimate fell to 0.35-0.84 of
the true power (``docs/denoising.md``, fourth pass). ``equalize_levels`` divides each cube by
its own high-shell level first, which brings it back to 0.94-0.99; :func:`local_noise_level`
measures the level patch by patch. The noise is close to independent per Fourier coefficient, but its spectrum depends on the
reconstruction (weighted back-projection: a ramp; SIRT-like filters: a roll-off; binning,
CTF correction, the missing wedge): nothing here assumes a shape for it.

The estimator (:func:`estimate_noise_spectrum`):

1. cuts the tomogram into overlapping cubes (``block`` voxels, half overlap, at most
   ``max_blocks`` of them, chosen evenly), removes each cube's mean and applies a 3D Hann window;
2. takes each cube's periodogram ``|FFT(w x_b)|^2 / sum(w^2)`` and averages it over the
   ``3 x 3 x 3`` neighbouring frequencies (less variance per cube);
3. keeps, at every frequency separately, a low ``quantile`` over the cubes: the signal (membranes,
   particles) is strong in some cubes and weak in others, the noise is the same in all, so the
   quietest cubes at that frequency are the closest to noise alone;
4. divides by the bias of steps 1-3 measured on white noise put through exactly the same steps
   (a calibration run, not a constant), then (``calibration="colored"``, the default) measures
   that bias again, frequency by frequency, on noise drawn with this first estimate's own
   spectrum: the bias depends on the spectrum's shape (where power changes between neighbouring
   frequencies the quantile sits lower relative to the mean). The result is unbiased where noise
   dominates the quiet cubes;
5. finds where that holds: in a shell of frequencies where only noise varies, the spread of the
   cube powers (upper to lower quantile) is that of the white calibration noise; where signal
   varies from cube to cube it is wider. Below the lowest noise-dominated shell ``k0`` (the
   lowest frequencies, where even the quietest cubes hold signal and the quantile is too high)
   the estimate is capped by a ramp-like extension from ``k0``, direction by direction;
6. the cube grid is coarse (1/32 cycles/voxel, smoothed over 3 coefficients), too coarse for the
   sharp edges of the missing wedge. So the estimate is used only as the fraction of power that
   is noise (estimate / mean cube power, at most 1), which varies slowly with frequency, times the
   smoothed periodogram of a central crop of the tomogram (up to ``fine_size`` voxels per axis),
   which has the fine structure. Where noise dominates this is the tomogram's own spectrum.

``benchmarks/noise_spectrum.py`` measures the per-shell error on several reconstructions.

Units: ``P`` is per voxel and per Fourier coefficient, normalised so that the variance of noise
with spectrum ``P`` on any grid is the mean of ``P`` over that grid (``P = 1`` everywhere is
white noise of variance 1). Frequencies are in cycles per voxel (Nyquist 0.5) along each axis.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends
from scipy import ndimage

from cet_monai.errors import CetMonaiError
from cet_monai.io.utils import release_pages

__all__ = [
    "NoiseSpectrum",
    "estimate_noise_spectrum",
    "periodogram",
    "radial_profile",
    "local_noise_level",
    "rfft_weights",
    "EstimateNoiseSpectrum",
    "EstimateNoiseSpectrumd",
    "NOISE_SPECTRUM_KEY",
    "FINE_SIZE",
    "LOW_FREQUENCY_MODELS",
    "cylindrical_low_shells",
]

#: metadata key under which :class:`EstimateNoiseSpectrumd` stores the estimate
NOISE_SPECTRUM_KEY = "noise_spectrum"
#: default edge (voxels) of the central crop whose smoothed periodogram gives the spectrum's fine
#: structure; the stored spectrum has at most this many frequencies per axis (float64: up to 16 MiB)
FINE_SIZE = 128
#: what replaces the estimate below the lowest noise-dominated shell (:func:`estimate_noise_spectrum`)
LOW_FREQUENCY_MODELS = ("ramp", "cylindrical")


class NoiseSpectrum:
    """A noise power spectrum sampled on a ``(b, b, b)`` grid of frequencies, usable on any grid.

    Args:
        grid: ``(bz, by, bx)`` values of ``P`` at ``numpy.fft.fftfreq`` frequencies of the block
            (unshifted FFT order), per voxel (see the module docstring for units).
        info: how it was made (estimator settings), stored with it.

    :meth:`on_grid` interpolates it (trilinear, periodic in frequency) to the frequencies of
    another shape, e.g. a training patch with its margin or an inference window.
    """

    def __init__(self, grid, info: Mapping | None = None) -> None:
        grid = np.asarray(grid, dtype=np.float64)
        if grid.ndim != 3 or min(grid.shape) < 2:
            raise ValueError(f"noise spectrum grid must be 3D, got shape {grid.shape}")
        if not np.all(np.isfinite(grid)) or np.any(grid < 0):
            raise ValueError("noise spectrum must be finite and non-negative")
        self.grid = grid
        self.info = dict(info or {})
        self._cache: dict[tuple, np.ndarray] = {}

    @property
    def variance(self) -> float:
        """Per-voxel variance of noise with this spectrum."""
        return float(self.grid.mean())

    def on_grid(self, shape: Sequence[int], rfft: bool = True) -> np.ndarray:
        """``P`` at the FFT frequencies of ``shape`` (Z, Y, X): ``(Z, Y, X // 2 + 1)`` for an rfft grid
        (``rfft=True``), else ``(Z, Y, X)``; float32."""
        key = (tuple(int(s) for s in shape), bool(rfft))
        if key not in self._cache:
            values = _sample(self.grid, _frequencies(key[0], rfft))
            self._cache[key] = np.maximum(values, 0).astype(np.float32)
        return self._cache[key]

    def amplitude(self, shape: Sequence[int], device=None) -> torch.Tensor:
        """``sqrt(P)`` on the rfft grid of ``shape`` as a float32 tensor on ``device`` (cached: it is
        needed for every patch and window)."""
        key = ("amplitude", tuple(int(s) for s in shape), str(device))
        if key not in self._cache:
            self._cache[key] = torch.from_numpy(np.sqrt(self.on_grid(shape, rfft=True))).to(device)
        return self._cache[key]

    def scaled(self, factor: float) -> "NoiseSpectrum":
        return NoiseSpectrum(self.grid * float(factor), {**self.info, "scaled": float(factor) * self.info.get("scaled", 1.0)})

    def state_dict(self) -> dict:
        """Tensors and plain values only, so checkpoints load with ``torch.load(weights_only=True)``."""
        return {"grid": torch.as_tensor(self.grid, dtype=torch.float32), "info": {k: v for k, v in self.info.items() if isinstance(v, (int, float, str, bool))}}

    @classmethod
    def from_state_dict(cls, state: Mapping) -> "NoiseSpectrum":
        grid = state["grid"]
        return cls(grid.numpy() if isinstance(grid, torch.Tensor) else grid, state.get("info"))

    def load_state_dict(self, state: Mapping) -> None:
        other = NoiseSpectrum.from_state_dict(state)
        self.grid, self.info, self._cache = other.grid, other.info, {}


def _frequencies(shape: Sequence[int], rfft: bool = False) -> list[np.ndarray]:
    """Per-axis FFT frequencies (cycles/voxel) of a full (or rfft) grid of ``shape``, broadcast to 3D."""
    axes = [np.fft.fftfreq(n) for n in shape]
    if rfft:
        axes[-1] = np.fft.rfftfreq(shape[-1])
    return np.meshgrid(*axes, indexing="ij", sparse=True)


def _sample(grid: np.ndarray, freqs: Sequence[np.ndarray]) -> np.ndarray:
    """``grid`` (values at the FFT frequencies of its own shape) at frequencies ``freqs`` (cycles/voxel,
    one array per axis, broadcastable), by trilinear interpolation periodic in frequency."""
    freqs = np.broadcast_arrays(*freqs)
    coords = [np.mod(f * n, n) for f, n in zip(freqs, grid.shape)]
    return ndimage.map_coordinates(grid, coords, order=1, mode="grid-wrap")


def _hann(n: int) -> np.ndarray:
    """Hann window sampled at voxel centres (no zero ends, unlike ``scipy.signal.windows.hann``:
    every voxel of a cube contributes)."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * (np.arange(n) + 0.5) / n)


def _separable(windows: Sequence[np.ndarray]) -> np.ndarray:
    """The 3D window that is the outer product of three 1D windows."""
    return windows[0][:, None, None] * windows[1][None, :, None] * windows[2][None, None, :]


def _block_starts(n: int, block: int) -> np.ndarray:
    if n <= block:
        return np.array([0])
    count = int(math.ceil((n - block) / (block // 2))) + 1
    return np.unique(np.linspace(0, n - block, count).round().astype(np.int64))


def _cube_spectra(volume: np.ndarray, starts: np.ndarray, block: Sequence[int]) -> np.ndarray:
    """Smoothed, windowed periodograms ``(n, bz, by, bx)`` of the cubes at ``starts`` (full FFT grid)."""
    bz, by, bx = block
    window = _separable([_hann(n) for n in block])
    norm = float((window**2).sum())
    spectra = np.empty((len(starts), bz, by, bx), dtype=np.float32)
    for i, (z, y, x) in enumerate(starts):
        cube = np.asarray(volume[z : z + bz, y : y + by, x : x + bx], dtype=np.float64)
        release_pages(volume)  # a memory-mapped tomogram is not made resident cube by cube
        cube = (cube - cube.mean()) * window
        power = np.abs(np.fft.fftn(cube)) ** 2 / norm
        # averaging the 27 neighbouring frequencies (periodic in frequency) lowers the spread
        spectra[i] = ndimage.uniform_filter(power, size=3, mode="wrap")
    return spectra


#: lowest frequency (cycles/voxel) of the "highest shells", where signal is weakest in any
#: reconstruction: the band in which noise levels are compared (cube by cube in the estimator's
#: ``equalize_levels``, patch by patch in :func:`local_noise_level`)
HIGH_SHELLS = 0.375


def _equalize_levels(spectra: np.ndarray) -> np.ndarray:
    """Each cube's spectrum divided by its own mean power over the highest shells (``|k| >= 3/8``
    cycles/voxel, where signal is weakest in any reconstruction), times the median of those
    means: a noise amplitude that varies slowly across the volume no longer reads as signal."""
    k = np.sqrt(sum(f**2 for f in _frequencies(spectra.shape[1:])))
    band = k >= HIGH_SHELLS
    level = spectra[:, band].mean(axis=1).astype(np.float64)
    level = np.maximum(level, 1e-30)
    return (spectra * (np.median(level) / level)[:, None, None, None]).astype(np.float32)


def _quantiles(spectra: np.ndarray, quantile: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-frequency ``quantile`` and ``1 - quantile`` over cubes (float64)."""
    lo, hi = np.quantile(spectra, [quantile, 1.0 - quantile], axis=0)
    return lo.astype(np.float64), hi.astype(np.float64)


def _shell_index(shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """``|k|`` (cycles/voxel) of a full FFT grid and its shell index (shells 1/min(shape) wide)."""
    k = np.sqrt(sum(f**2 for f in _frequencies(shape)))
    return k, np.floor(k * min(shape)).astype(np.int64)


def estimate_noise_spectrum(
    volume,
    block: int = 32,
    quantile: float = 0.2,
    max_blocks: int = 1024,
    spread_tolerance: float = 1.25,
    low_frequency_exponent: float = 1.0,
    fine_size: int = FINE_SIZE,
    seed: int = 0,
    equalize_levels: bool = False,
    calibration: str = "colored",
    low_frequency_model: str = "ramp",
) -> NoiseSpectrum:
    """Estimate the noise power spectrum of one ``(Z, Y, X)`` tomogram (see the module docstring).

    Args:
        volume: the tomogram (numpy array, memmap or tensor), in the units the noise is wanted in
            (normally the normalised tomogram the network is trained on).
        block: cube edge in voxels (shrunk to the volume's size along thinner axes; at least 8).
        quantile: the per-frequency quantile over cubes (lower: less signal, more variance).
        max_blocks: most cubes used (evenly chosen), bounding time and memory for large tomograms.
        spread_tolerance: a shell of frequencies counts as noise-dominated when the spread of
            its cube powers (the ``1 - quantile`` to ``quantile`` ratio) is at most this many times
            the spread of white noise (signal varies from cube to cube, noise does not).
        low_frequency_exponent: below the lowest noise-dominated shell ``k0`` the estimate is
            capped, direction by direction, by its value at ``k0`` times ``(|k| / k0) **
            exponent``: ``1`` is the ramp of back-projection-type reconstructions (weighted
            back-projection, SIRT-like filters, binning); ``0`` caps at a flat extension. A cap
            that is too low lets a little noise through where the signal dominates anyway; one
            that is too high destroys signal, so the cap errs low.
        fine_size: edge (voxels) of the central crop whose smoothed periodogram gives the fine
            structure (step 6); ``0``: the estimate stays on the coarse ``block`` grid.
        seed: chooses the cubes when there are more than ``max_blocks``, and the calibration noise.
        equalize_levels: divide each cube's spectrum by its own level in the highest shells
            before the quantile and the spread test (the calibration goes through the same
            step), for noise whose amplitude varies across the volume (a lamella of varying
            thickness). Off by default.
        calibration: ``"colored"`` (default): the quantile's bias (step 4) is measured again,
            frequency by frequency, on noise drawn with the first estimate's own spectrum, since
            the bias depends on the spectrum's shape (the 3D Hann window and the 3x3x3 average
            mix neighbouring frequencies of unequal power, and the quantile of such a mixture
            sits lower relative to its mean than for white noise: on pure noise with a
            rolled-off ramp the white factor read 2-3 % low over 0.1-0.45 cycles/voxel, this
            one 1-2 %). ``"white"``: one bias from white noise (the estimator before 2026-12-06).
        low_frequency_model: what replaces the estimate below ``k0`` (step 5): ``"ramp"`` (default)
            the ramp cap above; ``"cylindrical"`` a model of single-axis tilt geometry, fitted
            where ``|k| >= k0`` (:func:`cylindrical_low_shells`; the tilt axis is Y), never
            above the uncapped estimate there (which holds signal, so it errs high).

    Returns:
        a :class:`NoiseSpectrum` on the fine grid (or the ``block`` grid); ``info`` records the
        settings, the calibration and ``k0``.
    """
    if isinstance(volume, torch.Tensor):
        volume = volume.detach().cpu().numpy()
    volume = np.asarray(volume) if not isinstance(volume, np.ndarray) else volume
    if volume.ndim == 4 and volume.shape[0] == 1:
        volume = volume[0]
    if volume.ndim != 3:
        raise CetMonaiError(f"noise spectrum: expected a (Z, Y, X) volume, got shape {volume.shape}")
    if not 0 < quantile < 0.5:
        raise CetMonaiError(f"noise spectrum: quantile must be in (0, 0.5), got {quantile}")
    if calibration not in ("white", "colored"):
        raise CetMonaiError(f"noise spectrum: calibration must be 'white' or 'colored', got {calibration!r}")
    if low_frequency_model not in LOW_FREQUENCY_MODELS:
        raise CetMonaiError(f"noise spectrum: low_frequency_model must be one of {', '.join(LOW_FREQUENCY_MODELS)}, got {low_frequency_model!r}")
    shape = tuple(min(int(block), n) for n in volume.shape)
    if min(shape) < 8:
        raise CetMonaiError(f"noise spectrum: the volume {volume.shape} is too thin (every axis needs >= 8 voxels)")
    rng = np.random.default_rng(seed)
    starts = np.stack(np.meshgrid(*[_block_starts(n, b) for n, b in zip(volume.shape, shape)], indexing="ij"), -1).reshape(-1, 3)
    if len(starts) > max_blocks:
        starts = starts[np.sort(rng.choice(len(starts), max_blocks, replace=False))]
    spectra = _cube_spectra(volume, starts, shape)
    if equalize_levels:
        spectra = _equalize_levels(spectra)
    lo, hi = _quantiles(spectra, quantile)
    mean = spectra.mean(axis=0).astype(np.float64)
    del spectra
    # calibration: the same statistics of white noise of variance 1 (whose true spectrum is 1),
    # from as many disjoint cubes as the tomogram gave (at least 64)
    n_cal = max(64, len(starts))
    white = rng.standard_normal((n_cal * shape[0], shape[1], shape[2])).astype(np.float32)
    cal_starts = np.stack([np.arange(n_cal) * shape[0], np.zeros(n_cal, int), np.zeros(n_cal, int)], -1)
    white_spectra = _cube_spectra(white, cal_starts, shape)
    if equalize_levels:
        white_spectra = _equalize_levels(white_spectra)
    wlo, whi = _quantiles(white_spectra, quantile)
    bias = float(np.median(wlo.reshape(-1)[1:]))  # DC is removed with each cube's mean
    white_spread = float(np.median((whi / np.maximum(wlo, 1e-30)).reshape(-1)[1:]))
    del white, white_spectra
    grid = lo / bias
    if calibration == "colored":
        grid = lo / _colored_bias(grid, n_cal, shape, quantile, equalize_levels, rng)
    # which shells are noise-dominated: the spread of cube powers is that of noise alone
    k, shell = _shell_index(shape)
    spread = (hi / np.maximum(lo, 1e-30)) / white_spread
    n_shells = min(shape) // 2
    shell_spread = np.array([np.median(spread[shell == i]) if np.any(shell == i) else np.inf for i in range(n_shells)])
    ok = shell_spread <= spread_tolerance
    first = next((i for i in range(1, n_shells - 1) if ok[i] and ok[i + 1]), None)
    k0 = first / min(shape) if first is not None and first > 1 else float("nan")
    edge, excess_floor = _signal_edge(mean, grid, shell, n_shells, len(starts))
    uncapped = grid
    grid = _low_frequencies(grid, k0, low_frequency_exponent, low_frequency_model)
    grid[0, 0, 0] = _dc_fill(grid)
    info = {"estimator": "block_quantile", "block": int(block), "quantile": float(quantile), "max_blocks": int(max_blocks),
            "n_blocks": int(len(starts)), "calibration_bias": bias, "white_spread": white_spread,
            "spread_tolerance": float(spread_tolerance), "low_frequency_exponent": float(low_frequency_exponent),
            "k0": k0, "signal_edge": edge, "excess_floor": excess_floor, "seed": int(seed), "fine_size": int(fine_size),
            "equalize_levels": bool(equalize_levels), "calibration": calibration, "low_frequency_model": low_frequency_model}
    if fine_size:
        # step 6: the fine structure of the spectrum (the missing wedge's sharp edges, the tilt
        # sampling) at the resolution of a crop of the whole tomogram; the cubes give only the
        # fraction of its power that is noise, which varies slowly with frequency
        noise_fraction = np.clip((grid if low_frequency_model == "ramp" else uncapped) / np.maximum(mean, 1e-30), 0.0, 1.0)
        noise_fraction[0, 0, 0] = _dc_fill(noise_fraction)
        fine = _fine_periodogram(volume, int(fine_size))
        fraction = _sample(noise_fraction, _frequencies(fine.shape))
        grid = _low_frequencies(fine * fraction, k0, low_frequency_exponent, low_frequency_model)
        grid[0, 0, 0] = _dc_fill(grid)
    return NoiseSpectrum(grid, info)


def _colored_bias(spectrum: np.ndarray, n_cal: int, block: Sequence[int], quantile: float, equalize_levels: bool,
                  rng: np.random.Generator) -> np.ndarray:
    """Per-frequency ratio of the cube quantile to the mean cube power for noise whose spectrum
    is ``spectrum`` (on the cube grid): ``n_cal`` cubes of periodic noise with that spectrum
    (white noise times its square root in Fourier space, drawn in chunks) go through the same
    steps as the tomogram's cubes (window, 3x3x3 average, optional level equalisation); the ratio
    is averaged over neighbouring frequencies (5x5x5) to tame its sampling noise."""
    amplitude = np.sqrt(np.maximum(spectrum[..., : block[2] // 2 + 1], 0.0))  # the rfft half of the full grid
    spectra = np.empty((n_cal,) + tuple(block), dtype=np.float32)
    for i in range(0, n_cal, 64):
        n = min(64, n_cal - i)
        white = rng.standard_normal((n,) + tuple(block))
        cubes = np.fft.irfftn(np.fft.rfftn(white, axes=(1, 2, 3)) * amplitude, s=tuple(block), axes=(1, 2, 3)).astype(np.float32)
        # stacked along Z, as the white calibration's cubes are: one call for the chunk
        starts = np.stack([np.arange(n) * block[0], np.zeros(n, int), np.zeros(n, int)], -1)
        spectra[i : i + n] = _cube_spectra(cubes.reshape(n * block[0], block[1], block[2]), starts, block)
    if equalize_levels:
        spectra = _equalize_levels(spectra)
    lo, _ = _quantiles(spectra, quantile)
    ratio = lo / np.maximum(spectra.mean(axis=0).astype(np.float64), 1e-30)
    ratio = ndimage.uniform_filter(ratio, size=5, mode="wrap")
    ratio[0, 0, 0] = _dc_fill(ratio)
    return np.maximum(ratio, 1e-6)


#: the scatter of a noise-only shell's excess power (below) times the square root of the number of
#: cubes: 0.005 with the 147 cubes of a 64 x 128 x 128 tomogram, 0.015 with the 18 of a 48 x 64 x 64
#: one (pure coloured noise and simulated tomograms; docs/denoising.md, fifteenth pass)
EXCESS_SCATTER = 0.06
#: a shell holds measurable signal when its excess stands this many scatters above the highest
#: shells' (:func:`_signal_edge`), and never less than :data:`SIGNAL_MARGIN`
SIGNAL_SCATTERS = 4.0
SIGNAL_MARGIN = 0.02


def _signal_edge(mean: np.ndarray, noise: np.ndarray, shell: np.ndarray, n_shells: int, n_blocks: int) -> tuple[float, float]:
    """Where the tomogram's measurable signal ends: the upper edge (cycles/voxel) of the highest
    shell of the cube grid whose excess power ``sum(mean) / sum(noise) - 1`` (the cubes' mean
    periodogram over the calibrated noise estimate) stands at least ``max(SIGNAL_MARGIN,
    SIGNAL_SCATTERS * EXCESS_SCATTER / sqrt(n_blocks))`` (0.02 from 144 cubes up) above the
    median excess of the highest shells (``|k| >= HIGH_SHELLS``: noise alone in any
    reconstruction, so their excess is the estimate's own offset, e.g. from noise that varies
    across the volume). Returns ``(edge, that median)``; the edge is 0.5 when even the highest
    shells below Nyquist hold signal by this test, and ``nan`` when no shell does.

    Signal weaker than the margin times the noise is not measurable here: shells above the
    edge may still hold a little (on simulated weighted back-projection at SNR 0.05, signal/noise
    0.01-0.03 in the shell above the edge)."""
    flat = shell.reshape(-1)
    count = np.bincount(flat, minlength=n_shells)[:n_shells]
    power = np.bincount(flat, weights=mean.reshape(-1), minlength=n_shells)[:n_shells]
    noise_power = np.bincount(flat, weights=noise.reshape(-1), minlength=n_shells)[:n_shells]
    excess = np.where(count > 0, power / np.maximum(noise_power, 1e-30) - 1.0, np.nan)
    excess[0] = np.nan  # the DC shell: each cube's mean is removed
    size = min(mean.shape)  # shell i spans [i, i + 1) / size cycles/voxel (_shell_index)
    measured = np.isfinite(excess)
    high = measured & (np.arange(n_shells) / size >= HIGH_SHELLS)
    if not high.any():
        return float("nan"), float("nan")
    offset = float(np.median(excess[high]))
    margin = max(SIGNAL_MARGIN, SIGNAL_SCATTERS * EXCESS_SCATTER / math.sqrt(max(int(n_blocks), 1)))
    above = np.flatnonzero(measured & (excess - offset >= margin))
    return (min(0.5, (int(above.max()) + 1) / size) if above.size else float("nan")), offset


def _low_frequencies(grid: np.ndarray, k0: float, exponent: float, model: str) -> np.ndarray:
    """Step 5: the estimate below ``k0`` replaced by the ``model`` (``"ramp"``: :func:`_cap_low_frequencies`)."""
    if model == "cylindrical":
        return cylindrical_low_shells(grid, k0)
    return _cap_low_frequencies(grid, k0, exponent)


def cylindrical_low_shells(grid: np.ndarray, k0: float, angle_step: float = 2.0, iterations: int = 10) -> np.ndarray:
    """Below ``|k| = k0``, a full-FFT-grid spectrum replaced by a model of single-axis tilt geometry
    fitted where ``|k| >= k0``, and capped by the spectrum itself.

    In a tomogram reconstructed from a tilt series about the Y axis, noise reaches a frequency
    through the projections: its power depends on the distance from the tilt axis ``|k_xz|`` and
    the angle about it (the tilt range and the missing wedge), and on ``|k_y|`` along the axis
    (the detector's own noise spectrum). The model is separable in those coordinates, ``log P =
    A(|k_xz|, angle) + B(|k_y|)``, fitted by alternating least squares over bins of one grid
    step in ``|k_xz|`` and ``|k_y|`` and ``angle_step`` degrees, on the frequencies at or above
    ``k0``: a low ``|k_xz|`` is seen at high ``|k_y|`` (and the reverse), where the whole
    frequency is high and noise dominates. The ramp cap reads 0.4-0.7 of the noise below ``k0``
    on weighted back-projection (it extends each direction's value at ``k0`` linearly to 0); this
    model 0.7-0.9 (``docs/denoising.md``, tenth and eleventh passes). Below ``k0`` the result is
    at most ``grid`` (the block quantile holds signal there, so it can only err high). A CTF or
    a 2D filter of the projections that is not separable in ``k_y`` and the in-plane direction
    is fitted only approximately.

    Args:
        grid: ``(Z, Y, X)`` power at the full FFT frequencies of its own shape (Y: the tilt axis).
        k0: the lowest noise-dominated shell (cycles/voxel); NaN: ``grid`` is returned unchanged.
        angle_step: angular bin (degrees) about the tilt axis.
        iterations: rounds of the alternating least squares.
    """
    if not np.isfinite(k0) or k0 <= 0:
        return grid
    fz, fy, fx = np.broadcast_arrays(*_frequencies(grid.shape))
    r = np.hypot(fz, fx)
    k = np.hypot(r, fy)
    low = (k < k0) & (k > 0)
    trusted = (k >= k0).ravel()
    if not low.any() or not trusted.any():
        return grid
    step = 1.0 / max(grid.shape)
    n_angles = max(1, int(round(180.0 / float(angle_step))))
    angle = np.rint(np.mod(np.arctan2(fz, fx), np.pi) / np.pi * n_angles).astype(int) % n_angles
    cell = (np.rint(r / step).astype(int) * n_angles + angle).ravel()
    ky = np.rint(np.abs(fy) / step).astype(int).ravel()
    positive = grid[grid > 0]
    floor = 1e-6 * float(np.median(positive)) if positive.size else 1e-30
    logp = np.log(np.maximum(grid, floor)).ravel()
    a, b = np.zeros(int(cell.max()) + 1), np.zeros(int(ky.max()) + 1)
    cell_t, ky_t, logp_t = cell[trusted], ky[trusted], logp[trusted]
    cell_n = np.maximum(np.bincount(cell_t, minlength=a.size), 1)
    ky_n = np.maximum(np.bincount(ky_t, minlength=b.size), 1)
    for _ in range(int(iterations)):  # the two additive terms, each the mean residual of its bins
        a = np.bincount(cell_t, logp_t - b[ky_t], a.size) / cell_n
        b = np.bincount(ky_t, logp_t - a[cell_t], b.size) / ky_n
    out = grid.copy()
    idx = np.nonzero(low.ravel())[0]
    out.reshape(-1)[idx] = np.minimum(np.exp(a[cell[idx]] + b[ky[idx]]), grid.reshape(-1)[idx])
    return out


def _cap_low_frequencies(grid: np.ndarray, k0: float, exponent: float) -> np.ndarray:
    """Below ``|k| = k0`` cap a full-FFT-grid spectrum by its value at radius ``k0`` in the same
    direction (periodic trilinear interpolation) times ``(|k| / k0) ** exponent`` (step 5)."""
    if not np.isfinite(k0):
        return grid
    freqs = np.broadcast_arrays(*_frequencies(grid.shape))
    k = np.sqrt(sum(f**2 for f in freqs))
    low = (k < k0) & (k > 0)
    if not low.any():
        return grid
    idx = np.nonzero(low)
    at_k0 = _sample(grid, [f[idx] * (k0 / k[idx]) for f in freqs])
    out = grid.copy()
    out[idx] = np.minimum(grid[idx], at_k0 * (k[idx] / k0) ** float(exponent))
    return out


def _dc_fill(grid: np.ndarray) -> float:
    """The mean of the six neighbours of the DC coefficient (cube means were removed, so DC itself says nothing)."""
    return float(np.mean([grid[(1, 0, 0)], grid[(-1, 0, 0)], grid[(0, 1, 0)], grid[(0, -1, 0)], grid[(0, 0, 1)], grid[(0, 0, -1)]]))


def _fine_periodogram(volume: np.ndarray, size: int) -> np.ndarray:
    """Smoothed periodogram of a central crop (at most ``size`` voxels per axis), Tukey-windowed so the
    crop's edges add no spurious high-frequency power, in :class:`NoiseSpectrum` units."""
    from scipy.signal.windows import tukey

    crop = tuple(slice((n - min(n, size)) // 2, (n - min(n, size)) // 2 + min(n, size)) for n in volume.shape)
    x = np.asarray(volume[crop], dtype=np.float64)
    w = _separable([tukey(n, 0.2) for n in x.shape])
    x = (x - x.mean()) * w
    power = np.abs(np.fft.fftn(x)) ** 2 / float((w**2).sum())
    return ndimage.uniform_filter(power, size=3, mode="wrap")


def periodogram(volume) -> np.ndarray:
    """``|FFT(x - mean)|^2 / n_voxels`` of a whole ``(Z, Y, X)`` volume (full grid), in the units of
    :class:`NoiseSpectrum` (the true spectrum of a simulation's noise, for comparison)."""
    x = np.asarray(volume, dtype=np.float64)
    return np.abs(np.fft.fftn(x - x.mean())) ** 2 / x.size


def radial_profile(power: np.ndarray, n_shells: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Mean of a full-grid ``power`` spectrum in ``n_shells`` shells of ``|k|`` up to Nyquist.

    Returns ``(shell centres in cycles/voxel, means)``; frequencies normalised per axis.
    """
    k = np.sqrt(sum(f**2 for f in _frequencies(power.shape)))
    edges = np.linspace(0, 0.5, n_shells + 1)
    idx = np.digitize(k.reshape(-1), edges) - 1
    ok = (idx >= 0) & (idx < n_shells)
    sums = np.bincount(idx[ok], weights=power.reshape(-1)[ok], minlength=n_shells)
    counts = np.bincount(idx[ok], minlength=n_shells)
    return 0.5 * (edges[1:] + edges[:-1]), sums / np.maximum(counts, 1)


def rfft_weights(last_size: int) -> np.ndarray:
    """How many coefficients of the full spectrum each column of an rfft half spectrum stands for,
    ``(last_size // 2 + 1,)`` float64: 1 for ``kx = 0`` (and Nyquist when ``last_size`` is even),
    2 for the others. Sums over a half spectrum times these are sums over the full one."""
    weight = np.full(int(last_size) // 2 + 1, 2.0)
    weight[0] = 1.0
    if int(last_size) % 2 == 0:
        weight[-1] = 1.0
    return weight


def local_noise_level(patches: torch.Tensor, spectrum: NoiseSpectrum) -> torch.Tensor:
    """How much stronger the noise is in each patch than ``spectrum`` says: the ratio of the
    patch's own power to the spectrum's, over the frequencies where noise dominates.

    A lamella is not equally thick everywhere, so its noise is not equally strong everywhere,
    while the estimated spectrum is one for the whole tomogram. The band is the highest shells,
    ``|k| >= max(k0, 3/8)`` cycles/voxel (:data:`HIGH_SHELLS`; ``k0`` is the estimator's lowest
    noise-dominated shell, ``spectrum.info["k0"]``; no such shell, or a spectrum without it: the
    ratio is 1); the patch's mean is removed and a 3D Hann window applied, so
    ``E |FFT(w n)|^2 = sum(w^2) P`` for noise ``n`` with a smooth spectrum ``P``.
    Why not all of ``|k| >= k0``: signal above ``k0`` is weak but not absent, and it read as
    noise where structure is dense. On two real microtubule subtomograms the ratio over
    ``|k| >= k0`` ranged 1.00-1.32 (10th-90th percentile over patches) and the patches holding
    the microtubule got more noise drawn, which cost 0.02 of held-out correlation; over
    ``|k| >= 3/8`` it ranged 0.94-1.16 and 0.98-1.07 (``docs/denoising.md``, fifth pass).

    Args:
        patches: ``(..., Z, Y, X)`` tensor (any device), in the spectrum's units.
        spectrum: the tomogram's :class:`NoiseSpectrum`.

    Returns:
        float32 tensor of shape ``patches.shape[:-3]`` on the patches' device (1 for noise
        exactly as the spectrum says, 4 for twice its amplitude).
    """
    k0 = float(spectrum.info.get("k0", float("nan")))
    shape = tuple(int(n) for n in patches.shape[-3:])
    if not math.isfinite(k0) or k0 <= 0:
        return torch.ones(patches.shape[:-3], dtype=torch.float32, device=patches.device)
    key = ("local_level", shape, str(patches.device))
    if key not in spectrum._cache:
        window = _separable([_hann(n) for n in shape])
        k = np.sqrt(sum(f**2 for f in _frequencies(shape, rfft=True)))
        weight = (k >= max(k0, HIGH_SHELLS)) * rfft_weights(shape[-1])
        expected = float((weight * spectrum.on_grid(shape, rfft=True)).sum() * (window**2).sum())
        if not expected > 0:
            return torch.ones(patches.shape[:-3], dtype=torch.float32, device=patches.device)
        spectrum._cache[key] = (torch.from_numpy(window.astype(np.float32)).to(patches.device),
                                torch.from_numpy((weight / expected).astype(np.float32)).to(patches.device))
    window, weight = spectrum._cache[key]
    x = patches.float()
    x = (x - x.mean(dim=(-3, -2, -1), keepdim=True)) * window
    power = torch.fft.rfftn(x, dim=(-3, -2, -1)).abs().square()
    return (power * weight).sum(dim=(-3, -2, -1))


class EstimateNoiseSpectrum(Transform):
    """Array transform: ``(C, Z, Y, X)`` or ``(Z, Y, X)`` tomogram -> its :class:`NoiseSpectrum`
    (:func:`estimate_noise_spectrum`, same arguments; the first channel is used).
    ``equalize_levels=True`` gives the estimate the recorrupted method's default uses."""

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, block: int = 32, quantile: float = 0.2, max_blocks: int = 1024, spread_tolerance: float = 1.25,
                 low_frequency_exponent: float = 1.0, fine_size: int = FINE_SIZE, seed: int = 0, equalize_levels: bool = False,
                 calibration: str = "colored", low_frequency_model: str = "ramp") -> None:
        self.kwargs = {"block": block, "quantile": quantile, "max_blocks": max_blocks, "spread_tolerance": spread_tolerance,
                       "low_frequency_exponent": low_frequency_exponent, "fine_size": fine_size, "seed": seed,
                       "equalize_levels": bool(equalize_levels), "calibration": calibration, "low_frequency_model": low_frequency_model}

    def __call__(self, img) -> NoiseSpectrum:
        x = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        if x.ndim == 4:
            x = x[0]
        return estimate_noise_spectrum(x, **self.kwargs)


class EstimateNoiseSpectrumd(MapTransform):
    """Dictionary transform: stores the :class:`NoiseSpectrum` of ``d[key]`` as ``d[spectrum_key]``
    (default ``"noise_spectrum"``), for :class:`~cet_monai.transforms.RandRecorruptedPaird`."""

    backend = EstimateNoiseSpectrum.backend

    def __init__(self, keys: KeysCollection, spectrum_key: str = NOISE_SPECTRUM_KEY, allow_missing_keys: bool = False, **kwargs) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spectrum_key = spectrum_key
        self.estimator = EstimateNoiseSpectrum(**kwargs)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.spectrum_key] = self.estimator(d[key])
        return d
