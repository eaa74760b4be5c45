"""Small helpers shared by the format modules: suffixes, chunked iteration, dtype conversion."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from cet_monai.errors import TomogramError

__all__ = [
    "MRC_SUFFIXES",
    "NIFTI_SUFFIXES",
    "TIFF_SUFFIXES",
    "SUPPORTED_SUFFIXES",
    "volume_format",
    "has_suffix",
    "iter_slabs",
    "cast_chunk",
    "to_numpy",
    "SLAB_VOXELS",
]

MRC_SUFFIXES = (".mrc", ".rec", ".mrcs", ".map", ".st")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
TIFF_SUFFIXES = (".tif", ".tiff")
SUPPORTED_SUFFIXES = MRC_SUFFIXES + NIFTI_SUFFIXES + TIFF_SUFFIXES

#: voxels per slab when a whole volume is scanned or copied chunk-wise (32 MiB of float32)
SLAB_VOXELS = 1 << 23


def has_suffix(path: os.PathLike | str, suffixes) -> bool:
    """Whether the file name ends with one of ``suffixes`` (case-insensitive, exact ending).

    Unlike ``monai.data.utils.is_supported_format`` (a substring test), ``tomo.state.nii.gz``
    does not count as ``.st``.
    """
    name = os.fspath(path).lower()
    return any(name.endswith(s) for s in suffixes)


def volume_format(path: os.PathLike | str) -> str:
    """``"mrc"``, ``"nifti"`` or ``"tiff"`` from the file name; ``TomogramError`` for anything else."""
    for fmt, suffixes in (("mrc", MRC_SUFFIXES), ("nifti", NIFTI_SUFFIXES), ("tiff", TIFF_SUFFIXES)):
        if has_suffix(path, suffixes):
            return fmt
    raise TomogramError(path, f"unsupported file type; supported suffixes: {', '.join(SUPPORTED_SUFFIXES)}")


def iter_slabs(shape, max_voxels: int = SLAB_VOXELS) -> Iterator[slice]:
    """Slices along axis 0 that cut an array of ``shape`` into slabs of at most ``max_voxels``
    voxels (at least one plane each), so a memory-mapped volume can be scanned piecewise."""
    plane = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
    step = max(1, int(max_voxels) // max(plane, 1))
    for start in range(0, int(shape[0]), step):
        yield slice(start, min(start + step, int(shape[0])))


def cast_chunk(chunk: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``chunk`` as ``dtype``; floats going to an integer type are rounded and clipped to its range
    (instead of truncated and wrapped around) so a float label map written as int8 stays right."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer) and np.issubdtype(chunk.dtype, np.floating):
        info = np.iinfo(dtype)
        chunk = np.clip(np.rint(chunk), info.min, info.max)
    return np.asarray(chunk).astype(dtype.newbyteorder("="), copy=False)


def to_numpy(array) -> np.ndarray:
    """A numpy view of ``array`` (numpy, memmap, torch tensor or ``MetaTensor``), no copy when possible."""
    if hasattr(array, "detach"):  # torch.Tensor / MetaTensor without importing torch here
        array = array.detach().cpu()
        array = array.as_tensor() if hasattr(array, "as_tensor") else array
        return array.numpy()
    return np.asanyarray(array)
