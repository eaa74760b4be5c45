"""Checks run before any long work: a user's mistake is one line (exit 2), not a traceback later.

Each function raises :class:`~cet_monai.errors.OptionError` naming the option, the value and the
way out. The command line calls them after reading the inputs' headers and before training;
they read no voxel data.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from cet_monai.errors import OptionError

__all__ = ["as_bool", "check_bundle_command_line", "check_config_keys", "check_device", "check_patch", "check_writable_folder"]


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0", "none", "null", ""}


def as_bool(value, name: str = "value") -> bool:
    """A boolean setting as given on a command line: ``True``/``False``, 0/1, or the strings
    true/false, yes/no, on/off, 1/0 in any case.

    ``python -m monai.bundle run ... --progress false`` passes the *string* ``"false"`` (only
    ``False`` is read as a boolean), which plain ``if value:`` takes as true.
    """
    if isinstance(value, bool) or value is None:
        return bool(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise OptionError(f"{name}: expected true or false, got {value!r}")


def _config_ids(config, prefix: str = "") -> list[str]:
    """Every id of a parsed bundle config (``a#b#0`` style, as ``--set`` and MONAI take them)."""
    ids = []
    items = config.items() if isinstance(config, Mapping) else enumerate(config) if isinstance(config, list) else ()
    for key, value in items:
        cid = f"{prefix}{key}"
        ids.append(cid)
        ids += _config_ids(value, cid + "#")
    return ids


def check_config_keys(keys: Sequence[str], config: Mapping, where: str, flag: str = "--set ") -> None:
    """Refuse ``--set`` ids that are not in the bundle ``config`` (a plain dict read from YAML).

    A misspelled id used to be added silently as a new, unused entry, so the run went on with the
    default the user meant to change.
    """
    known = set(_config_ids(config))
    for key in keys:
        if key in known:
            continue
        close = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; the ids are the keys of {where}"
        raise OptionError(f"{flag}{key}: no such setting in {where}{hint}")


#: arguments of ``monai.bundle.scripts.run`` itself, not config ids
_BUNDLE_RUN_ARGS = ("run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file")


def _bundle_command_line(argv: Sequence[str]) -> tuple[object, list[str]]:
    """(the ``--config_file`` value, the config ids) of a ``python -m monai.bundle run`` argv
    (Fire syntax: ``--id value`` or ``--id=value``)."""
    files, keys = None, []
    args = list(argv[1:])
    i = 0
    while i < len(args):
        token = args[i]
        if token.startswith("--"):
            name, eq, value = token[2:].partition("=")
            if not eq and i + 1 < len(args) and not args[i + 1].startswith("--"):
                value, i = args[i + 1], i + 1
            if name == "config_file":
                files = value
            elif name not in _BUNDLE_RUN_ARGS:
                keys.append(name)
        i += 1
    return files, keys


def check_bundle_command_line(argv: Sequence[str] | None = None) -> None:
    """Under ``python -m monai.bundle run``, refuse ``--id`` overrides that are in none of the
    ``--config_file`` files, naming the close matches (MONAI adds an unknown id silently, so a
    misspelled ``--lerning_rate`` ran with the default). A no-op in any other process (the
    Python API and ``cet-monai``, which check ``--set`` themselves). Called first in the bundles'
    ``initialize``."""
    import sys

    import yaml

    argv = list(sys.argv if argv is None else argv)
    if not argv or not os.path.normpath(argv[0]).endswith(os.path.join("monai", "bundle", "__main__.py")):
        return
    files, keys = _bundle_command_line(argv)
    if files is None or not keys:
        return
    try:
        listed = yaml.safe_load(files) if isinstance(files, str) and files.strip().startswith("[") else files
    except yaml.YAMLError:
        return
    from monai.bundle import ConfigParser

    paths = [Path(os.path.abspath(str(f))) for f in ([listed] if isinstance(listed, str) else list(listed or []))]
    try:
        merged = ConfigParser.load_config_files([str(p) for p in paths])  # as MONAI merges them for the run
    except Exception:  # noqa: BLE001 - an unreadable config: MONAI itself reports it
        return
    # the folder too: a method's train.yaml and the shared one have the same file name
    names = " + ".join(f"{p.parent.parent.name}/{p.name}" for p in paths)  # <bundle>/<file>
    check_config_keys(keys, merged, names, flag="--")


def check_device(device: str | None) -> None:
    """Refuse a device name torch does not know, or a CUDA device that is not there."""
    if device is None:
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise OptionError(f"--device {device}: not a device name (use cpu, cuda or cuda:N)") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionError(f"--device {device}: CUDA is not available on this machine (torch {torch.__version__}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise OptionError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s) (cuda:0..)")
    elif dev.type not in ("cpu", "mps", "xpu"):
        raise OptionError(f"--device {device}: use cpu, cuda or cuda:N")


def check_patch(patch_size: Sequence[int], divisor: int, training_shape: Sequence[int], path: str = "") -> None:
    """Refuse a training patch the network cannot take or the tomogram cannot give.

    Args:
        patch_size: ``(Z, Y, X)`` voxels.
        divisor: the network's size divisor (``2 ** down-samplings``).
        training_shape: ``(Z, Y, X)`` of the region patches are drawn from (the tomogram minus
            its held-out validation slab).
        path: the tomogram, named in the message.
    """
    patch = [int(p) for p in patch_size]
    if any(p < 1 for p in patch):
        raise OptionError(f"--patch-size {patch}: must be positive")
    bad = [p for p in patch if p % divisor]
    if bad:
        lo = max(divisor, bad[0] // divisor * divisor)
        raise OptionError(f"--patch-size {bad[0]}: the network needs a multiple of {divisor} (e.g. {lo} or {lo + divisor})")
    if any(p > s for p, s in zip(patch, training_shape)):
        shape = "x".join(str(int(s)) for s in training_shape)
        fit = min(int(s) for s in training_shape) // divisor * divisor
        way = f"use --patch-size {fit} or less" if fit >= divisor else "the tomogram is too small for this network"
        raise OptionError(f"{path + ': ' if path else ''}patch {'x'.join(map(str, patch))} does not fit the training region "
                          f"({shape} voxels, the tomogram minus its held-out slab); {way}")


def check_writable_folder(folder: str | os.PathLike, what: str) -> None:
    """Create ``folder`` (and parents) if needed and prove a file can be written in it.

    Done before training so that a read-only or mistyped location fails in a second, not
    after hours of fitting.
    """
    folder = Path(folder)
    for part in (folder, *folder.parents):
        if part.exists() and not part.is_dir():
            raise OptionError(f"{folder}: cannot write the {what} there: {part} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".cet_monai_write_test_"):
            pass
    except OSError as err:
        raise OptionError(f"{folder}: cannot write the {what} there ({err.strerror or err}); choose another folder") from err
