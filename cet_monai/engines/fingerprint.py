"""What a training run was fitted on, so a checkpoint is never resumed or reused for another tomogram.

A self-supervised denoiser is fitted to one tomogram: its checkpoints are worthless, and silently
wrong, for any other. :class:`RunFingerprint` records, in every checkpoint, the tomogram (shape,
voxel size, a hash of the file's first 4 KiB, which holds the header of every supported format,
and a hash of a strided sample of its voxels) and the method's settings (network, sampler,
patch size, seed). :class:`~cet_monai.engines.ResumeFromCheckpoint` compares the fingerprint of
the checkpoint it would resume with the current run's and refuses a mismatch with
:class:`CheckpointMismatchError`, one line naming the folder and the two ways out.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping

import numpy as np

from cet_monai.errors import CetMonaiError

__all__ = ["CheckpointMismatchError", "RunFingerprint", "file_fingerprint", "volume_fingerprint", "settings_fingerprint", "volume_stem",
           "work_dir_for"]

#: voxels hashed from a tomogram: SAMPLE_RUNS contiguous runs of RUN_VOXELS, evenly spaced over the
#: flat array (contiguous, so a memory map of any size is read at ~100 places, 1 MiB in all)
SAMPLE_RUNS, RUN_VOXELS = 64, 4096
#: bytes of the file start hashed: every supported format keeps its header there (MRC 1024 + extended, NIfTI 348)
HEADER_BYTES = 4096
#: settings a resume may change (inference-only: K, T, the inference seed of a whole-tomogram split)
#: or that follow from the tomogram itself (its estimated noise spectrum)
_INFERENCE_ONLY = ("num_versions", "passes", "seed", "progress", "spectrum")


class CheckpointMismatchError(CetMonaiError):
    """A checkpoint folder holds a run of another tomogram or other settings."""


def volume_fingerprint(array, voxel_size=None, path: str | os.PathLike | None = None) -> dict:
    """Fingerprint of a ``(Z, Y, X)`` tomogram: shape, voxel size (A), header and data-sample hashes.

    ``array`` may be a ``numpy.memmap``: only ``SAMPLE_RUNS`` runs of ``RUN_VOXELS`` voxels are read.
    ``path`` adds the hash of the file's first :data:`HEADER_BYTES` bytes and its size.
    """
    a = np.asarray(array) if not isinstance(array, np.ndarray) else array
    flat = a.reshape(-1)
    starts = np.unique(np.linspace(0, max(flat.size - RUN_VOXELS, 0), SAMPLE_RUNS).astype(np.int64))
    sample = np.concatenate([np.asarray(flat[s : s + RUN_VOXELS], dtype=np.float32) for s in starts])
    out = {
        "shape": [int(s) for s in a.shape],
        "voxel_size": [round(float(v), 4) for v in np.broadcast_to(np.asarray(voxel_size if voxel_size is not None else 1.0, float), (3,))],
        "data_sha256": hashlib.sha256(sample.tobytes()).hexdigest(),
    }
    if path is not None and os.path.isfile(path):
        with open(path, "rb") as f:
            out["header_sha256"] = hashlib.sha256(f.read(HEADER_BYTES)).hexdigest()
        out["file_bytes"] = int(os.path.getsize(path))
    return out


def file_fingerprint(path: str | os.PathLike) -> dict:
    """:func:`volume_fingerprint` of a tomogram file (memory-mapped: its header and the sampled
    voxels are read, nothing else)."""
    from cet_monai.io import read_volume

    data, header = read_volume(path, mmap=True)
    return volume_fingerprint(data, header.voxel_size, path)


def _strip_inference_only(value):
    if callable(getattr(value, "state_dict", None)):
        value = value.state_dict()
    if isinstance(value, Mapping):
        return {str(k): _strip_inference_only(v) for k, v in value.items() if k not in _INFERENCE_ONLY}
    if isinstance(value, (list, tuple)):
        return [_strip_inference_only(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def settings_fingerprint(settings) -> dict:
    """The training-relevant part of a method's settings (a mapping, or an object with ``state_dict()``,
    nested), as plain JSON types; inference-only keys dropped."""
    return json.loads(json.dumps(_strip_inference_only(settings), sort_keys=True, default=repr))


def volume_stem(path: str | os.PathLike) -> str:
    """The whole path minus its volume suffix: ``/data/v1.5/x.mrc`` -> ``/data/v1.5/x``, ``a.b.nii.gz`` -> ``a.b``."""
    from cet_monai.io import SUPPORTED_SUFFIXES

    text = os.fspath(path)
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if text.lower().endswith(suffix):
            return text[: -len(suffix)]
    return text


def work_dir_for(output: str | os.PathLike) -> str:
    """Default work folder of an output file: :func:`volume_stem` plus ``_run``
    (``/data/v1.5/x.mrc`` -> ``/data/v1.5/x_run``; ``a.b.mrc`` and ``a.c.mrc`` get folders of their own)."""
    return volume_stem(output) + "_run"


class RunFingerprint:
    """Checkpointable record of the tomogram and the settings a run is fitted on.

    Args:
        source: the run's :class:`~cet_monai.engines.TomogramSource` (its ``fingerprint()``).
        settings: the method's settings: a mapping whose values may be objects with
            ``state_dict()`` (e.g. the :class:`~cet_monai.methods.MethodRecord`), plus anything else that
            makes two runs differ (pairing options, learning rate).
        seed: the run's random seed.

    ``state_dict()`` is what checkpoints store; :meth:`check` raises
    :class:`CheckpointMismatchError` when a checkpoint's stored fingerprint differs.
    """

    def __init__(self, source, settings=None, seed: int = 0) -> None:
        self.source = source
        self.settings = settings
        self.seed = int(seed)

    def state_dict(self) -> dict:
        return {"tomogram": self.source.fingerprint(), "settings": settings_fingerprint(self.settings or {}), "seed": self.seed}

    def load_state_dict(self, state: Mapping) -> None:
        """Restoring is a check: a mismatch raises (see :meth:`check`)."""
        self.check(state)

    def differences(self, stored: Mapping | None) -> list[str]:
        """Names of what differs between ``stored`` and this run (``["fingerprint"]`` if there is none)."""
        if not stored:
            return ["fingerprint (the checkpoint predates fingerprints)"]
        mine = self.state_dict()
        diffs = []
        for key, value in mine["tomogram"].items():
            if stored.get("tomogram", {}).get(key) != value:
                diffs.append(f"tomogram {key}")
        ours, theirs = mine["settings"], stored.get("settings", {})
        for key in sorted(set(ours) | set(theirs)):
            if ours.get(key) != theirs.get(key):
                diffs.append(f"setting {key}")
        if int(stored.get("seed", -1)) != self.seed:
            diffs.append("seed")
        return diffs

    def check(self, stored: Mapping | None, checkpoint: str | os.PathLike = "") -> None:
        diffs = self.differences(stored)
        if diffs:
            folder = os.path.dirname(os.fspath(checkpoint)) or "."
            raise CheckpointMismatchError(
                f"{folder}: holds checkpoints of another run ({', '.join(diffs[:4])}{', ...' if len(diffs) > 4 else ''} "
                f"differ), not resumed; start afresh there with --no-resume (bundle: --resume false; earlier "
                f"checkpoints are kept in a superseded_* subfolder) or train elsewhere with --work-dir DIR (bundle: --output_dir DIR)"
            )
