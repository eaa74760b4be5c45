"""The input kinds of the segmentation experiment: how a simulated tomogram is prepared before
it is segmented (raw, Gaussian-filtered, or denoised by one of this package's methods).

An input kind is a callable ``prepare(sim) -> volume`` that takes a
:class:`cet_monai.data.SimulatedTomogram` and returns a ``(Z, Y, X)`` float32 volume on any
intensity scale (the experiment normalises each prepared volume with its own statistics). After a
call, ``prepare.info`` holds what the table should report (e.g. the chosen ``sigma``, voxels).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

__all__ = [
    "KIND_LABELS",
    "DENOISER_KINDS",
    "ALL_KINDS",
    "denoiser_status",
    "PrepareRaw",
    "PrepareGaussian",
    "PrepareGaussianFromSpectrum",
    "PrepareDenoised",
    "input_kinds",
]

#: display names of the input kinds, in table order
KIND_LABELS = {
    "raw": "raw",
    "gaussian": "Gaussian, oracle sigma (best PSNR against the clean volume)",
    "gaussian_sure": "Gaussian, sigma from the estimated noise spectrum",
    "recorrupted": "recorrupted pairs (default denoiser)",
    "s2s": "real-space Bernoulli masks (Self2Self)",
    "f2f": "Fourier-space Bernoulli masks (pool)",
    "n2n": "even/odd Noise2Noise (cryoCARE-like upper bound)",
}
#: input kinds that need :func:`cet_monai.workflows.denoise_volume`, and the method each uses
DENOISER_KINDS = {"recorrupted": "recorrupted", "s2s": "real", "f2f": "fourier", "n2n": "n2n"}
ALL_KINDS = tuple(KIND_LABELS)


def denoiser_status() -> tuple[bool, str]:
    """``(available, reason)`` of :func:`cet_monai.workflows.denoise_volume`."""
    try:
        from cet_monai.workflows import denoise_volume  # noqa: F401
    except Exception as err:  # ImportError, or an error inside a module still being written
        return False, f"cet_monai.workflows.denoise_volume is not importable ({type(err).__name__}: {err})"
    return True, ""


class PrepareRaw:
    """The noisy tomogram as it is."""

    def __call__(self, sim) -> np.ndarray:
        self.info = {}
        return np.asarray(sim.noisy, dtype=np.float32)


class PrepareGaussian:
    """The best Gaussian filter by PSNR against the clean reconstruction (an oracle choice of
    sigma, per tomogram: no user can make it)."""

    def __init__(self, sigmas: Sequence[float]):
        self.sigmas = tuple(sigmas)

    def __call__(self, sim) -> np.ndarray:
        from cet_monai.metrics import best_gaussian

        best = best_gaussian(sim.noisy, sim.clean, sigmas=self.sigmas)["psnr"]
        self.info = {"sigma": best.sigma}
        return best.filtered.astype(np.float32)


class PrepareGaussianFromSpectrum:
    """The Gaussian filter whose sigma minimises the error estimated from the tomogram's own noise
    spectrum (:func:`cet_monai.metrics.gaussian_by_noise_spectrum`; no clean reference): the
    Gaussian baseline a user can run."""

    def __init__(self, sigmas: Sequence[float]):
        self.sigmas = tuple(sigmas)

    def __call__(self, sim) -> np.ndarray:
        from cet_monai.metrics import gaussian_by_noise_spectrum

        best = gaussian_by_noise_spectrum(sim.noisy, sigmas=self.sigmas)
        self.info = {"sigma": best.sigma}
        return best.filtered.astype(np.float32)


class PrepareDenoised:
    """A single-tomogram denoiser of this package (:func:`cet_monai.workflows.denoise_volume`),
    trained on each tomogram separately; ``method="n2n"`` trains on the even/odd halves."""

    def __init__(self, method: str, seed: int = 0, overrides: Mapping | None = None):
        self.method = method
        self.seed = int(seed)
        self.overrides = dict(overrides or {})

    def __call__(self, sim) -> np.ndarray:
        from cet_monai.workflows import denoise_volume

        kwargs = dict(self.overrides)
        if self.method == "n2n":
            kwargs.update(even=sim.even, odd=sim.odd)
        self.info = {"method": self.method, **{k: v for k, v in self.overrides.items() if np.isscalar(v)}}
        out = denoise_volume(np.asarray(sim.noisy, dtype=np.float32), method=self.method, seed=self.seed, **kwargs)
        return np.asarray(out, dtype=np.float32)


def input_kinds(settings, seed: int = 0) -> tuple[dict[str, Callable], dict[str, str]]:
    """The input kinds of ``settings`` (an :class:`~cet_monai.segmentation.experiment.ExperimentSettings`)
    as ``{name: prepare(sim) -> volume}``, and ``{name: why unavailable}``.

    Only the kinds in ``settings.kinds`` are returned; the denoiser kinds are unavailable when
    :func:`cet_monai.workflows.denoise_volume` cannot be imported.
    """
    ok, reason = denoiser_status()
    kinds: dict[str, Callable] = {}
    unavailable: dict[str, str] = {}
    for name in settings.kinds:
        if name == "raw":
            kinds[name] = PrepareRaw()
        elif name == "gaussian":
            kinds[name] = PrepareGaussian(settings.gaussian_sigmas)
        elif name == "gaussian_sure":
            kinds[name] = PrepareGaussianFromSpectrum(settings.gaussian_sigmas)
        elif ok:
            kinds[name] = PrepareDenoised(DENOISER_KINDS[name], seed=seed, overrides=settings.denoiser_overrides(name))
        else:
            unavailable[name] = reason
    return kinds, unavailable
