"""Inference over whole tomograms: sliding windows, input versions and Monte-Carlo dropout."""

from .dropout import DropoutPassState, is_dropout, mc_dropout
from .mc_inferer import IdentitySampler, MCDropoutInferer, WindowSampler, flip_axes, is_out_of_memory
from .per_tomogram import PerTomogramInferer
from .pool import FourierPoolInferer, VersionMoments
from .split import FourierSplitInferer

__all__ = [
    "DropoutPassState",
    "FourierPoolInferer",
    "FourierSplitInferer",
    "IdentitySampler",
    "MCDropoutInferer",
    "PerTomogramInferer",
    "VersionMoments",
    "WindowSampler",
    "flip_axes",
    "is_dropout",
    "is_out_of_memory",
    "mc_dropout",
]
