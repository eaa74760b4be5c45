"""Membrane segmentation of tomograms and the experiment on what denoising does to it.

* :func:`segment`: label map (1 membrane) + optional probability of a tomogram file, from a
  checkpoint of the ``bundles/membrane_segmentation`` bundle.
* :class:`MaskedDiceCELoss`: Dice + cross-entropy that ignores the "unknown" label (2).
* :func:`dice_score`, :func:`surface_dice_score`: MONAI's metrics with ignored voxels excluded.
* :class:`SegmentationData`, :func:`augmentations`: training data (files or simulated) and the
  wedge-safe augmentation.
* :class:`ModelSpec`: the network (MONAI DynUNet / BasicUNet) and how its inputs are prepared.
* :mod:`cet_monai.segmentation.experiment`: Dice against the number of training patches for
  raw, Gaussian-filtered and denoised inputs.
"""

from .data import LABELS, SegmentationData, augmentations, check_labels, class_indices, load_pair
from .losses import MaskedDiceCELoss, labels_without_ignored, valid_mask
from .metrics import SegmentationMetricInputsd, dice_score, mask_ignored, segmentation_scores, surface_dice_score
from .model import ARCHITECTURES, MembraneProbability, ModelSpec
from .predict import (
    LoadSegmentationInputd,
    SaveSegmentationd,
    checkpoint_safe_globals,
    default_label_name,
    load_checkpoint,
    load_model,
    predict_probability,
    segment,
    write_segmentation,
)

__all__ = [
    "ARCHITECTURES",
    "LABELS",
    "LoadSegmentationInputd",
    "MaskedDiceCELoss",
    "MembraneProbability",
    "ModelSpec",
    "SaveSegmentationd",
    "SegmentationData",
    "SegmentationMetricInputsd",
    "augmentations",
    "check_labels",
    "checkpoint_safe_globals",
    "class_indices",
    "default_label_name",
    "dice_score",
    "labels_without_ignored",
    "load_checkpoint",
    "load_model",
    "load_pair",
    "mask_ignored",
    "predict_probability",
    "segment",
    "segmentation_scores",
    "surface_dice_score",
    "valid_mask",
    "write_segmentation",
]
