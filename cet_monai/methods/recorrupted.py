"""Noise2Noise from one tomogram with recorrupted pairs (the default method of ``cet-monai denoise``).

The tomogram's noise power spectrum P(k) is estimated from the tomogram itself
(:func:`~cet_monai.noise_spectrum.estimate_noise_spectrum`); each training pair is
``(y + a z, y - z / a)`` with ``z`` drawn per patch (plus margin) with that spectrum
(:class:`~cet_monai.transforms.RandRecorruptedPaird`), so input and target hold the same signal
with independent noise at every frequency. Inference averages the network over K draws of
``y + a z`` per sliding window (:class:`~cet_monai.inferers.samplers.RecorruptedSampler`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from cet_monai.errors import CetMonaiError
from cet_monai.methods.base import DenoisingMethod, _positive, _probability, register_method

__all__ = ["RecorruptedPairs"]


@register_method
@dataclass(frozen=True)
class RecorruptedPairs(DenoisingMethod):
    """Recorrupted pairs with the tomogram's estimated noise spectrum.

    Args:
        alpha: ``a``: input ``y + a z``, target ``y - z / a`` (> 0).
        spectrum_block: cube edge (voxels) of the noise-spectrum estimator.
        spectrum_quantile: per-frequency quantile over the estimator's cubes, in (0, 1).
        spectrum_equalize_levels: the estimator divides each cube by its own high-shell noise
            level first (noise whose strength varies across the volume; see
            :func:`~cet_monai.noise_spectrum.estimate_noise_spectrum`). Default on.
        local_noise_level: scale the drawn noise, patch by patch and window by window, to the
            noise that patch holds where noise dominates (the spectrum's shape is global, its
            strength local: noise varies across a lamella with its thickness). Default on.
        spectrum: the estimated :class:`~cet_monai.noise_spectrum.NoiseSpectrum`; set by
            :meth:`fitted_to` (``None`` before).
        patch_size, margin, pairs_per_patch, versions, passes, flip_versions: see
            :class:`DenoisingMethod` (``versions``: K noise draws per window at inference;
            ``flip_versions`` on by default here: each draw also goes through the network in its
            own wedge-keeping flip, +0.13 to +0.27 dB at the same cost, docs/denoising.md).
    """

    name = "recorrupted"
    fitted_fields = ("spectrum",)
    # checkpoints written before these settings existed were trained without them
    # (2026-12-03: both became the default after the benchmark table; docs/benchmarks.md)
    absent_in_old_records = {"spectrum_equalize_levels": False, "local_noise_level": False, "flip_versions": False}

    alpha: float = 1.0
    spectrum_block: int = 32
    spectrum_quantile: float = 0.2
    spectrum_equalize_levels: bool = True
    local_noise_level: bool = True
    flip_versions: bool = True
    spectrum: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not float(self.alpha) > 0:
            raise CetMonaiError(f"alpha must be > 0, got {self.alpha!r}")
        object.__setattr__(self, "alpha", float(self.alpha))
        object.__setattr__(self, "spectrum_block", _positive("spectrum_block", self.spectrum_block, 4))
        quantile = _probability("spectrum_quantile", self.spectrum_quantile)
        if quantile >= 1.0:
            raise CetMonaiError(f"spectrum_quantile must be below 1, got {quantile}")
        object.__setattr__(self, "spectrum_quantile", quantile)
        for name in ("spectrum_equalize_levels", "local_noise_level"):
            if not isinstance(getattr(self, name), bool):
                raise CetMonaiError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.spectrum is not None and isinstance(self.spectrum, dict):
            from cet_monai.noise_spectrum import NoiseSpectrum

            object.__setattr__(self, "spectrum", NoiseSpectrum.from_state_dict(self.spectrum))

    def fitted_to(self, source, seed: int = 0) -> RecorruptedPairs:
        """The method with the noise spectrum of ``source.image`` (kept if already estimated)."""
        if self.spectrum is not None:
            return self
        from cet_monai.noise_spectrum import estimate_noise_spectrum

        spectrum = estimate_noise_spectrum(source.image, block=self.spectrum_block, quantile=self.spectrum_quantile, seed=seed,
                                          equalize_levels=self.spectrum_equalize_levels)
        return dataclasses.replace(self, spectrum=spectrum)

    def write_diagnostics(self, output_dir, source) -> list:
        """``noise_spectrum.png``: the radial profile of the estimated spectrum (beside the true
        noise's when ``source`` has a clean reference)."""
        import os

        from cet_monai.visualize import save_noise_spectrum_plot

        return [save_noise_spectrum_plot(os.path.join(output_dir, "noise_spectrum.png"), self._spectrum(),
                                         reference=source.noise_reference())]

    def _spectrum(self):
        if self.spectrum is None:
            raise CetMonaiError("the recorrupted method needs its noise spectrum: call fitted_to(source) first")
        return self.spectrum

    def training_pairing(self, source=None, seed: int = 0):
        from cet_monai.transforms import RandRecorruptedPaird

        return RandRecorruptedPaird(keys="image", label_key="label", spectrum=self._spectrum(), alpha=self.alpha,
                                    num_samples=self.pairs_per_patch, local_level=self.local_noise_level)

    def sampler(self, num_versions: int | None = None):
        from cet_monai.inferers.samplers import RecorruptedSampler

        return RecorruptedSampler(spectrum=self._spectrum(), num_versions=self.versions if num_versions is None else int(num_versions),
                                  alpha=self.alpha, margin=self.margin, local_level=self.local_noise_level)

    def validation_versions(self) -> int:
        return 2  # fewer draws while training: validation only ranks the networks
