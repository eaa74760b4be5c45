"""Validation scores: every key metric of the denoising bundles is "higher is better"."""

from __future__ import annotations

import torch
from torch.nn.modules.loss import _Loss

__all__ = ["NegatedLoss", "by_reference"]


class NegatedLoss(_Loss):
    """``-loss(pred, label)``: a self-supervised loss on held-out pairs as a score to maximise.

    Used where a tomogram has no clean reference, so checkpoint selection and early stopping
    compare validations the same way as with PSNR.
    """

    def __init__(self, loss: torch.nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        # plain tensors: MONAI's LossMetric indexes the 0-d result, which a MetaTensor refuses
        as_plain = lambda t: t.as_tensor() if hasattr(t, "as_tensor") else t  # noqa: E731
        return -self.loss(as_plain(pred), as_plain(label))


def by_reference(source, with_reference, without_reference):
    """``with_reference`` where ``source`` has a clean reference (validation scored against it,
    PSNR/SSIM), else ``without_reference`` (the self-supervised loss on held-out pairs).

    The bundles wire both validations and let this choose, so their YAML holds no conditional.
    """
    return with_reference if source.has_reference else without_reference
