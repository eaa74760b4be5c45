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
    "release_pages",
    "disk_array",
    "SlabwiseVolume",
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
    """A numpy view of ``array`` (numpy, memmap, torch tensor or ``MetaTensor``), no copy when
    possible; a :class:`SlabwiseVolume` is returned as it is (it is read slab by slab)."""
    if isinstance(array, SlabwiseVolume):
        return array
    if hasattr(array, "detach"):  # torch.Tensor / MetaTensor without importing torch here
        array = array.detach().cpu()
        array = array.as_tensor() if hasattr(array, "as_tensor") else array
        return array.numpy()
    return np.asanyarray(array)


#: the maps made by :func:`disk_array`, by the address of their first byte: ``(end address,
#: weak reference to the numpy memmap)``. A torch tensor made with ``torch.from_numpy`` (and any
#: view of it) keeps no link to the memmap under it; its data pointer finds the map here.
_DISK_MAPS: dict[int, tuple[int, object]] = {}


def _data_address(array) -> int | None:
    """Address of the first element of a numpy array or a torch tensor, else ``None``."""
    if hasattr(array, "data_ptr"):
        try:
            return int(array.data_ptr()) if array.device.type == "cpu" else None
        except (AttributeError, RuntimeError):
            return None
    interface = getattr(array, "__array_interface__", None)
    return int(interface["data"][0]) if interface else None


def _registered_map(array):
    """The :func:`disk_array` map whose memory holds ``array``'s first element, else ``None``."""
    address = _data_address(array)
    if address is None or not _DISK_MAPS:
        return None
    for start, (end, ref) in list(_DISK_MAPS.items()):
        owner = ref()
        if owner is None:
            _DISK_MAPS.pop(start, None)
        elif start <= address < end:
            return owner
    return None


def _mmap_of(array):
    """The ``mmap.mmap`` under a numpy memmap (or a view of one), or under a torch tensor or
    numpy array viewing a :func:`disk_array` map (``torch.from_numpy``, slicing), else ``None``."""
    import mmap

    seen, start = 0, array
    while array is not None and seen < 8:
        m = getattr(array, "_mmap", None)
        if isinstance(m, mmap.mmap):
            return m
        if isinstance(array, mmap.mmap):
            return array
        array = getattr(array, "base", None)
        seen += 1
    owner = _registered_map(start)
    return None if owner is None else getattr(owner, "_mmap", None)


def release_pages(array) -> bool:
    """Drop the pages of a memory-mapped ``array`` from this process's resident memory.

    A memory map's pages, once touched, count in the process's resident set until the kernel
    needs the memory; scanning a 4 GiB tomogram would show a 4 GiB resident set (and a
    cluster's memory accounting may kill the job for it). ``madvise(MADV_DONTNEED)`` on a
    file-backed map keeps the data (they are in the file, or in the page cache after a
    ``flush`` for a writable map) and gives the pages back. Returns whether a map was found.
    """
    import mmap

    m = _mmap_of(array)
    if m is None or not hasattr(m, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return False
    try:
        if getattr(array, "flags", None) is not None and array.flags.writeable:
            m.flush()
        m.madvise(mmap.MADV_DONTNEED)
    except (OSError, ValueError):  # closed map, or a platform without madvise
        return False
    return True


def disk_array(shape, dtype=np.float32) -> np.ndarray:
    """A zero-filled writable array backed by an anonymous temporary file (``$TMPDIR``),
    for volumes that should not live in RAM; the file has no name, so nothing is left behind
    even if the process is killed. Call :func:`release_pages` after writing each slab, and after
    reading from it: it finds the map also from a torch tensor made of it with
    ``torch.from_numpy`` and from any view of one."""
    import tempfile
    import weakref

    size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    handle = tempfile.TemporaryFile(prefix="cet_monai_")
    handle.truncate(max(size, 1))
    array = np.memmap(handle, dtype=dtype, mode="r+", shape=tuple(int(s) for s in shape))
    start = _data_address(array)
    if start is not None and size:
        _DISK_MAPS[start] = (start + size, weakref.ref(array))
    return array


class SlabwiseVolume:
    """A ``(Z, Y, X)`` volume computed on read: ``fn(source[key])`` for any index ``key``, the
    pages of a memory-mapped ``source`` released after each read.

    :func:`~cet_monai.io.write_volume` copies it slab by slab into an MRC file, so a denoised
    tomogram on a disk-backed array (:func:`disk_array`) goes back to the input's intensity
    scale and into the output file without ever being whole in RAM. ``np.asarray`` makes it
    whole (the NIfTI and TIFF writers need that).
    """

    def __init__(self, source, fn=None, dtype=np.float32) -> None:
        self.source = source
        self.fn = fn
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(s) for s in source.shape)
        self.ndim = len(self.shape)

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        first = key[0] if key else slice(None)
        if isinstance(first, slice) and first.step in (None, 1):
            # a read across many planes (a YZ slice for a preview) goes slab by slab, so the
            # pages it touches are given back as it goes
            start, stop, _ = first.indices(self.shape[0])
            step = max(1, SLAB_VOXELS // max(1, int(np.prod(self.shape[1:], dtype=np.int64))))
            if stop - start > step:
                return np.concatenate([self[(slice(z, min(z + step, stop)),) + key[1:]] for z in range(start, stop, step)], axis=0)
        chunk = np.asarray(self.source[key])
        if self.fn is None:  # a copy: a view of a map would touch its pages again when used
            out = np.array(chunk, dtype=self.dtype, copy=True)
        else:
            out = np.asarray(self.fn(chunk), dtype=self.dtype)
        release_pages(self.source)
        return out

    def __array__(self, dtype=None, copy=None):
        out = np.empty(self.shape, dtype=dtype or self.dtype)
        for sl in iter_slabs(self.shape):
            out[sl] = self[sl]
        return out
