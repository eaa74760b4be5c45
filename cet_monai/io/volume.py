"""Read, check and write whole volumes in any supported format (MRC, NIfTI, TIFF)."""

from __future__ import annotations

import errno
import logging
import os
import uuid
from glob import escape as glob_escape
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from cet_monai.faults import fault_point
from cet_monai.errors import OutputExistsError, TomogramError
from cet_monai.io.header import VolumeHeader
from cet_monai.io.mrc import MRC_DTYPES, read_mrc, write_mrc
from cet_monai.io.nifti import NIFTI_DTYPES, read_nifti, write_nifti
from cet_monai.io.tiff import TIFF_DTYPES, read_tiff, write_tiff
from cet_monai.io.utils import SLAB_VOXELS, iter_slabs, release_pages, to_numpy, volume_format

logger = logging.getLogger(__name__)

__all__ = ["read_volume", "write_volume", "check_volume", "check_output_path", "as_float32"]

_READERS = {"mrc": read_mrc, "nifti": read_nifti, "tiff": read_tiff}
_WRITERS = {"mrc": write_mrc, "nifti": write_nifti, "tiff": write_tiff}
_DTYPES = {"mrc": MRC_DTYPES, "nifti": NIFTI_DTYPES, "tiff": TIFF_DTYPES}
_FORMAT_NAMES = {"mrc": "MRC", "nifti": "NIfTI", "tiff": "ImageJ TIFF"}


def read_volume(path: os.PathLike | str, mmap: bool = False, *, validate: bool = False):
    """Read a volume file as ``(array, header)``.

    Args:
        path: an MRC (``.mrc .rec .mrcs .map .st``), NIfTI (``.nii .nii.gz``) or TIFF
            (``.tif .tiff``) file.
        mmap: return a read-only ``numpy.memmap`` instead of loading the data (MRC always;
            NIfTI and TIFF when uncompressed), so a multi-GB tomogram is never copied whole.
        validate: also check that the data are a usable volume (:func:`check_volume`): 3D with
            no dimension of size 1, not an MRC image stack, no NaN/Inf, not constant. The value
            checks scan the whole volume slab by slab (also for memmaps, without a float64 copy).

    Returns:
        ``(array, header)``: ``array`` is ``(Z, Y, X)`` in the file's own dtype (int8, int16,
        uint16, float16, float32, ...; see :func:`as_float32`), ``header`` a :class:`VolumeHeader`.
        Without ``validate`` a single 2D image comes back as ``(1, Y, X)``. In-memory arrays
        are writeable and native-endian; a memmap of a big-endian file keeps its byte order.

    Raises:
        TomogramError: naming the file and the problem, for an unknown suffix, a missing,
            unreadable, truncated or corrupt file, and (``validate=True``) the checks above.
            A file a strict reader rejects but a permissive one reads correctly (e.g. an MRC
            file with a zero machine stamp) is read with a warning naming the file.
    """
    path = Path(path)
    fmt = volume_format(path)
    if not path.exists():
        raise TomogramError(path, "file not found")
    if path.is_dir():
        raise TomogramError(path, "is a directory, not a volume file")
    if fmt == "mrc":
        array, header = read_mrc(path, mmap=mmap, strict_size=validate)
    else:
        array, header = _READERS[fmt](path, mmap=mmap)
    if validate:
        if header.image_stack and array.shape[0] > 1:
            raise TomogramError(path, f"is a stack of {array.shape[0]} 2D images (MRC space group 0), "
                                      "not a 3D volume")
        check_volume(array, path)
    return array, header


def check_volume(array, path: os.PathLike | str = "<array>", slab_voxels: int = SLAB_VOXELS) -> None:
    """Raise :class:`TomogramError` (naming ``path``) unless ``array`` is a usable 3D volume.

    Refused: not 3D, a dimension of size 1 (a 2D image), NaN or Inf values, a constant volume.
    The value checks go slab by slab along Z, so ``array`` may be a multi-GB memmap: no more
    than one slab (``slab_voxels`` voxels, at least one Z plane) is in memory at a time, and
    nothing is cast to float64.
    """
    if hasattr(array, "detach"):  # torch; numpy arrays and memmaps are used as they are
        array = to_numpy(array)
    if array.ndim != 3:
        raise TomogramError(path, f"has shape {array.shape}, a 3D volume (Z, Y, X) is needed")
    if min(array.shape) <= 1:
        raise TomogramError(path, f"has shape (Z, Y, X) = {array.shape} with a dimension of size "
                                  f"{min(array.shape)}: a 2D image, a 3D volume is needed")
    n_nan = n_inf = 0
    lo = hi = None
    is_float = np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.complexfloating)
    for sl in iter_slabs(array.shape, slab_voxels):
        slab = np.asarray(array[sl])
        release_pages(array)  # a memory map's pages leave the resident set once scanned
        if is_float:
            n_nan += int(np.count_nonzero(np.isnan(slab)))
            n_inf += int(np.count_nonzero(np.isinf(slab)))
            if n_nan or n_inf:
                continue
        s_lo, s_hi = slab.min(), slab.max()
        lo = s_lo if lo is None else min(lo, s_lo)
        hi = s_hi if hi is None else max(hi, s_hi)
    if n_nan or n_inf:
        found = [f"{n} {what} value{'s' * (n > 1)}" for n, what in ((n_nan, "NaN"), (n_inf, "Inf")) if n]
        raise TomogramError(path, f"contains {' and '.join(found)}")
    if lo == hi:
        raise TomogramError(path, f"is constant (every voxel is {lo}): nothing to denoise")


def as_float32(array) -> np.ndarray:
    """``array`` as native float32; no copy when it already is (a float32 memmap stays a memmap)."""
    array = to_numpy(array)
    if array.dtype == np.float32 and array.dtype.isnative:
        return array
    return np.asarray(array, dtype=np.float32)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return os.path.realpath(a) == os.path.realpath(b)


def check_output_path(path: os.PathLike | str, inputs: Iterable = (), overwrite: bool = False) -> Path:
    """Check, before any long work, that ``path`` may be written; returns it as a ``Path``.

    Raises:
        TomogramError: unsupported suffix, or ``path`` is a directory.
        OutputExistsError: ``path`` is the same file as one of ``inputs`` (also through links or
            a different spelling), or already exists -- unless ``overwrite=True``.
    """
    path = Path(path)
    volume_format(path)
    if path.is_dir():
        raise TomogramError(path, "is a directory; an output file name is needed")
    if not overwrite:
        for inp in (inputs if not isinstance(inputs, (str, os.PathLike)) else (inputs,)):
            if inp is not None and _same_file(path, Path(inp)):
                raise OutputExistsError(f"{path}: output would overwrite the input {inp}; "
                                        "choose another output name (or --overwrite, overwrite=True in Python)")
        if path.exists() or path.is_symlink():
            raise OutputExistsError(f"{path}: output file already exists (--overwrite, or overwrite=True in Python, replaces it)")
    return path


def write_volume(
    path: os.PathLike | str,
    array,
    header: VolumeHeader | None = None,
    voxel_size=None,
    overwrite: bool = False,
    dtype="float32",
    inputs: Iterable = (),
) -> Path:
    """Write a ``(Z, Y, X)`` volume atomically; the format follows the suffix of ``path``.

    The data go to a hidden temporary file next to ``path`` that is renamed onto ``path`` only
    once complete (``os.replace``, or a hard link when not overwriting so a file created
    meanwhile is not clobbered). An interrupted or failed write leaves no temporary file and
    ``path`` as it was. Replacing an input that is memory-mapped is safe: the map keeps the old data.

    Args:
        path: output file (see :func:`read_volume` for the suffixes); parent folders are created.
        array: ``(Z, Y, X)`` numpy array, memmap (copied slab by slab for MRC/TIFF) or torch tensor.
        header: voxel size, origin (all formats) and MRC fields to write, e.g. the input's.
        voxel_size: angstrom, one number or ``(Z, Y, X)``; overrides ``header.voxel_size``.
        overwrite: replace an existing file, even one of ``inputs``.
        dtype: output dtype, ``"float32"`` by default, ``"float16"`` halves MRC files; ``None``
            keeps the array's. Floats written to an integer dtype are rounded and clipped.
        inputs: the files this output was computed from; writing onto one of them needs ``overwrite``.

    Returns:
        ``path`` as a ``Path``.
    """
    path = check_output_path(path, inputs=inputs, overwrite=overwrite)
    fmt = volume_format(path)
    array = to_numpy(array)
    if array.ndim != 3:
        raise TomogramError(path, f"cannot write an array of shape {array.shape}: a 3D volume (Z, Y, X) is needed")
    header = header if header is not None else VolumeHeader()
    if voxel_size is not None:
        header = header.replace(voxel_size=voxel_size)
    dtype = np.dtype(array.dtype if dtype is None else dtype)
    if dtype not in _DTYPES[fmt]:
        raise TomogramError(path, f"{_FORMAT_NAMES[fmt]} files cannot hold {dtype}; use one of "
                                  f"{', '.join(map(str, _DTYPES[fmt]))}")

    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix
    _remove_stale_temporaries(path, suffix)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp{suffix}")
    try:
        _WRITERS[fmt](tmp, array, header, dtype)
        _fsync(tmp)
        fault_point("output")
        _publish(tmp, path, overwrite)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            kept = "the previous file is intact" if path.exists() else "nothing was written"
            raise TomogramError(path, f"the disk is full ({err.strerror}); {kept} -- free space or choose another output folder") from err
        raise
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _remove_stale_temporaries(path: Path, suffix: str) -> None:
    """Delete temporaries of ``path`` left by a writer that was killed (its process is gone)."""
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*-*.tmp{glob_escape(suffix)}"):
        pid = tmp.name[len(path.name) + 2 :].split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
            logger.info("removed %s, left by an interrupted write", tmp)
        except PermissionError:
            pass  # another user's live process


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move the finished ``tmp`` onto ``path`` in one step (never half a file at ``path``)."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails if path appeared meanwhile: no clobbering
    except FileExistsError as err:
        raise OutputExistsError(f"{path}: output file already exists (--overwrite, or overwrite=True in Python, replaces it)") from err
    except OSError:  # file system without hard links
        if path.exists():
            raise OutputExistsError(f"{path}: output file already exists (--overwrite, or overwrite=True in Python, replaces it)")
        os.replace(tmp, path)
