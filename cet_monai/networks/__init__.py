"""Networks and their presets.

Presets (keyword arguments of :class:`DropoutUNet`):

* ``small``: trains in minutes on 2 CPU cores; 3 down-samplings, 8-64 channels, no dropout
  (measured on the simulated default: dropout slowed the short CPU training, see docs/denoising.md).
* ``large``: the Self2Self paper's network for GPUs; 48 channels at every level, 5 down-samplings,
  dropout 0.3 in the decoder (patches must be multiples of 32 voxels).
"""

from __future__ import annotations

from .unet import DropoutUNet, native_cpu_bfloat16

PRESETS: dict[str, dict] = {
    "small": {"features": (8, 16, 32, 64), "dropout": 0.0, "norm": None},
    "large": {"features": (48, 48, 48, 48, 48, 48), "dropout": 0.3, "norm": None},
}


def network_from_preset(preset: str = "small", **overrides) -> DropoutUNet:
    """A :class:`DropoutUNet` from a preset name, with any keyword overridden."""
    if preset == "seed":
        raise ValueError("network preset 'seed' is now called 'large'")
    if preset not in PRESETS:
        raise ValueError(f"unknown network preset {preset!r}; choose one of {sorted(PRESETS)}")
    return DropoutUNet(**{**PRESETS[preset], **overrides})


__all__ = ["DropoutUNet", "PRESETS", "native_cpu_bfloat16", "network_from_preset"]
