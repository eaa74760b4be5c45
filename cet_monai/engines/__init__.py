"""Training and inference plumbing around MONAI's Ignite engines (used by the bundles and the CLI)."""

from __future__ import annotations

from monai.data import list_data_collate

from .validation import NegatedLoss
from .recipe import Recipe, inferer_from_recipe, load_recipe, network_from_recipe, sampler_from_recipe
from .fingerprint import CheckpointMismatchError, RunFingerprint, volume_stem, work_dir_for
from .distributed import init_distributed
from .preflight import as_bool, check_bundle_command_line, check_config_keys, check_device, check_patch, check_writable_folder
from .data import LoadTomogramd, SaveTomogramd, TomogramSource, default_output_name
from .handlers import (
    EarlyStopOnValidation,
    GradientClipping,
    PreviewWriter,
    RandomStates,
    ResumeFromCheckpoint,
    TrainingCheckpointSaver,
    TrainingProgressBar,
    WeightAveraging,
    latest_checkpoint,
)


def collate_samples(batch: list):
    """MONAI's ``list_data_collate`` after flattening nested sample lists.

    Multi-sample transforms chained in a ``Compose`` (P patches, then M pairs per patch) give a
    list of lists of dicts; this makes them one batch of P*M samples.
    """

    def flatten(items):
        for item in items:
            if isinstance(item, (list, tuple)):
                yield from flatten(item)
            else:
                yield item

    return list_data_collate(list(flatten(batch)))


def collate_single(batch: list) -> dict:
    """Batch of one item without collating its metadata (headers, normaliser states): each
    tensor gets a batch axis, the item's ``meta`` stays as it is. For whole-tomogram inference."""
    if len(batch) != 1:
        raise ValueError("collate_single takes batches of exactly one tomogram (batch_size: 1)")
    return {k: (v.unsqueeze(0) if hasattr(v, "unsqueeze") else v) for k, v in batch[0].items()}


__all__ = [
    "Recipe",
    "CheckpointMismatchError",
    "RunFingerprint",
    "volume_stem",
    "work_dir_for",
    "as_bool",
    "init_distributed",
    "check_bundle_command_line",
    "check_config_keys",
    "check_device",
    "check_patch",
    "check_writable_folder",
    "inferer_from_recipe",
    "load_recipe",
    "network_from_recipe",
    "sampler_from_recipe",
    "collate_single",
    "EarlyStopOnValidation",
    "GradientClipping",
    "LoadTomogramd",
    "NegatedLoss",
    "PreviewWriter",
    "RandomStates",
    "ResumeFromCheckpoint",
    "SaveTomogramd",
    "TomogramSource",
    "TrainingProgressBar",
    "WeightAveraging",
    "TrainingCheckpointSaver",
    "collate_samples",
    "default_output_name",
    "latest_checkpoint",
]
