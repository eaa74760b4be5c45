"""Denoising many tomograms: what to do, what is already done, and what happened.

``cet-monai denoise DIR -o OUT`` fits one model per tomogram (or, ``--shared-model``, one
model on all of them; :func:`shared_model_settings`). On a cluster it runs for hours,
may be killed and rerun, and may be spread over several processes (``--nproc N`` or
``torchrun``); this module holds the bookkeeping, independent of the method:

* :class:`BatchItem` - one input, its output file and its work folder (checkpoints, logs).
* a **completion record** (``completed.json`` in the work folder) written after the output's
  atomic rename: the input's fingerprint (:func:`~cet_monai.engines.fingerprint.volume_fingerprint`),
  the settings that decide the output, and the output's size and modification time. A rerun
  skips an item whose output exists and whose record matches; an existing output without a
  matching record is refused unless ``--overwrite`` (it is not ours, or not from these settings).
* :func:`share` - the items of one rank (round robin: rank r takes items r, r + W, ...).
* :class:`BatchResult` rows and :func:`write_summary` - the summary table
  (``denoise_summary.tsv``: input, output, status, rank, seconds, quality check, error).
* :func:`output_check` - a cheap check of a written output (finite, not constant, how much of
  the input's variance it kept) for the summary's quality column.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cet_monai.errors import OptionError

from .fingerprint import file_fingerprint

__all__ = [
    "BatchItem",
    "BatchResult",
    "COMPLETION_NAME",
    "SUMMARY_NAME",
    "output_settings",
    "shared_model_settings",
    "write_completion",
    "is_complete",
    "plan_batch",
    "share",
    "output_check",
    "write_summary",
    "read_summary",
    "format_summary",
]

COMPLETION_NAME = "completed.json"
SUMMARY_NAME = "denoise_summary.tsv"
SUMMARY_COLUMNS = ("input", "output", "status", "rank", "seconds", "quality", "error")
#: options that change how a run is executed, never which output it writes
_EXECUTION_ONLY = ("device", "progress")


@dataclass(frozen=True)
class BatchItem:
    """One tomogram of a batch: ``input`` file, ``output`` file, ``work_dir`` (checkpoints, logs)."""

    input: str
    output: str
    work_dir: str

    @property
    def record_path(self) -> Path:
        return Path(self.work_dir) / COMPLETION_NAME


@dataclass
class BatchResult:
    """What happened to one :class:`BatchItem`: ``status`` is ``denoised``, ``skipped`` (its
    output was complete) or ``failed`` (``error`` says why); ``seconds`` of wall time."""

    input: str
    output: str
    status: str
    rank: int = 0
    seconds: float = 0.0
    quality: str = ""
    error: str = ""

    def row(self) -> list[str]:
        values = asdict(self)
        values["seconds"] = f"{self.seconds:.1f}"
        return [" ".join(str(values[c]).split()) for c in SUMMARY_COLUMNS]  # one line per cell


def output_settings(method: str, overrides: dict, save_std: bool = False) -> dict:
    """The settings that decide an output's voxels, as plain JSON (execution-only keys such as
    the device dropped), for the completion record."""
    kept = {str(k): v for k, v in sorted(overrides.items()) if k not in _EXECUTION_ONLY}
    return json.loads(json.dumps({"method": method, "overrides": kept, "save_std": bool(save_std)}, sort_keys=True, default=repr))


def _record(item: BatchItem, settings: dict) -> dict:
    out = os.stat(item.output)
    return {
        "input": os.path.abspath(item.input),
        "input_fingerprint": file_fingerprint(item.input),
        "settings": settings,
        "output": os.path.abspath(item.output),
        "output_bytes": int(out.st_size),
        "output_mtime_ns": int(out.st_mtime_ns),
    }


def shared_model_settings(settings: dict, inputs) -> dict:
    """``settings`` of outputs denoised by ONE model fitted on all ``inputs`` (``cet-monai denoise
    --shared-model``): each output then depends on every input, so the record also names the
    set (its size and a hash of the inputs' fingerprints, in order), and a changed, added or
    removed tomogram makes every output incomplete. The number of processes is not part of it
    (like the device, it is how the model is fitted, not which data it is fitted on)."""
    fingerprints = json.dumps([file_fingerprint(p) for p in inputs], sort_keys=True)
    return {**settings, "shared_model": {"tomograms": len(inputs), "sha256": hashlib.sha256(fingerprints.encode()).hexdigest()}}


def write_completion(item: BatchItem, settings: dict) -> Path:
    """Record that ``item.output`` is complete (call after its atomic rename); written through a
    temporary file and a rename, so a record is never partial."""
    path = item.record_path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_record(item, settings), indent=1, sort_keys=True))
    os.replace(tmp, path)
    return path


def is_complete(item: BatchItem, settings: dict) -> bool:
    """``True`` when ``item.output`` exists and the work folder's completion record says it was
    written from this very input with these settings, and it is unchanged since."""
    if not os.path.isfile(item.output) or not item.record_path.is_file():
        return False
    try:
        stored = json.loads(item.record_path.read_text())
        current = _record(item, settings)
    except (OSError, ValueError):
        return False
    return all(stored.get(k) == current[k] for k in ("input_fingerprint", "settings", "output", "output_bytes", "output_mtime_ns"))


def plan_batch(items: list[BatchItem], settings: dict, overwrite: bool = False) -> tuple[list[BatchItem], list[BatchItem]]:
    """Split ``items`` into (to do, skipped as complete); refuse, before any work and all at
    once, two inputs writing one output and existing outputs that are not complete ones from
    these settings (unless ``overwrite``: then everything is done again)."""
    seen: dict[str, str] = {}
    clashes = []
    for item in items:
        key = os.path.abspath(item.output)
        if key in seen:
            clashes.append(f"{seen[key]} and {item.input} -> {item.output}")
        seen[key] = item.input
    if clashes:
        raise OptionError("two inputs would write the same output (same file name in different folders): "
                          + "; ".join(clashes[:3]) + ("; ..." if len(clashes) > 3 else "") + ". Denoise them into separate output folders")
    if overwrite:
        return list(items), []
    todo, skipped, existing = [], [], []
    for item in items:
        if is_complete(item, settings):
            skipped.append(item)
        elif os.path.exists(item.output):
            existing.append(item.output)
        else:
            todo.append(item)
    if existing:
        raise OptionError(
            f"{len(existing)} output(s) exist and are not complete outputs of these inputs with these settings: "
            + ", ".join(existing[:3]) + (", ..." if len(existing) > 3 else "")
            + "; pass --overwrite to replace them, or choose another -o"
        )
    return todo, skipped


def share(items: list, rank: int, world_size: int) -> list:
    """The items of ``rank`` among ``world_size`` processes: items rank, rank + W, rank + 2W, ..."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside a world of {world_size}")
    return list(items[rank::world_size])


def output_check(output: str, input_std: float | None = None, validation: str = "") -> str:
    """A one-line check of a written output for the summary: ``"ok"`` or what is wrong
    (non-finite voxels, a constant volume), the fraction of the input's variance it kept
    (``input_std``: the input's standard deviation, e.g. its normaliser's, so the input is not
    read again) and the run's held-out ``validation`` score, if given. Reads a strided
    subsample of the output only."""
    from cet_monai.io import read_volume
    from cet_monai.normalize import subsample

    out = subsample(read_volume(output, mmap=True)[0], 1_000_000).astype(np.float64)  # (subsample gives the pages back)
    problems = []
    if not np.all(np.isfinite(out)):
        problems.append(f"{int(np.sum(~np.isfinite(out)))} non-finite sampled voxels")
    elif float(out.std()) == 0.0:
        problems.append("constant output")
    parts = ["; ".join(problems) if problems else "ok"]
    if input_std and not problems:
        parts.append(f"kept {100 * out.var() / input_std ** 2:.2g}% of the input variance")
    if validation:
        parts.append(validation)
    return "; ".join(parts)


def write_summary(path: str | os.PathLike, results: list[BatchResult]) -> Path:
    """Write the summary table (tab-separated, a header row, one row per input, in input order
    as given) through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    lines = ["\t".join(SUMMARY_COLUMNS)] + ["\t".join(r.row()) for r in results]
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path


def read_summary(path: str | os.PathLike) -> list[BatchResult]:
    """The rows of a summary table written by :func:`write_summary`."""
    lines = Path(path).read_text().splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"))) for line in lines[1:] if line]
    return [BatchResult(**{**r, "rank": int(r["rank"]), "seconds": float(r["seconds"])}) for r in rows]


def format_summary(results: list[BatchResult]) -> str:
    """The summary as an aligned text table for the terminal (input and output by file name)."""
    rows = [["input", "output", "status", "rank", "seconds", "quality check / error"]]
    for r in results:
        rows.append([Path(r.input).name, Path(r.output).name, r.status, str(r.rank), f"{r.seconds:.0f}", r.error or r.quality])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1] for row in rows)
