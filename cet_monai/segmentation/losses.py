"""Dice + cross-entropy for membrane segmentation, with an ignore label.

Label maps hold ``0`` (background), ``1`` (membrane) and ``ignore_index`` (``2`` by default:
"unknown", as in MemBrain-seg's annotations): voxels an annotator did not decide. They
must not count, neither in the Dice term nor in the cross-entropy. MONAI 1.6's ``DiceCELoss``
has no ignore option, so :class:`MaskedDiceCELoss` composes

* MONAI's :class:`~monai.losses.MaskedDiceLoss` (softmax first, then prediction and one-hot
  target are both multiplied by the valid-voxel mask, so ignored voxels add nothing to the
  intersection or to either sum), and
* :func:`torch.nn.functional.cross_entropy` with ``ignore_index`` (mean over valid voxels).

A batch whose voxels are all ignored gives a zero loss that still has a gradient graph (so an
optimiser step is a no-op rather than a NaN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import MaskedDiceLoss
from torch.nn.modules.loss import _Loss

__all__ = ["MaskedDiceCELoss", "valid_mask", "labels_without_ignored"]


def _as_index_labels(target: torch.Tensor, n_batch: int) -> torch.Tensor:
    """``target`` as a long ``(B, *spatial)`` label tensor (accepts ``(B, 1, *spatial)``)."""
    if hasattr(target, "as_tensor"):  # MetaTensor -> plain tensor
        target = target.as_tensor()
    if target.dim() >= 2 and target.shape[0] == n_batch and target.shape[1] == 1:
        target = target[:, 0]
    if torch.is_floating_point(target):
        target = target.round()
    return target.long()


def valid_mask(target: torch.Tensor, ignore_index: int | None = 2) -> torch.Tensor:
    """Boolean mask of the voxels that count (``target != ignore_index``); same shape as ``target``."""
    if ignore_index is None:
        return torch.ones_like(target, dtype=torch.bool)
    return target != ignore_index


def labels_without_ignored(target: torch.Tensor, ignore_index: int | None = 2) -> torch.Tensor:
    """A copy of ``target`` with ignored voxels set to background (0), for one-hot encoding."""
    if ignore_index is None:
        return target
    return torch.where(target == ignore_index, torch.zeros_like(target), target)


class MaskedDiceCELoss(_Loss):
    """``lambda_dice * Dice + lambda_ce * CE`` on logits, ignoring voxels labelled ``ignore_index``.

    Args:
        num_classes: output channels of the network (2: background, membrane).
        ignore_index: label value that does not count (``None``: every voxel counts).
        include_background: Dice over the background channel too (default: membrane only).
        batch: Dice sums over the whole batch before dividing (stable when some patches hold
            no membrane), as MONAI's ``DiceLoss(batch=True)``.
        lambda_dice, lambda_ce: weights of the two terms.
        smooth_nr, smooth_dr: Dice smoothing, as in MONAI.

    ``forward(input, target)``: ``input`` logits ``(B, C, *spatial)``; ``target`` integer labels
    ``(B, 1, *spatial)`` or ``(B, *spatial)`` with values in ``0..C-1`` and ``ignore_index``.
    """

    def __init__(
        self,
        num_classes: int = 2,
        ignore_index: int | None = 2,
        include_background: bool = False,
        batch: bool = True,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (softmax outputs), got {num_classes}")
        if ignore_index is not None and 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} is one of the {num_classes} classes")
        if lambda_dice < 0 or lambda_ce < 0:
            raise ValueError("lambda_dice and lambda_ce must be >= 0")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.lambda_dice = float(lambda_dice)
        self.lambda_ce = float(lambda_ce)
        self.dice = MaskedDiceLoss(
            include_background=include_background,
            softmax=True,
            batch=batch,
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
        )

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if hasattr(input, "as_tensor"):
            input = input.as_tensor()
        if input.shape[1] != self.num_classes:
            raise ValueError(f"expected {self.num_classes} output channels, got {input.shape[1]}")
        labels = _as_index_labels(target, input.shape[0])
        if labels.shape != (input.shape[0], *input.shape[2:]):
            raise ValueError(f"target shape {tuple(target.shape)} does not match the prediction {tuple(input.shape)}")
        mask = valid_mask(labels, self.ignore_index)
        bad = (labels < 0) | (labels >= self.num_classes)
        if bool((bad & mask).any()):
            values = torch.unique(labels[bad & mask]).tolist()
            raise ValueError(f"label values {values} are neither classes 0..{self.num_classes - 1} "
                             f"nor the ignore label {self.ignore_index}")
        if not bool(mask.any()):
            return input.sum() * 0.0
        loss = input.new_zeros(())
        if self.lambda_ce > 0:
            ce = F.cross_entropy(input, labels, ignore_index=-100 if self.ignore_index is None else self.ignore_index)
            loss = loss + self.lambda_ce * ce
        if self.lambda_dice > 0:
            onehot = F.one_hot(labels_without_ignored(labels, self.ignore_index), self.num_classes)
            onehot = onehot.movedim(-1, 1).to(input.dtype)
            dice = self.dice(input, onehot, mask=mask[:, None].to(input.dtype))
            loss = loss + self.lambda_dice * dice
        return loss
