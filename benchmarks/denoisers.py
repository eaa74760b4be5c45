"""The denoisers compared by ``benchmarks/quality.py`` and ``benchmarks/speed.py``, behind one call.

Every method takes a ``(Z, Y, X)`` float32 tomogram and returns ``(estimate, info)``: the
denoised ``(Z, Y, X)`` float32 volume and a dict with ``train_s`` / ``infer_s`` (wall-clock
seconds of fitting and of producing the estimate) and method-specific notes.

Methods (:data:`METHODS`):

* ``raw``: the input itself.
* ``gaussian``: ``scipy.ndimage.gaussian_filter`` at ``sigma`` voxels (the quality benchmark
  picks the sigma with the clean reference, i.e. the best a Gaussian filter can do).
* ``bm4d``: BM4D (``bm4d`` on PyPI, optional; default ``np`` profile, ``num_threads`` = torch's)
  with a white-noise ``sigma_psd`` estimated from the data by the MAD of the finest 3D Haar
  detail band (:func:`mad_sigma`).
* ``topaz``: Topaz-Denoise 3D with its pretrained ``unet-3d-10a`` weights (``topaz-em``,
  optional), loaded from the installed package file; the whole tomogram is normalised to zero
  mean and unit variance as ``topaz.denoise.Denoise3D`` does, and denoised with MONAI's sliding
  window (roi up to 128^3, overlap 0.25, Gaussian blending).
* ``recorrupted``: our default, recorrupted pairs with the noise spectrum estimated from the
  tomogram (``bundles/recorrupted_denoising``; its own default budget is 800 iterations, the
  benchmarks pass theirs).
* ``s2s``: our real-space Self2Self bundle (``bundles/real_denoising``).
* ``f2f-split`` / ``f2f-patch`` / ``f2f-pool``: our Fourier bundle (``bundles/fourier_denoising``)
  with ``sampling`` = ``split`` (complementary masks with the shared low-frequency ball, the
  default), ``patch`` (the seed method's Fourier masks drawn per patch) and ``pool`` (the seed
  method's pool of whole-tomogram masks).
* ``n2n``: Noise2Noise between the even/odd half tomograms with the Fourier bundle's network
  and budget (``bundles/fourier_denoising/configs/halves.yaml``): the cryoCARE-style upper
  bound; needs the halves.

Peers that are not importable raise :class:`NotInstalled`; the benchmarks report them as such.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from scipy import ndimage

METHODS = ("raw", "gaussian", "bm4d", "topaz", "recorrupted", "s2s", "f2f-split", "f2f-patch", "f2f-pool", "n2n")
TRAINED = ("recorrupted", "s2s", "f2f-split", "f2f-patch", "f2f-pool", "n2n")
#: bundle overrides of the trained methods (besides ``iterations`` and ``seed``)
BUNDLE = {
    "recorrupted": ("recorrupted", {}),
    "s2s": ("real", {}),
    "f2f-split": ("fourier", {"sampling": "split"}),
    "f2f-patch": ("fourier", {"sampling": "patch"}),
    # pool sampling could not validate without a clean reference when docs/benchmarks.md was measured
    # (fixed since in cet_monai.engines.TomogramSource.validation_items); the validation region stays
    # switched off here so the documented numbers reproduce: it trains on the whole tomogram. Early
    # stopping (patience 5 epochs) cannot act within 100 iterations (4 epochs) anyway.
    "f2f-pool": ("fourier", {"sampling": "pool", "pool_kind": "masks", "source#validation_fraction": 0.0}),
    "n2n": ("n2n", {}),
}


class NotInstalled(RuntimeError):
    """An optional peer (``bm4d``, ``topaz-em``) cannot be imported."""


def set_threads(n: int) -> None:
    """One knob for the CPU threads of torch (and of BLAS/OpenMP children via the environment)."""
    torch.set_num_threads(int(n))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(int(n))


def mad_sigma(volume: np.ndarray) -> float:
    """Noise standard deviation by the median absolute deviation of the finest 3D Haar band.

    The HHH detail coefficient of each 2x2x2 block (the alternating-sign sum over the block
    divided by sqrt(8)) is, for white noise of standard deviation ``s``, Gaussian with standard
    deviation ``s``; structure barely reaches it, so ``median(|d|) / 0.6745`` estimates ``s``.
    Tomographic noise is not white (ramp-weighted, missing wedge): this is the level of its
    highest frequencies, which over-states the average level.
    """
    v = np.asarray(volume, np.float64)
    z, y, x = (s - s % 2 for s in v.shape)
    b = v[:z, :y, :x].reshape(z // 2, 2, y // 2, 2, x // 2, 2)
    sign = np.array([1.0, -1.0])
    w = sign[:, None, None] * sign[None, :, None] * sign[None, None, :]
    d = np.einsum("aibjck,ijk->abc", b, w) / np.sqrt(8.0)
    return float(np.median(np.abs(d)) / 0.6745)


def _gaussian(noisy, sigma: float = 1.5, **_):
    t0 = time.perf_counter()
    out = ndimage.gaussian_filter(np.asarray(noisy, np.float32), float(sigma))
    return out, {"train_s": 0.0, "infer_s": time.perf_counter() - t0, "sigma": float(sigma)}


def _bm4d(noisy, **_):
    try:
        import bm4d
    except ImportError as e:  # optional extra
        raise NotInstalled("bm4d") from e
    profile = bm4d.BM4DProfile()  # the default 'np' profile, on the benchmark's thread count
    profile.num_threads = torch.get_num_threads()
    t0 = time.perf_counter()
    x = np.asarray(noisy, np.float32)
    mu, sd = float(x.mean()), float(x.std())
    z = (x - mu) / sd
    sigma = mad_sigma(z)
    out = np.asarray(bm4d.bm4d(z, sigma, profile), np.float32) * sd + mu
    return out, {"train_s": 0.0, "infer_s": time.perf_counter() - t0, "sigma_psd": sigma}


_TOPAZ_FILE = "pretrained/denoise/unet-3d-10a-v0.2.4.sav"


def topaz_network():
    """``topaz.denoising.models.UDenoiseNet3D(base_width=7)`` with the packaged unet-3d-10a weights."""
    try:
        import topaz
        from topaz.denoising.models import UDenoiseNet3D
    except ImportError as e:  # optional extra
        raise NotInstalled("topaz-em") from e
    path = os.path.join(os.path.dirname(topaz.__file__), _TOPAZ_FILE)
    if not os.path.exists(path):
        raise NotInstalled(f"topaz-em without {_TOPAZ_FILE}")
    net = UDenoiseNet3D(base_width=7)
    state = torch.load(path, map_location="cpu", weights_only=False)
    net.load_state_dict(state if isinstance(state, dict) else state.state_dict())
    return net.eval()


def _topaz(noisy, roi: int = 128, **_):
    from monai.inferers import sliding_window_inference

    net = topaz_network()
    t0 = time.perf_counter()
    x = np.asarray(noisy, np.float32)
    mu, sd = float(x.mean()), float(x.std())
    t = torch.from_numpy((x - mu) / sd)[None, None]
    size = tuple(min(roi, s) for s in x.shape)
    with torch.no_grad():
        y = sliding_window_inference(t, size, 1, net, overlap=0.25, mode="gaussian")
    out = y[0, 0].numpy() * sd + mu
    return out.astype(np.float32), {"train_s": 0.0, "infer_s": time.perf_counter() - t0}


def _trained(name, noisy, even=None, odd=None, iterations: int = 100, seed: int = 0, **_):
    """Train the bundle of ``name`` on ``noisy`` and denoise the whole tomogram
    (:func:`cet_monai.workflows.denoise_volume`), timing the two steps separately."""
    from cet_monai.workflows import denoise_volume

    method, overrides = BUNDLE[name]
    if iterations < 25:  # below the bundles' epoch lengths (25 / 50), one epoch of exactly `iterations`
        overrides = {**overrides, "epoch_length": int(iterations)}
    timings: dict = {}
    out = denoise_volume(noisy, method=method, seed=seed, even=even, odd=odd, timings=timings,
                         iterations=int(iterations), **overrides)
    return np.asarray(out, np.float32), {**timings, "iterations": int(iterations)}


def denoise(name: str, noisy: np.ndarray, **kwargs):
    """Run method ``name`` on ``noisy`` ``(Z, Y, X)``; returns ``(estimate, info)`` (module docstring).

    ``kwargs``: ``sigma`` (gaussian), ``even`` / ``odd`` (n2n), ``iterations`` / ``seed`` (trained).
    """
    if name == "raw":
        return np.asarray(noisy, np.float32), {"train_s": 0.0, "infer_s": 0.0}
    if name == "gaussian":
        return _gaussian(noisy, **kwargs)
    if name == "bm4d":
        return _bm4d(noisy, **kwargs)
    if name == "topaz":
        return _topaz(noisy, **kwargs)
    if name in TRAINED:
        return _trained(name, noisy, **kwargs)
    raise ValueError(f"unknown method {name!r}; choose from {METHODS}")
