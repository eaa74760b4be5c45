"""Quality metrics against a clean reference, defined once for tests, validation, demo and benchmarks.

A self-supervised denoiser has no known intensity scale, so every comparison first fits the
prediction to the reference by least squares (``ref ~ a * pred + b``) and then measures:

* **PSNR** (dB) with MONAI's :class:`monai.metrics.PSNRMetric`, peak = data range of the
  reference (``max(ref) - min(ref)``).
* **SSIM** with MONAI's :class:`monai.metrics.SSIMMetric` in 3D (Gaussian window 11, sigma 1.5),
  ``data_range`` = data range of the reference.
* **FSC** (Fourier shell correlation) between two volumes, the resolution where it falls below
  0.5 and 0.143, in angstrom.

The best Gaussian filter (:func:`best_gaussian`) is chosen separately for each metric, so the
baseline is the strongest one a filter can give.

All volumes are (Z, Y, X) numpy arrays or torch tensors; the functions return Python floats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric, PSNRMetric, SSIMMetric
from scipy import ndimage

__all__ = [
    "fit_scale_offset",
    "psnr",
    "ssim",
    "quality",
    "fourier_shell_correlation",
    "fsc_resolution",
    "best_gaussian",
    "gaussian_risk",
    "gaussian_by_noise_spectrum",
    "GaussianBaseline",
    "FittedQualityMetric",
]


def _as_f64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def fit_scale_offset(pred, ref) -> np.ndarray:
    """Least-squares fit ``a * pred + b`` of ``pred`` to ``ref``; returns the fitted volume (float64).

    A constant ``pred`` cannot be scaled; it is fitted by its offset alone (``a = 0``).
    """
    p, r = _as_f64(pred), _as_f64(ref)
    if p.shape != r.shape:
        raise ValueError(f"prediction shape {p.shape} differs from reference shape {r.shape}")
    pc = p - p.mean()
    var = float((pc * pc).sum())
    a = float((pc * (r - r.mean())).sum()) / var if var > 0 else 0.0
    return a * pc + r.mean()


def _to_batch(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float32)[None, None]


def psnr(pred, ref, fit: bool = True) -> float:
    """PSNR in dB of ``pred`` against ``ref`` (both (Z, Y, X)), peak = data range of ``ref``."""
    r = _as_f64(ref)
    p = fit_scale_offset(pred, r) if fit else _as_f64(pred)
    metric = PSNRMetric(max_val=float(r.max() - r.min()))
    return float(metric(_to_batch(p), _to_batch(r)).item())


def ssim(pred, ref, fit: bool = True) -> float:
    """3D SSIM of ``pred`` against ``ref`` (Gaussian window 11, sigma 1.5, data range of ``ref``).

    Volumes with an axis thinner than 11 voxels use the largest odd window that fits.
    """
    r = _as_f64(ref)
    p = fit_scale_offset(pred, r) if fit else _as_f64(pred)
    # the standard 11-voxel window, shrunk (odd, >= 3) only for volumes thinner than that
    win = min(11, min(r.shape) - (1 - min(r.shape) % 2))
    if win < 3:
        raise ValueError(f"SSIM needs every axis >= 3 voxels, got {r.shape}")
    metric = SSIMMetric(spatial_dims=3, data_range=float(r.max() - r.min()), win_size=win)
    return float(metric(_to_batch(p), _to_batch(r)).item())


def quality(pred, ref) -> dict[str, float]:
    """``{"psnr": dB, "ssim": ...}`` of ``pred`` against ``ref`` after the scale/offset fit."""
    return {"psnr": psnr(pred, ref), "ssim": ssim(pred, ref)}


def fourier_shell_correlation(a, b, voxel_size: float = 1.0, n_shells: int | None = None):
    """Fourier shell correlation of two volumes of the same (Z, Y, X) shape.

    Frequencies are normalised per axis (so anisotropic boxes get spherical shells in units of
    cycles per voxel) and binned into ``n_shells`` shells up to Nyquist (default: half the
    smallest dimension).

    Returns:
        (spatial_frequency, fsc): two 1D arrays; frequency in 1/angstrom for ``voxel_size`` in A.
    """
    fa, fb = np.fft.rfftn(_as_f64(a)), np.fft.rfftn(_as_f64(b))
    shape = np.shape(a)
    n_shells = n_shells or min(shape) // 2
    freqs = np.meshgrid(
        np.fft.fftfreq(shape[0]), np.fft.fftfreq(shape[1]), np.fft.rfftfreq(shape[2]), indexing="ij"
    )
    radius = np.sqrt(sum(f * f for f in freqs))  # cycles / voxel, Nyquist = 0.5
    shell = np.minimum((radius / 0.5 * n_shells).astype(np.int64), n_shells)
    keep = shell < n_shells
    shell = shell[keep]
    cross = np.bincount(shell, (fa * np.conj(fb)).real[keep], minlength=n_shells)
    pa = np.bincount(shell, (np.abs(fa) ** 2)[keep], minlength=n_shells)
    pb = np.bincount(shell, (np.abs(fb) ** 2)[keep], minlength=n_shells)
    fsc = cross / np.sqrt(np.maximum(pa * pb, np.finfo(np.float64).tiny))
    frequency = (np.arange(n_shells) + 0.5) / n_shells * 0.5 / voxel_size
    return frequency, fsc


def fsc_resolution(frequency: np.ndarray, fsc: np.ndarray, threshold: float) -> float:
    """Resolution (1/frequency, angstrom) where ``fsc`` first falls below ``threshold``.

    Linear interpolation between the shells around the crossing; ``inf`` if the first shell is
    already below, the Nyquist resolution if the curve never falls below.
    """
    below = np.nonzero(fsc < threshold)[0]
    # the first shell (lowest frequencies) is skipped: it is dominated by the mean
    below = below[below > 0]
    if fsc[0] < threshold:
        return float("inf")
    if below.size == 0:
        return float(1.0 / frequency[-1])
    i = below[0]
    f0, f1, c0, c1 = frequency[i - 1], frequency[i], fsc[i - 1], fsc[i]
    f = f0 + (c0 - threshold) / (c0 - c1) * (f1 - f0) if c0 != c1 else f1
    return float(1.0 / f)


@dataclass
class GaussianBaseline:
    """The best Gaussian filter of a noisy volume for one metric."""

    metric: str
    sigma: float  # voxels
    value: float
    filtered: np.ndarray


def best_gaussian(noisy, ref, sigmas=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0)):
    """Gaussian filter of ``noisy`` at the sigma (voxels) that is best for PSNR and for SSIM, separately.

    Returns:
        ``{"psnr": GaussianBaseline, "ssim": GaussianBaseline}``.
    """
    x = _as_f64(noisy)
    best: dict[str, GaussianBaseline] = {}
    for sigma in sigmas:
        filtered = ndimage.gaussian_filter(x, sigma)
        for name, fn in (("psnr", psnr), ("ssim", ssim)):
            value = fn(filtered, ref)
            if name not in best or value > best[name].value:
                best[name] = GaussianBaseline(name, float(sigma), value, filtered.astype(np.float32))
    return best


def gaussian_risk(noisy, spectrum, sigmas) -> dict[float, float]:
    """Estimated mean squared error per voxel of a Gaussian filter of ``noisy`` at each sigma
    (voxels), from the noise power spectrum alone (no clean reference).

    For a filter with transfer function ``H(k)`` (that of ``scipy.ndimage.gaussian_filter``, about
    ``exp(-2 pi^2 sigma^2 |k|^2)``) and noise of
    spectrum ``P`` (:class:`cet_monai.noise_spectrum.NoiseSpectrum`, per voxel), the expected error
    at frequency ``k`` is ``|1 - H|^2 |X|^2 + |H|^2 P`` and ``|Y|^2 - P`` is an unbiased estimate of
    ``|X|^2`` (Stein's unbiased risk estimate for a linear filter with coloured noise). The
    held-out Fourier check cannot choose sigma: a linear filter is diagonal in Fourier space and
    scores zero there.
    """
    y = _as_f64(noisy)
    n = y.size
    power = np.abs(np.fft.rfftn(y)) ** 2 / n
    p = spectrum.on_grid(y.shape, rfft=True).astype(np.float64)
    from cet_monai.noise_spectrum import rfft_weights

    weight = rfft_weights(y.shape[2])  # rfft half spectrum: interior X columns stand for two coefficients
    risk = {}
    for sigma in sigmas:
        h = _gaussian_transfer(y.shape, float(sigma))
        risk[float(sigma)] = float((weight * ((1.0 - h) ** 2 * (power - p) + h * h * p)).sum() / n)
    return risk


def _gaussian_transfer(shape, sigma: float) -> np.ndarray:
    """Transfer function (rfft grid of ``shape``) of ``scipy.ndimage.gaussian_filter(x, sigma)``
    with periodic boundaries: the DFT of its sampled, truncated kernel per axis. Below sigma ~1
    the continuous ``exp(-2 pi^2 sigma^2 k^2)`` is far from the sampled kernel's response."""
    axes = []
    for i, n in enumerate(shape):
        delta = np.zeros(n)
        delta[0] = 1.0
        kernel = ndimage.gaussian_filter1d(delta, sigma, mode="wrap")
        t = np.fft.rfft(kernel).real if i == len(shape) - 1 else np.fft.fft(kernel).real
        axes.append(t)
    return axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]


def gaussian_by_noise_spectrum(noisy, spectrum=None, sigmas=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0)):
    """The Gaussian filter of ``noisy`` whose sigma minimises :func:`gaussian_risk`: a Gaussian
    baseline a user can run (no clean reference). ``spectrum`` defaults to
    :func:`cet_monai.noise_spectrum.estimate_noise_spectrum` of ``noisy``.

    Returns:
        a :class:`GaussianBaseline` with ``metric="risk"`` and ``value`` the estimated error.
    """
    if spectrum is None:
        from cet_monai.noise_spectrum import estimate_noise_spectrum

        spectrum = estimate_noise_spectrum(noisy)
    risk = gaussian_risk(noisy, spectrum, sigmas)
    sigma = min(risk, key=risk.get)
    filtered = ndimage.gaussian_filter(_as_f64(noisy), sigma).astype(np.float32)
    return GaussianBaseline("risk", sigma, risk[sigma], filtered)


class FittedQualityMetric(CumulativeIterationMetric):
    """PSNR or SSIM after the scale/offset fit, as a MONAI cumulative metric (for validation handlers).

    ``y_pred`` and ``y`` are (B, 1, Z, Y, X); each batch item is fitted and scored on its own.
    Wrap it in :class:`monai.handlers.IgniteMetricHandler` to use it in an evaluator.
    """

    def __init__(self, metric: str = "psnr", reduction: str = "mean") -> None:
        super().__init__()
        if metric not in ("psnr", "ssim"):
            raise ValueError(f"metric must be 'psnr' or 'ssim', got {metric!r}")
        self.metric = metric
        self.reduction = reduction

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None):  # type: ignore[override]
        fn = psnr if self.metric == "psnr" else ssim
        values = [fn(p[0], r[0]) for p, r in zip(y_pred, y)]
        return torch.tensor(values, dtype=torch.float32)[:, None]

    def aggregate(self, reduction: str | None = None):
        from monai.metrics.utils import do_metric_reduction

        data = self.get_buffer()
        value, _ = do_metric_reduction(data, reduction or self.reduction)
        return value
