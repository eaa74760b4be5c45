"""Denoising methods: one frozen settings class per method, which builds its pairing, sampler and inferers.

=====================  ==========================================================  =====================
name                   method                                                      bundle
=====================  ==========================================================  =====================
``recorrupted``        :class:`RecorruptedPairs` (default): Noise2Noise from        ``recorrupted_denoising``
                       recorrupted pairs with the estimated noise spectrum
``fourier``            :class:`FourierMasks`: Fourier-masked copies (splits,        ``fourier_denoising``
                       Bernoulli blocks, pools)
``real``               :class:`RealSpaceBernoulli`: Self2Self with dropout          ``real_denoising``
``halves``             :class:`EvenOddHalves`: Noise2Noise between two half         ``fourier_denoising`` +
                       tomograms (an upper bound, not from one tomogram)            ``halves.yaml``
=====================  ==========================================================  =====================

Adding a method: one module here (a :class:`DenoisingMethod` subclass decorated with
:func:`register_method`), one test file, and a short bundle config naming it in ``method_def``.
"""

from .base import METHODS, DenoisingMethod, MethodRecord, build_inferer, check_std_predictions, load_record, method_from_dict, register_method
from .fourier import FourierMasks
from .halves import EvenOddHalves
from .recorrupted import RecorruptedPairs
from .self2self import RealSpaceBernoulli

__all__ = [
    "METHODS",
    "DenoisingMethod",
    "EvenOddHalves",
    "FourierMasks",
    "MethodRecord",
    "RealSpaceBernoulli",
    "RecorruptedPairs",
    "build_inferer",
    "check_std_predictions",
    "load_record",
    "method_from_dict",
    "register_method",
]
