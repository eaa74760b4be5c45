"""MONAI transforms for self-supervised denoising of one tomogram.

* Real space (Self2Self): :class:`RandBernoulliMask`, :class:`RandBernoulliMaskd`,
  :func:`bernoulli_versions` (with :class:`cet_monai.losses.MaskedMSELoss`).
* Fourier space (Noise2Noise from one tomogram): :class:`RandFourierPair`,
  :class:`RandFourierPaird` (modes ``"pool"``, ``"patch"``, ``"split"``),
  :class:`FourierSamplePool`, :func:`missing_wedge_mask`, :func:`fourier_versions`,
  :func:`combine_split_predictions`.
* Recorrupted pairs (Noise2Noise from one tomogram and its noise spectrum, the default):
  :class:`RandRecorruptedPair`, :class:`RandRecorruptedPaird`, :func:`colored_noise`,
  :func:`radial_lowpass` (the optional low-pass of the targets), with
  :mod:`cet_monai.noise_spectrum`; :class:`SelectNoiseSpectrumd` gives each item of several
  tomograms its own tomogram's spectrum.
* Shared: :class:`RandTomogramPatchd` (even patch coverage, specimen mask, margins) and
  :class:`RandWedgeFlipd` (wedge-preserving flips).

A typical training chain (pairing BEFORE flips; ``FlattenSequence`` merges the nested lists
of two multi-sample transforms)::

    Compose([
        RandTomogramPatchd("image", patch_size=96, num_samples=2, margin=16),
        RandFourierPaird("image", mode="split", num_samples=6),
        FlattenSequence(),
        RandWedgeFlipd(["image", "label"]),
    ])
"""

from .bernoulli import BernoulliVersions, RandBernoulliMask, RandBernoulliMaskd, bernoulli_mask, bernoulli_versions
from .fourier import (
    FourierVersions,
    LowpassBall,
    RandFourierPair,
    RandFourierPaird,
    combine_split_predictions,
    expected_bernoulli_mask,
    fourier_versions,
    masked_irfft,
    measured_mask,
    missing_wedge_mask,
    bernoulli_fourier_mask,
    split_fourier_mask,
    split_scales,
    split_weights,
)
from .patches import PATCH_MARGIN_KEY, PATCH_SIZE_KEY, PATCH_START_KEY, TOMOGRAM_INDEX_KEY, RandTomogramPatchd, tiling_positions
from .pool import FourierSamplePool
from .recorrupt import NoiseBank, RandRecorruptedPair, RandRecorruptedPaird, SelectNoiseSpectrumd, colored_noise, radial_lowpass
from .spatial import RandWedgeFlipd
from ._utils import hermitian_symmetrize, is_hermitian_consistent

__all__ = [
    "BernoulliVersions",
    "RandBernoulliMask",
    "RandBernoulliMaskd",
    "bernoulli_mask",
    "bernoulli_versions",
    "FourierVersions",
    "LowpassBall",
    "RandFourierPair",
    "RandFourierPaird",
    "combine_split_predictions",
    "expected_bernoulli_mask",
    "fourier_versions",
    "masked_irfft",
    "measured_mask",
    "missing_wedge_mask",
    "bernoulli_fourier_mask",
    "split_fourier_mask",
    "split_scales",
    "split_weights",
    "FourierSamplePool",
    "NoiseBank",
    "RandRecorruptedPair",
    "RandRecorruptedPaird",
    "SelectNoiseSpectrumd",
    "colored_noise",
    "radial_lowpass",
    "RandTomogramPatchd",
    "tiling_positions",
    "PATCH_START_KEY",
    "PATCH_MARGIN_KEY",
    "PATCH_SIZE_KEY",
    "TOMOGRAM_INDEX_KEY",
    "RandWedgeFlipd",
    "hermitian_symmetrize",
    "is_hermitian_consistent",
]
