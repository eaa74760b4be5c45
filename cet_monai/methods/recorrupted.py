"""Noise2Noise from one tomogram with recorrupted pairs (the default method of ``cet-monai denoise``).

The tomogram's noise power spectrum P(k) is estimated from the tomogram itself
(:func:`~cet_monai.noise_spectrum.estimate_noise_spectrum`); each training pair is
``(y + a z, y - z / a)`` with ``z`` drawn per patch (plus margin) with that spectrum
(:class:`~cet_monai.transforms.RandRecorruptedPaird`), so input and target hold the same signal
with independent noise at every frequency. Inference averages the network over K draws of
``y + a z`` per sliding window (:class:`~cet_monai.inferers.samplers.RecorruptedSampler`).

One model on several tomograms (a :class:`~cet_monai.engines.TomogramCollection`): each
tomogram's patches are paired with noise of ITS OWN spectrum, estimated from it
(:meth:`RecorruptedPairs.fitted_to`; :class:`~cet_monai.transforms.SelectNoiseSpectrumd` hands
each item its tomogram's), and inference estimates the spectrum of each tomogram it denoises
in the same way (:class:`~cet_monai.inferers.PerTomogramInferer`). Those spectra are not stored
in the checkpoints (up to 16 MiB each, for any number of tomograms): the record keeps the
estimator's seed, and the estimator is deterministic, so a tomogram of the training set is
denoised with the very spectrum it was trained with, and any other with its own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

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
        spectrum_calibration: how the estimator's quantile bias is calibrated: ``"colored"``
            (default), on noise with the first estimate's spectrum, frequency by frequency;
            ``"white"``, one factor from white noise (before 2026-12-06).
        local_noise_level: scale the drawn noise, patch by patch and window by window, to the
            noise that patch holds where noise dominates (the spectrum's shape is global, its
            strength local: noise varies across a lamella with its thickness). Default on.
        equalize_noise_level: with ``local_noise_level``, divide each patch and window by the
            square root of its noise level instead of scaling the drawn noise (the output multiplied
            back): the network sees noise of one strength everywhere
            (:class:`~cet_monai.transforms.RandRecorruptedPair`'s ``equalize_level``).
        spectrum_low_frequencies: what the estimator puts below its lowest noise-dominated shell:
            ``"ramp"`` (a linear extension, direction by direction) or ``"cylindrical"`` (a
            model of single-axis tilt geometry fitted above it, the tilt axis along Y;
            :func:`~cet_monai.noise_spectrum.cylindrical_low_shells`).
        noise_bank: ``0``: each patch's (and window's) noise drawn on its own grid; ``B > 0``: cut
            at random places from ``B`` noise volumes drawn once on the spectrum's own grid (up
            to 128 voxels per axis, whatever the tomogram's size;
            :class:`~cet_monai.transforms.NoiseBank`), which keeps the spectrum's fine structure;
            for several tomograms ``max(2, B // n)`` volumes per tomogram.
        target_lowpass: ``"auto"`` (default), a frequency in cycles/voxel above which the training
            targets are low-pass filtered (raised-cosine roll-off 0.05 cycles/voxel wide;
            :func:`~cet_monai.transforms.radial_lowpass`), or ``None`` (off): where one tomogram
            holds no measurable signal the target is noise only (training only; the inference
            is unchanged). ``"auto"`` sets the frequency from the tomogram
            (:meth:`lowpass_cutoff`): one estimator shell above where its measurable signal ends
            (the spectrum's ``signal_edge``), and off when the noise spectrum is rolled off at
            high frequencies (a SIRT-like or apodised reconstruction, where the filter only
            took signal away).
        noise_weighted_loss: the training loss weights each Fourier coefficient of the error by the
            estimated noise power there to this power (:class:`~cet_monai.losses.NoiseWeightedMSELoss`;
            default 0.5, the noise's amplitude spectrum; ``0``: the plain mean squared error).
        spectrum: the estimated :class:`~cet_monai.noise_spectrum.NoiseSpectrum`; set by
            :meth:`fitted_to` (``None`` before, and for several tomograms).
        spectrum_seed: set by :meth:`fitted_to` when fitted on several tomograms: each one's
            spectrum is estimated from it, with this seed, in training and again at inference
            (``None`` for one tomogram: its spectrum is ``spectrum``).
        spectra: the spectra of the tomograms fitted on (in the order of the collection's
            sources); a live run's, never recorded.
        patch_size, margin, pairs_per_patch, versions, passes, flip_versions: see
            :class:`DenoisingMethod` (``versions``: K noise draws per window at inference;
            ``flip_versions`` on by default here: each draw also goes through the network in its
            own wedge-keeping flip: +0.06 to +0.57 dB on sixteen networks at the same cost, docs/denoising.md).
    """

    name = "recorrupted"
    fitted_fields = ("spectrum", "spectrum_seed", "spectra")
    # checkpoints written before these settings existed were trained without them
    # (2026-12-03: both became the default after the benchmark table; docs/benchmarks.md)
    absent_in_old_records = {"spectrum_equalize_levels": False, "local_noise_level": False, "flip_versions": False,
                             "spectrum_calibration": "white", "spectrum_low_frequencies": "ramp", "noise_bank": 0,
                             "noise_weighted_loss": 0.0, "equalize_noise_level": False,
                             "target_lowpass": None}

    alpha: float = 1.0
    spectrum_block: int = 32
    spectrum_quantile: float = 0.2
    spectrum_equalize_levels: bool = True
    spectrum_calibration: str = "colored"
    local_noise_level: bool = True
    equalize_noise_level: bool = False
    spectrum_low_frequencies: str = "ramp"
    noise_bank: int = 0
    noise_weighted_loss: float = 0.5
    target_lowpass: float | str | None = "auto"
    flip_versions: bool = True
    spectrum: Any = field(default=None, compare=False, repr=False)
    spectrum_seed: int | None = None
    spectra: tuple = field(default=(), compare=False, repr=False, metadata={"recorded": False})

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
        if self.spectrum_calibration not in ("white", "colored"):
            raise CetMonaiError(f"spectrum_calibration must be 'white' or 'colored', got {self.spectrum_calibration!r}")
        from cet_monai.noise_spectrum import LOW_FREQUENCY_MODELS

        if self.spectrum_low_frequencies not in LOW_FREQUENCY_MODELS:
            raise CetMonaiError(f"spectrum_low_frequencies must be one of {', '.join(LOW_FREQUENCY_MODELS)}, "
                                f"got {self.spectrum_low_frequencies!r}")
        object.__setattr__(self, "noise_bank", _positive("noise_bank", self.noise_bank, 0))
        if isinstance(self.noise_weighted_loss, bool) or not isinstance(self.noise_weighted_loss, (int, float)) \
                or not -2.0 <= float(self.noise_weighted_loss) <= 2.0:
            raise CetMonaiError(f"noise_weighted_loss must be a number in [-2, 2] (0: plain MSE), got {self.noise_weighted_loss!r}")
        object.__setattr__(self, "noise_weighted_loss", float(self.noise_weighted_loss))
        if self.target_lowpass is not None and self.target_lowpass != "auto":
            if isinstance(self.target_lowpass, bool) or not isinstance(self.target_lowpass, (int, float)) \
                    or not 0.0 < float(self.target_lowpass) <= 0.87:
                raise CetMonaiError("target_lowpass must be null (off), 'auto' (set from the tomogram) or a frequency in "
                                    f"(0, 0.87] cycles/voxel (0.5: Nyquist along an axis), got {self.target_lowpass!r}")
            object.__setattr__(self, "target_lowpass", float(self.target_lowpass))
        for name in ("spectrum_equalize_levels", "local_noise_level", "equalize_noise_level"):
            if not isinstance(getattr(self, name), bool):
                raise CetMonaiError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.equalize_noise_level and not self.local_noise_level:
            raise CetMonaiError("equalize_noise_level divides each patch by its local noise level: it needs local_noise_level: true")
        if self.spectrum_seed is not None:
            object.__setattr__(self, "spectrum_seed", int(self.spectrum_seed))
        object.__setattr__(self, "spectra", tuple(self.spectra))
        if self.spectrum is not None and isinstance(self.spectrum, dict):
            from cet_monai.noise_spectrum import NoiseSpectrum

            object.__setattr__(self, "spectrum", NoiseSpectrum.from_state_dict(self.spectrum))

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.spectrum_seed is None:
            del out["spectrum_seed"]  # one tomogram: the record is what it always was
        return out

    @property
    def per_tomogram(self) -> bool:
        """Fitted on several tomograms: each has its own spectrum, estimated from it."""
        return self.spectrum_seed is not None

    def estimate_spectrum(self, image, seed: int = 0):
        """The noise spectrum of one normalised ``(1, Z, Y, X)`` (or ``(Z, Y, X)``) tomogram, with
        this method's estimator settings (:func:`~cet_monai.noise_spectrum.estimate_noise_spectrum`)."""
        from cet_monai.noise_spectrum import estimate_noise_spectrum

        return estimate_noise_spectrum(image, block=self.spectrum_block, quantile=self.spectrum_quantile, seed=int(seed),
                                       equalize_levels=self.spectrum_equalize_levels, calibration=self.spectrum_calibration,
                                       low_frequency_model=self.spectrum_low_frequencies)

    def fitted_to(self, source, seed: int = 0) -> RecorruptedPairs:
        """The method with the noise spectrum of ``source.image`` (kept if already estimated), or
        for several tomograms (a :class:`~cet_monai.engines.TomogramCollection`) with each one's own
        (:attr:`spectra`, in the order of its sources; :attr:`spectrum_seed` records the seed)."""
        from cet_monai.methods.base import holds_several_tomograms

        if holds_several_tomograms(source):
            seed = seed if self.spectrum_seed is None else self.spectrum_seed
            return dataclasses.replace(self, spectrum=None, spectrum_seed=int(seed),
                                       spectra=tuple(self.estimate_spectrum(s.image, seed) for s in source.sources))
        if self.spectrum is not None:
            return self
        return dataclasses.replace(self, spectrum=self.estimate_spectrum(source.image, seed))

    def with_spectrum(self, spectrum) -> RecorruptedPairs:
        """The one-tomogram method with ``spectrum`` (e.g. one of :attr:`spectra`), same settings."""
        return dataclasses.replace(self, spectrum=spectrum, spectrum_seed=None, spectra=())

    def write_diagnostics(self, output_dir, source) -> list:
        """``noise_spectrum.png``: the radial profile of the estimated spectrum (beside the true
        noise's when ``source`` has a clean reference); for several tomograms one
        ``noise_spectrum_<tomogram>.png`` each."""
        import os

        from cet_monai.engines import volume_stem
        from cet_monai.visualize import save_noise_spectrum_plot

        if self.per_tomogram:
            return [save_noise_spectrum_plot(os.path.join(output_dir, f"noise_spectrum_{volume_stem(name)}.png"), spectrum)
                    for name, spectrum in zip(source.names, self.spectra)]
        return [save_noise_spectrum_plot(os.path.join(output_dir, "noise_spectrum.png"), self._spectrum(),
                                         reference=source.noise_reference())]

    def _spectrum(self):
        if self.per_tomogram:
            raise CetMonaiError("fitted on several tomograms, the recorrupted method has one spectrum per tomogram: "
                                "use with_spectrum(spectrum), or inferer(), which estimates each tomogram's")
        if self.spectrum is None:
            raise CetMonaiError("the recorrupted method needs its noise spectrum: call fitted_to(source) first")
        return self.spectrum

    def _tomogram_spectra(self) -> tuple:
        """The spectra of the tomograms fitted on (several tomograms), or a clear error before fitting."""
        if not self.spectra:
            raise CetMonaiError("the recorrupted method needs the spectra of its tomograms: call fitted_to(collection) first")
        return self.spectra

    def training_pairing(self, source=None, seed: int = 0):
        """Recorrupted pairs with the tomogram's spectrum; for several tomograms, each item's own
        (:class:`~cet_monai.transforms.SelectNoiseSpectrumd` by its ``tomogram_index``, then the
        pairing, which reads it from the item)."""
        from monai.transforms import Compose

        from cet_monai.transforms import RandRecorruptedPaird, SelectNoiseSpectrumd

        options = {"alpha": self.alpha, "num_samples": self.pairs_per_patch, "local_level": self.local_noise_level, "noise_bank": self.noise_bank,
                   "equalize_level": self.equalize_noise_level, "target_lowpass": self.lowpass_cutoff()}
        if self.per_tomogram:
            spectra = self._tomogram_spectra()
            if self.noise_bank:  # one bank per tomogram: the same memory in all as one tomogram's
                options["noise_bank"] = max(2, self.noise_bank // len(spectra))
            return Compose([SelectNoiseSpectrumd(spectra), RandRecorruptedPaird(keys="image", label_key="label", **options)])
        return RandRecorruptedPaird(keys="image", label_key="label", spectrum=self._spectrum(), **options)

    def lowpass_cutoff(self) -> float | None:
        """The frequency (cycles/voxel) above which the training targets are low-pass filtered, or
        ``None`` (off): :attr:`target_lowpass` as given, or for ``"auto"`` set from the fitted
        spectrum (several tomograms: the highest of their cutoffs, off if any is off):

        * where the tomogram's measurable signal ends (the spectrum's ``signal_edge``: the highest
          shell whose power stands measurably above the noise estimate,
          :func:`~cet_monai.noise_spectrum.estimate_noise_spectrum`) plus one shell of the
          estimator (``1 / spectrum_block``), since a cutoff too low costs far more than one too
          high (weighted back-projection, SNR 0.05, weighted loss: 0.25 cycles/voxel -0.86 dB
          against 0.30, 0.45 level with 0.35; ``docs/denoising.md``, fifteenth pass);
        * off when the noise spectrum is rolled off at high frequencies, its mean power in the
          highest shells (``|k| >= 0.375``) below half its strongest shell's (SIRT-like and
          apodised reconstructions): there the filter lost at every cutoff tried (0.20 to 0.35:
          -0.56 to -0.24 dB against none), since the little noise it removes from the targets
          carried little weight and the faint signal it removed was still learnable.

        The edge is measured against the highest shells, taken as noise only; where they hold
        signal (binned data: at 20 A per voxel a membrane's bilayer spacing sits at Nyquist) it
        comes out low (0.19-0.22 cycles/voxel on such simulations, against 0.28-0.31 at 10 A).
        Measured there, the cutoff it set was level with no low-pass on the mean of two seeds
        (-0.20 and +0.30 dB; ``docs/denoising.md``, sixteenth pass); ``target_lowpass: null``
        turns it off.
        """
        if self.target_lowpass != "auto":
            return self.target_lowpass
        spectra = list(self._tomogram_spectra()) if self.per_tomogram else [self._spectrum()]
        cutoffs = [_auto_lowpass(spectrum, self.spectrum_block) for spectrum in spectra]
        return None if any(c is None for c in cutoffs) else max(cutoffs)

    def training_loss(self):
        """The training loss: :class:`~cet_monai.losses.NoiseWeightedMSELoss` with the estimated
        spectrum (several tomograms: all their spectra, each by its shape) and
        :attr:`noise_weighted_loss` as its exponent; ``torch.nn.MSELoss`` when that is 0."""
        if self.noise_weighted_loss == 0.0:
            return torch.nn.MSELoss()
        from cet_monai.losses import NoiseWeightedMSELoss

        spectra = list(self._tomogram_spectra()) if self.per_tomogram else self._spectrum()
        return NoiseWeightedMSELoss(spectra, exponent=self.noise_weighted_loss)

    def sampler(self, num_versions: int | None = None):
        from cet_monai.inferers.samplers import RecorruptedSampler

        return RecorruptedSampler(spectrum=self._spectrum(), num_versions=self.versions if num_versions is None else int(num_versions),
                                  alpha=self.alpha, margin=self.margin, local_level=self.local_noise_level, noise_bank=self.noise_bank,
                                  equalize_level=self.equalize_noise_level)

    def validation_versions(self) -> int:
        return 2  # fewer draws while training: validation only ranks the networks

    def reference_inferer(self):
        """As :meth:`DenoisingMethod.reference_inferer`; several tomograms: with the first one's
        spectrum (the training previews show the first tomogram,
        :meth:`~cet_monai.engines.TomogramCollection.central_crop`)."""
        if self.per_tomogram and self.spectra:
            return self.with_spectrum(self.spectra[0]).reference_inferer()
        return super().reference_inferer()

    def inferer(self, **options):
        """As :meth:`DenoisingMethod.inferer`; fitted on several tomograms: a
        :class:`~cet_monai.inferers.PerTomogramInferer` that estimates the noise spectrum of each
        tomogram it denoises (with :attr:`spectrum_seed`, as in training) and runs this
        inferer with it."""
        if not self.per_tomogram:
            return super().inferer(**options)
        from cet_monai.inferers import PerTomogramInferer
        from cet_monai.methods.base import check_std_predictions

        if options.get("return_std"):
            passes = self.passes if options.get("passes") is None else int(options["passes"])
            check_std_predictions(self.versions if options.get("versions") is None else int(options["versions"]), passes)
        return PerTomogramInferer(lambda tomogram: self.with_spectrum(self.estimate_spectrum(tomogram, self.spectrum_seed)).inferer(**options))


#: the noise spectrum counts as rolled off when its mean power in the highest shells (``|k| >=
#: HIGH_SHELLS``) is below this fraction of its strongest shell's (:meth:`RecorruptedPairs.lowpass_cutoff`)
ROLLED_OFF = 0.5


def _auto_lowpass(spectrum, block: int) -> float | None:
    """The ``"auto"`` target low-pass cutoff for one tomogram's spectrum (see
    :meth:`RecorruptedPairs.lowpass_cutoff`)."""
    import math

    import numpy as np

    from cet_monai.noise_spectrum import HIGH_SHELLS, radial_profile

    edge = spectrum.info.get("signal_edge")
    if edge is None:
        raise CetMonaiError("target_lowpass 'auto' needs the spectrum's signal edge, which spectra estimated before "
                            "2026-12-07 do not record: estimate the spectrum again (train without --resume)")
    if not math.isfinite(float(edge)):
        return None  # no shell measurably above the noise: nothing tells where the signal ends
    centres, power = radial_profile(spectrum.grid, n_shells=16)
    if power[centres >= HIGH_SHELLS].mean() < ROLLED_OFF * power.max():
        return None
    return min(0.87, float(edge) + 1.0 / int(block))
