"""Simulated cryo-ET data with ground truth: the project's embedded default tomogram and the
benchmark behind its reported numbers.

* :func:`simulate_tomogram` -> :class:`SimulatedTomogram` (noisy, clean, phantom, membrane
  labels, even/odd half-dose tomograms); :func:`simulate_to_folder` also writes them as MRC.
* :mod:`cet_monai.data.phantom`: the specimen (bilayer vesicles and sheets, complexes).
* :mod:`cet_monai.data.tomography`: tilt series, CTF, weighted back-projection.
"""

from .phantom import Phantom, bilayer_profile, make_phantom
from .simulate import (
    OUTPUT_FILES,
    SimulatedTomogram,
    SimulationOptionError,
    neighbour_correlation,
    simulate_to_folder,
    simulate_tomogram,
    wedge_energy_ratio,
)
from .tomography import CTFParams, tilt_angles

__all__ = [
    "CTFParams",
    "OUTPUT_FILES",
    "Phantom",
    "SimulatedTomogram",
    "SimulationOptionError",
    "bilayer_profile",
    "make_phantom",
    "neighbour_correlation",
    "simulate_to_folder",
    "simulate_tomogram",
    "tilt_angles",
    "wedge_energy_ratio",
]
