"""Training and inference plumbing around MONAI's Ignite engines (used by the bundles and the CLI)."""

from __future__ import annotations

from monai.data import list_data_collate

from .validation import NegatedLoss
from .data import LoadTomogramd, SaveTomogramd, TomogramSource, default_output_name
from .handlers import (
    EarlyStopOnValidation,
    GradientClipping,
    PreviewWriter,
    RandomStates,
    ResumeFromCheckpoint,
    TrainingCheckpointSaver,
    TrainingProgressBar,
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


__all__ = [
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
    "TrainingCheckpointSaver",
    "collate_samples",
    "default_output_name",
    "latest_checkpoint",
]
