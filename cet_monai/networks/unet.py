"""3D U-Net with dropout in the decoder, for Monte-Carlo-dropout denoising.

Why not MONAI's ``BasicUNet``/``UNet``/``DynUNet`` as they are: ``BasicUNet`` has a fixed four
down-samplings and puts dropout in every block, encoder included; ``UNet`` applies dropout in
every residual unit too; ``DynUNet`` has no dropout in its decoder. Self2Self with dropout
(real-space Bernoulli sampling) keeps the encoder deterministic and samples dropout only in
the decoder, with a configurable depth (5 down-samplings at 48 features). This module is a thin arrangement of MONAI's own
building blocks (:class:`monai.networks.blocks.Convolution`, :class:`UpSample`) in that shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution, UpSample
from torch import nn

__all__ = ["DropoutUNet", "native_cpu_bfloat16"]


def native_cpu_bfloat16() -> bool:
    """True when this CPU computes bfloat16 natively (x86 AVX512-BF16 or AMX, ARM BF16), so
    :class:`DropoutUNet` (``cpu_bfloat16=True``) trains faster in it.

    Read from the CPU's feature flags (``/proc/cpuinfo`` on Linux; elsewhere ``False``) and
    oneDNN's own check; PyTorch has no public query for native bfloat16 support.
    """
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    except (OSError, AttributeError, RuntimeError):
        return False
    return False


class _DoubleConv(nn.Sequential):
    """Two 3x3x3 convolutions, each followed by (dropout,) normalisation and activation."""

    def __init__(self, spatial_dims, in_ch, out_ch, act, norm, dropout, bias):
        super().__init__(
            Convolution(spatial_dims, in_ch, out_ch, kernel_size=3, act=act, norm=norm, dropout=dropout, bias=bias, adn_ordering="DNA"),
            Convolution(spatial_dims, out_ch, out_ch, kernel_size=3, act=act, norm=norm, dropout=dropout, bias=bias, adn_ordering="DNA"),
        )


class DropoutUNet(nn.Module):
    """U-Net for (B, C, Z, Y, X) volumes; dropout sits only in the decoder.

    Args:
        spatial_dims: 3 for tomograms (2 works for slices).
        in_channels: input channels (1 for a tomogram).
        out_channels: output channels (1 for a denoised tomogram).
        features: channels at each resolution level, finest first; ``len(features) - 1`` is the
            number of down-samplings, so inputs need every spatial size divisible by
            ``2 ** (len(features) - 1)``.
        dropout: drop probability of the decoder's dropout layers (0 disables them).
        norm: MONAI norm name (``"batch"``, ``"instance"``, ...) or ``None`` for none.
        act: MONAI activation name or (name, kwargs).
        upsample_mode: ``"nontrainable"`` (trilinear interpolation, no checkerboard artefacts)
            or ``"deconv"``.
        channels_last: run 3D convolutions in PyTorch's ``channels_last_3d`` memory format
            (weights and activations): the same numbers, about twice as fast for these small 3D
            convolutions on a CPU (measured: 0.24 -> 0.13 s per training step of 4 x 32^3 on 2
            cores). Inputs and outputs keep their own layout.
        cpu_bfloat16: on a CPU, run the network under ``torch.autocast("cpu", bfloat16)``
            (convolutions in bfloat16, the output cast back to float32). Worth it only where the
            CPU computes bfloat16 natively (:func:`native_cpu_bfloat16`; measured 1.5-1.7x faster
            training steps there); elsewhere it is emulated and slower. No effect on a GPU, where
            the bundles' ``amp`` setting decides.

    The output has no activation: a denoised tomogram is unbounded and signed.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        features: Sequence[int] = (16, 32, 64, 64),
        dropout: float = 0.3,
        norm: str | tuple | None = None,
        act: str | tuple = ("leakyrelu", {"negative_slope": 0.1, "inplace": True}),
        upsample_mode: str = "nontrainable",
        channels_last: bool = True,
        cpu_bfloat16: bool = False,
    ) -> None:
        super().__init__()
        features = tuple(int(f) for f in features)
        #: constructor arguments, stored in checkpoints so inference can rebuild the network
        self.config = {
            "spatial_dims": spatial_dims, "in_channels": in_channels, "out_channels": out_channels,
            "features": list(features), "dropout": dropout, "norm": norm, "act": act, "upsample_mode": upsample_mode,
            "channels_last": bool(channels_last), "cpu_bfloat16": bool(cpu_bfloat16),
        }
        self.cpu_bfloat16 = bool(cpu_bfloat16)
        if len(features) < 2:
            raise ValueError(f"features needs at least two levels, got {features}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.depth = len(features) - 1
        bias = norm is None
        self.encoders = nn.ModuleList()
        ch = in_channels
        for f in features:
            self.encoders.append(_DoubleConv(spatial_dims, ch, f, act, norm, None, bias))
            ch = f
        self.pool = nn.MaxPool3d(2) if spatial_dims == 3 else nn.MaxPool2d(2)
        self.upsamples = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for f_skip in reversed(features[:-1]):
            self.upsamples.append(
                UpSample(spatial_dims, ch, ch, scale_factor=2, mode=upsample_mode, interp_mode="linear" if spatial_dims == 1 else ("trilinear" if spatial_dims == 3 else "bilinear"), align_corners=False)
            )
            self.decoders.append(_DoubleConv(spatial_dims, ch + f_skip, f_skip, act, norm, dropout or None, bias))
            ch = f_skip
        self.head = Convolution(spatial_dims, ch, out_channels, kernel_size=1, conv_only=True)
        self.memory_format = torch.channels_last_3d if channels_last and spatial_dims == 3 else torch.contiguous_format
        if self.memory_format is not torch.contiguous_format:
            self.to(memory_format=self.memory_format)

    @property
    def divisor(self) -> int:
        """Every spatial size of the input must be a multiple of this."""
        return 2**self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bad = [s for s in x.shape[2:] if s % self.divisor]
        if bad:
            raise ValueError(
                f"DropoutUNet with {self.depth} down-samplings needs spatial sizes divisible by "
                f"{self.divisor}, got {tuple(x.shape[2:])}"
            )
        if self.cpu_bfloat16 and x.device.type == "cpu" and not torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self._forward(x).float()
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=self.memory_format)
        skips = []
        for i, enc in enumerate(self.encoders):
            x = enc(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.upsamples, self.decoders):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x).contiguous()
