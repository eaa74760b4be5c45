"""Training and inference plumbing around MONAI's Ignite engines (used by the bundles and the CLI)."""

from __future__ import annotations

from monai.data import list_data_collate

from .validation import NegatedLoss, by_reference
from .fingerprint import CheckpointMismatchError, RunFingerprint, volume_stem, work_dir_for
from .distributed import finish_distributed, init_distributed, resume_dict, sync_batchnorm
from .preflight import as_bool, check_bundle_command_line, check_config_keys, check_device, check_patch, check_writable_folder
from .resources import check_gpu_memory
from .data import (LoadTomogramd, SaveTomogramd, TomogramCollection, TomogramSource, dataset_dir_of, default_output, default_output_name,
                   input_list, training_source)
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
    "CheckpointMismatchError",
    "RunFingerprint",
    "volume_stem",
    "work_dir_for",
    "as_bool",
    "dataset_dir_of",
    "default_output",
    "finish_distributed",
    "init_distributed",
    "sync_batchnorm",
    "input_list",
    "resume_dict",
    "check_bundle_command_line",
    "check_config_keys",
    "check_gpu_memory",
    "check_device",
    "check_patch",
    "check_writable_folder",
    "collate_single",
    "EarlyStopOnValidation",
    "GradientClipping",
    "LoadTomogramd",
    "NegatedLoss",
    "by_reference",
    "PreviewWriter",
    "RandomStates",
    "ResumeFromCheckpoint",
    "SaveTomogramd",
    "TomogramCollection",
    "TomogramSource",
    "training_source",
    "TrainingProgressBar",
    "WeightAveraging",
    "TrainingCheckpointSaver",
    "collate_samples",
    "default_output_name",
    "latest_checkpoint",
]
