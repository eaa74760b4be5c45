"""Dice and surface Dice of membrane segmentations, with ignored voxels excluded.

Both are MONAI's metrics (:class:`~monai.metrics.DiceMetric`,
:class:`~monai.metrics.SurfaceDiceMetric`) on the membrane channel only
(``include_background=False``). Voxels labelled ``ignore_index`` in the ground truth are set to
background in *both* the prediction and the ground truth before scoring, so they are true
negatives: they change neither the Dice numerator nor its denominator. (For the surface Dice
this also removes the prediction's boundary inside ignored regions.)

Conventions: a perfect prediction scores 1; an empty prediction of a non-empty ground truth
scores 0; an empty prediction of an empty ground truth scores 1 for Dice (nothing to find, and
nothing false found) and for surface Dice. The surface tolerance is in voxels.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.metrics import DiceMetric, SurfaceDiceMetric
from monai.transforms import MapTransform

__all__ = ["dice_score", "surface_dice_score", "segmentation_scores", "SegmentationMetricInputsd", "mask_ignored"]


def _labels(x) -> torch.Tensor:
    if hasattr(x, "as_tensor"):
        x = x.as_tensor()
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if torch.is_floating_point(x):
        x = x.round()
    return x.long()


def mask_ignored(pred, label, ignore_index: int | None = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pred, label)`` as long tensors with the voxels where ``label == ignore_index`` set to 0 in both."""
    p, y = _labels(pred), _labels(label)
    if p.shape != y.shape:
        raise ValueError(f"prediction shape {tuple(p.shape)} differs from label shape {tuple(y.shape)}")
    if ignore_index is not None:
        ignored = y == ignore_index
        p = torch.where(ignored, torch.zeros_like(p), p)
        y = torch.where(ignored, torch.zeros_like(y), y)
    return p, y


def _onehot_batch(p: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Z, Y, X) binary label volumes -> (1, 2, Z, Y, X) one-hot float tensors."""
    p1 = F.one_hot((p == 1).long(), 2).movedim(-1, 0)[None].float()
    y1 = F.one_hot((y == 1).long(), 2).movedim(-1, 0)[None].float()
    return p1, y1


def dice_score(pred, label, ignore_index: int | None = 2) -> float:
    """Dice of the membrane (label 1) between two ``(Z, Y, X)`` label volumes (numpy or torch)."""
    p, y = mask_ignored(pred, label, ignore_index)
    p1, y1 = _onehot_batch(p, y)
    metric = DiceMetric(include_background=False, reduction="mean", ignore_empty=False)
    return float(metric(p1, y1).item())


def surface_dice_score(pred, label, tolerance: float = 2.0, ignore_index: int | None = 2) -> float:
    """Normalised surface Dice of the membrane at ``tolerance`` voxels (Nikolov et al.)."""
    p, y = mask_ignored(pred, label, ignore_index)
    if not bool((y == 1).any()) and not bool((p == 1).any()):
        return 1.0
    p1, y1 = _onehot_batch(p, y)
    metric = SurfaceDiceMetric(class_thresholds=[float(tolerance)], include_background=False)
    with warnings.catch_warnings():
        # an empty prediction or ground truth is handled below (score 0); MONAI 1.6 also warns
        # about a deprecated argument of its own internal call
        warnings.filterwarnings("ignore", message=".*is all 0.*")
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*")
        value = float(metric(p1, y1).item())
    return 0.0 if np.isnan(value) else value


def segmentation_scores(pred, label, tolerance: float = 2.0, ignore_index: int | None = 2) -> dict[str, float]:
    """``{"dice": ..., "surface_dice": ...}`` of a membrane prediction against the ground truth."""
    return {
        "dice": dice_score(pred, label, ignore_index),
        "surface_dice": surface_dice_score(pred, label, tolerance, ignore_index),
    }


class SegmentationMetricInputsd(MapTransform):
    """Post-processing for MONAI's Dice / surface-Dice handlers in an evaluator.

    Per item (``decollate=True``): ``d[pred_key]`` logits ``(C, *spatial)`` become the one-hot
    ``(C, *spatial)`` of their argmax; ``d[label_key]`` ``(1, *spatial)`` labels become one-hot
    ``(C, *spatial)``; voxels labelled ``ignore_index`` are background in both.
    """

    def __init__(self, keys: KeysCollection = ("pred", "label"), num_classes: int = 2, ignore_index: int | None = 2,
                 pred_key: str = "pred", label_key: str = "label") -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.pred_key = pred_key
        self.label_key = label_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        pred = d[self.pred_key]
        logits = pred.as_tensor() if hasattr(pred, "as_tensor") else torch.as_tensor(pred)
        p = logits.argmax(0)
        y = _labels(d[self.label_key])
        y = y[0] if y.dim() == p.dim() + 1 else y
        p, y = mask_ignored(p, y, self.ignore_index)
        d[self.pred_key] = F.one_hot(p, self.num_classes).movedim(-1, 0).float()
        d[self.label_key] = F.one_hot(y.clamp(0, self.num_classes - 1), self.num_classes).movedim(-1, 0).float()
        return d
