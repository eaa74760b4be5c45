"""Losses for the self-supervised training modes."""

from __future__ import annotations

import torch
from torch.nn.modules.loss import _Loss

__all__ = ["MaskedMSELoss"]


class MaskedMSELoss(_Loss):
    """Mean squared error over the voxels the network did not see (Self2Self / blind-spot loss).

    ``forward(pred, label)``:

    * ``pred``: ``(B, C, *spatial)`` network output.
    * ``label``: ``(B, 2C, *spatial)`` = ``concatenate([target, loss_mask], dim=1)``, as produced
      by :class:`cet_monai.transforms.RandBernoulliMaskd`; ``loss_mask`` is 1 on hidden voxels
      and 0 on visible ones (any values in [0, 1] act as weights).

    ``reduction="mean"`` (default): ``sum(loss_mask * (pred - target)**2) / sum(loss_mask)``
    over the whole batch, i.e. normalised by the number of hidden voxels (times channels); when
    no voxel is hidden the loss is 0 (still attached to the graph). ``"sum"``: the numerator
    only. ``"none"``: the element-wise ``loss_mask * (pred - target)**2``, ``(B, C, *spatial)``.
    Visible voxels never contribute, whatever the prediction there.
    """

    def __init__(self, reduction: str = "mean") -> None:
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
        super().__init__(reduction=reduction)

    def forward(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if pred.ndim < 2 or label.ndim != pred.ndim:
            raise ValueError(f"pred and label need the same rank >= 2, got {tuple(pred.shape)} and {tuple(label.shape)}.")
        c = pred.shape[1]
        if label.shape[1] != 2 * c or label.shape[2:] != pred.shape[2:] or label.shape[0] != pred.shape[0]:
            raise ValueError(
                f"label must be (B, 2C, ...) = [target, loss mask] for pred (B, C, ...); "
                f"got pred {tuple(pred.shape)}, label {tuple(label.shape)}."
            )
        target = label[:, :c].to(pred.dtype)
        mask = label[:, c:].to(pred.dtype)
        err = mask * (pred - target) ** 2
        if self.reduction == "none":
            return err
        total = err.sum()
        if self.reduction == "sum":
            return total
        # When nothing is hidden the numerator is exactly 0, so dividing by a tiny positive
        # count gives 0 without a device-to-host sync.
        count = mask.sum().clamp_min(torch.finfo(total.dtype).tiny)
        return total / count
