"""The segmentation network and the description that travels with its weights.

:class:`ModelSpec` says how to rebuild the network (MONAI ``DynUNet`` or ``BasicUNet``) and how
its inputs were prepared (patch size, normalisation percentiles, ignore label). The bundle puts
it in every checkpoint next to the weights (``model_spec`` key), so
:func:`cet_monai.segmentation.segment` needs nothing but the checkpoint file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["ModelSpec", "MembraneProbability", "ARCHITECTURES"]

ARCHITECTURES = ("dynunet", "basicunet")


@dataclass
class ModelSpec:
    """How a membrane segmentation network is built and fed.

    Args:
        architecture: ``"dynunet"`` (default: MONAI ``DynUNet``, 3x3x3 kernels, stride-2
            down-samplings, instance norm, one level per entry of ``features``) or
            ``"basicunet"`` (MONAI ``BasicUNet``: ``features`` has 6 entries, 4 down-samplings).
        features: channels per level. The default ``(8, 16, 32, 64)`` (3 down-samplings, 0.35 M
            parameters) trains on CPUs; ``(32, 64, 128, 256, 320)`` is a GPU-sized DynUNet.
        num_classes: output channels (softmax): 0 background, 1 membrane.
        dropout: DynUNet / BasicUNet dropout.
        patch_size: ``(Z, Y, X)`` training patch = sliding-window size at inference. Each axis
            must be a multiple of ``2 ** (number of down-samplings)``.
        percentiles: whole-tomogram normalisation (:class:`~cet_monai.normalize.TomogramNormalizer`).
        ignore_index: label value that did not count in training.
    """

    architecture: str = "dynunet"
    features: Sequence[int] = (8, 16, 32, 64)
    num_classes: int = 2
    dropout: float = 0.0
    patch_size: Sequence[int] = (48, 48, 48)
    percentiles: Sequence[float] = (0.5, 99.5)
    ignore_index: int | None = 2
    class_names: Sequence[str] = field(default=("background", "membrane"))

    def __post_init__(self):
        self.architecture = str(self.architecture).lower()
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        self.features = tuple(int(f) for f in self.features)
        self.patch_size = tuple(int(p) for p in (self.patch_size if hasattr(self.patch_size, "__len__") else [self.patch_size] * 3))
        self.percentiles = tuple(float(p) for p in self.percentiles)
        self.class_names = tuple(str(c) for c in self.class_names)
        self.num_classes = int(self.num_classes)
        self.dropout = float(self.dropout)
        if len(self.patch_size) != 3:
            raise ValueError(f"patch_size needs 3 values (Z, Y, X), got {self.patch_size}")
        if self.architecture == "basicunet" and len(self.features) != 6:
            raise ValueError(f"BasicUNet needs 6 feature counts, got {self.features}")
        if self.architecture == "dynunet" and len(self.features) < 3:
            raise ValueError(f"DynUNet needs at least 3 levels of features, got {self.features}")
        factor = self.downsampling
        if any(p % factor for p in self.patch_size):
            raise ValueError(f"patch_size {self.patch_size} must be a multiple of {factor} on every axis "
                             f"({self.architecture} with features {self.features})")

    @property
    def downsampling(self) -> int:
        """Total down-sampling factor of the network (patch sizes must be multiples of it)."""
        levels = 4 if self.architecture == "basicunet" else len(self.features) - 1
        return 2 ** levels

    def build(self) -> nn.Module:
        """A new, randomly initialised network (``(B, 1, Z, Y, X)`` -> ``(B, num_classes, Z, Y, X)`` logits)."""
        if self.architecture == "basicunet":
            from monai.networks.nets import BasicUNet

            return BasicUNet(spatial_dims=3, in_channels=1, out_channels=self.num_classes,
                             features=self.features, dropout=self.dropout)
        from monai.networks.nets import DynUNet

        n = len(self.features)
        return DynUNet(
            spatial_dims=3,
            in_channels=1,
            out_channels=self.num_classes,
            kernel_size=[3] * n,
            strides=[1] + [2] * (n - 1),
            upsample_kernel_size=[2] * (n - 1),
            filters=list(self.features),
            dropout=self.dropout if self.dropout > 0 else None,
            norm_name="instance",
            res_block=False,
        )

    # -- checkpoint protocol (an object in an Ignite/MONAI save_dict) --------------------------
    def state_dict(self) -> dict:
        """Plain Python values (safe for ``torch.load(weights_only=True)``)."""
        d = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    def load_state_dict(self, state: Mapping) -> None:
        """Resuming a run: refuse a checkpoint made for another network."""
        other = type(self).from_state_dict(state)
        diff = [k for k in ("architecture", "features", "num_classes") if getattr(other, k) != getattr(self, k)]
        if diff:
            raise ValueError("checkpoint was saved for another network: " + ", ".join(
                f"{k} {getattr(other, k)} (checkpoint) vs {getattr(self, k)} (config)" for k in diff))

    @classmethod
    def from_state_dict(cls, state: Mapping) -> ModelSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in dict(state).items() if k in names})

    @classmethod
    def from_checkpoint(cls, path) -> ModelSpec:
        """The spec stored in a checkpoint written by the bundle (see
        :func:`~cet_monai.segmentation.load_checkpoint`)."""
        from .predict import load_checkpoint

        return load_checkpoint(path)[1]


class MembraneProbability(nn.Module):
    """Wraps a segmentation network: logits -> softmax probability of one class, ``(B, 1, ...)``.

    Used at inference so the sliding-window blending averages probabilities and keeps one
    channel in memory instead of ``num_classes``.
    """

    def __init__(self, network: nn.Module, channel: int = 1) -> None:
        super().__init__()
        self.network = network
        self.channel = int(channel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.network(x)
        return torch.softmax(logits.float(), dim=1)[:, self.channel : self.channel + 1]
