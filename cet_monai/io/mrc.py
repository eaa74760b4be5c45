"""MRC / CCP4 volumes (``.mrc .rec .mrcs .map .st``) through ``mrcfile``.

The data come back ``(Z, Y, X)`` (sections, rows, columns), as ``mrcfile`` gives them for the
standard axis mapping ``mapc, mapr, maps = 1, 2, 3``. A file with another mapping (some maps
from crystallographic software) is transposed (a view, also of a memmap) to ``(Z, Y, X)``, and
it is written back with the standard mapping.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import mrcfile
import numpy as np
from mrcfile.bzip2mrcfile import Bzip2MrcFile
from mrcfile.dtypes import HEADER_DTYPE
from mrcfile.utils import dtype_from_mode
from mrcfile.gzipmrcfile import GzipMrcFile

from cet_monai.errors import TomogramError
from cet_monai.io.header import VolumeHeader
from cet_monai.io.utils import cast_chunk, has_suffix, iter_slabs, release_pages

__all__ = ["read_mrc", "write_mrc", "MRC_DTYPES"]

#: dtypes an MRC file can hold (modes 0, 1, 2, 6, 12)
MRC_DTYPES = tuple(np.dtype(t) for t in (np.int8, np.int16, np.float32, np.uint16, np.float16))

_IGNORED_WARNINGS = (ResourceWarning, DeprecationWarning, PendingDeprecationWarning)


def _open(path: Path, mmap: bool):
    """Open ``path`` strictly, or else permissively.

    Returns ``(mrc, strict_error, messages)``: ``strict_error`` is why the strict open failed (or
    ``None``) and ``messages`` are the warnings ``mrcfile`` issued.
    """
    opener = mrcfile.mmap if mmap else mrcfile.open
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        strict_error = None
        try:
            mrc = opener(path, mode="r", permissive=False)
        except (ValueError, EOFError, OverflowError) as err:
            strict_error = err
            try:
                mrc = opener(path, mode="r", permissive=True)
            except Exception as err2:  # the permissive open fails only on hopeless files
                raise TomogramError(path, f"not a readable MRC file ({strict_error})") from err2
        except OSError as err:
            raise TomogramError(path, f"cannot be read ({err.strerror or err})") from err
    messages = [str(w.message) for w in caught if not issubclass(w.category, _IGNORED_WARNINGS)]
    return mrc, strict_error, messages


def _check_claimed_size(path: Path) -> None:
    """Refuse, before ``mrcfile`` reads anything, a header that claims more bytes than the file has.

    ``mrcfile`` allocates the extended header and the data block from the header's own numbers,
    so one corrupt field (e.g. ``nsymbt``) can ask for gigabytes from a tiny file. The header is
    read with ``mrcfile``'s own header dtype and mode table, in both byte orders (the machine
    stamp may itself be corrupt); modes ``mrcfile`` does not know, and compressed files, are left
    to ``mrcfile``.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(HEADER_DTYPE.itemsize)
    except OSError:
        return  # _open reports it
    if len(head) < HEADER_DTYPE.itemsize:
        raise TomogramError(path, f"truncated MRC file: {size} bytes, shorter than the {HEADER_DTYPE.itemsize}-byte header")
    claims = []
    for order in "<>":
        h = np.frombuffer(head, dtype=HEADER_DTYPE.newbyteorder(order))[0]
        nx, ny, nz, nsymbt = (int(h[k]) for k in ("nx", "ny", "nz", "nsymbt"))
        try:
            itemsize = dtype_from_mode(int(h["mode"])).itemsize
        except ValueError:
            continue
        if min(nx, ny, nz, nsymbt) >= 0:
            claims.append(len(head) + nsymbt + nx * ny * nz * itemsize)
    if claims and min(claims) > size:
        raise TomogramError(path, f"corrupt or truncated MRC file: its header describes {min(claims)} bytes, the file has {size}")


def _cell_to_size(cell: np.float32, m: int) -> float:
    """The shortest decimal ``v`` with ``float32(v * m) == cell`` (e.g. 10.52, not 10.519999821...),
    so writing ``voxel_size * m`` back as float32 reproduces the header's ``cella`` exactly."""
    cell, exact = np.float32(cell), float(cell) / m
    for digits in range(6, 18):
        candidate = float(f"{exact:.{digits}g}")
        if np.float32(candidate * m) == cell:
            return candidate
    return exact


def _voxel_size(header) -> tuple[float, float, float]:
    """``(Z, Y, X)`` voxel size in angstrom, ``cella / m``; 1.0 where unknown (zero)."""
    sizes = []
    for cell, m in ((header.cella.z, header.mz), (header.cella.y, header.my), (header.cella.x, header.mx)):
        m = int(m)
        ok = m > 0 and np.isfinite(cell) and cell > 0
        sizes.append(_cell_to_size(cell, m) if ok else 1.0)
    return tuple(sizes)


def _f32(value) -> float:
    """A float32 header value as the shortest decimal that is the same float32 (0.1, not 0.100000001...)."""
    return float(str(np.float32(value)))


def _axis_permutation(header) -> tuple[int, int, int]:
    """Permutation taking the data axes (sections, rows, columns) to ``(Z, Y, X)``."""
    crs = (int(header.mapc), int(header.mapr), int(header.maps))
    if sorted(crs) != [1, 2, 3]:  # zeros in old or sloppy files: the standard mapping
        return (0, 1, 2)
    physical = (crs[2], crs[1], crs[0])  # physical axis (1=X, 2=Y, 3=Z) of each data axis
    return (physical.index(3), physical.index(2), physical.index(1))


def _is_image_stack(path: Path, header, data) -> bool:
    """Space group 0 with several sections is an image stack (MRC2014), unless the header says
    volume otherwise: ``mz == nz`` (sampling along Z spans the sections, as IMOD and other tools
    write for tomograms with ``ispg = 0``) and the suffix is not a stack's (``.mrcs``, ``.st``)."""
    if data.ndim != 3 or int(header.ispg) != 0 or int(header.nz) <= 1:
        return False
    volume_like = int(header.mz) == int(header.nz) and not has_suffix(path, (".mrcs", ".st"))
    return not volume_like


def read_mrc(path: os.PathLike | str, mmap: bool = False, strict_size: bool = False):
    """Read an MRC file.

    Args:
        path: the file.
        mmap: memory-map the data (``mrcfile.mmap``); the returned ``numpy.memmap`` stays valid
            after the file object is closed and is read-only.
        strict_size: a file longer than its header says is an error (otherwise a warning).

    Returns:
        ``(data, header)``: data ``(Z, Y, X)`` in the file's dtype (``(1, Y, X)`` for a single
        image, ``(N, Y, X)`` for an image stack, see :func:`_is_image_stack`), and the
        :class:`VolumeHeader`.

    Raises:
        TomogramError: unreadable, truncated or corrupt files. A file that only a permissive
        open reads (e.g. a zero machine stamp) gives a warning naming the file instead.
    """
    path = Path(path)
    if not has_suffix(path, (".gz", ".bz2")):
        _check_claimed_size(path)
    mrc, strict_error, messages = _open(path, mmap)
    try:
        data, h = mrc.data, mrc.header
        if data is None:
            why = strict_error or "; ".join(messages) or "data block not readable"
            raise TomogramError(path, f"corrupt or truncated MRC file ({why})")
        if data.ndim not in (2, 3):
            raise TomogramError(path, f"is a {data.ndim}D MRC file (volume stack?) of shape {data.shape}, "
                                      "a single 3D volume is needed")
        if not isinstance(mrc, (GzipMrcFile, Bzip2MrcFile)):
            expected = int(h.nbytes) + int(h.nsymbt) + int(data.nbytes)
            extra = path.stat().st_size - expected
            if extra > 0 and strict_size:
                raise TomogramError(path, f"file is {extra} bytes longer than its header says: corrupt header?")
        if strict_error is not None or messages:
            detail = "; ".join(dict.fromkeys([str(strict_error)] * (strict_error is not None) + messages))
            how = "read in permissive mode" if strict_error is not None else "read with warnings"
            warnings.warn(f"{path}: {how}: {detail}", stacklevel=3)
        image_stack = _is_image_stack(path, h, data)
        ext = mrc.extended_header
        header = VolumeHeader(
            voxel_size=_voxel_size(h),
            origin=(_f32(h.origin.z), _f32(h.origin.y), _f32(h.origin.x)),
            nstart=(int(h.nzstart), int(h.nystart), int(h.nxstart)),
            labels=tuple(
                lab.decode("ascii", "replace").rstrip(" \x00") for lab in h.label[: max(0, min(int(h.nlabl), 10))]
            ),
            exttyp=bytes(h.exttyp).decode("ascii", "replace").rstrip(" \x00") if ext is not None and ext.nbytes else "",
            extended_header=ext.tobytes() if ext is not None else b"",
            image_stack=image_stack,
            format="mrc",
        )
        perm = _axis_permutation(h)
    finally:
        mrc.close()

    if data.ndim == 2:
        data = data[np.newaxis]
    if perm != (0, 1, 2):
        data = data.transpose(perm)
        nstart = (int(h.nzstart), int(h.nystart), int(h.nxstart))  # data axis order (section, row, column)
        header = header.replace(nstart=tuple(nstart[p] for p in perm))
    if not mmap:
        data = _writeable_native(data)
    return data, header


def _writeable_native(data: np.ndarray) -> np.ndarray:
    """An in-memory array made writeable and native-endian (in place where possible)."""
    try:
        data.flags.writeable = True
    except ValueError:
        data = data.copy()
    if not data.dtype.isnative:
        data = data.byteswap(inplace=False).view(data.dtype.newbyteorder("="))
    return data


def write_mrc(path: os.PathLike | str, array: np.ndarray, header: VolumeHeader, dtype) -> None:
    """Write ``array`` ``(Z, Y, X)`` as a new MRC file ``path`` (which must not exist) with ``header``.

    The data are copied slab by slab into a memory-mapped file, converting to ``dtype`` on the
    way, and the header statistics are computed in the same pass, so a memory-mapped input is
    never loaded whole.
    """
    dtype = np.dtype(dtype)  # one of MRC_DTYPES, checked by write_volume
    mode = int(mrcfile.utils.mode_from_dtype(dtype))
    ext = np.frombuffer(header.extended_header, dtype="V1") if header.extended_header else None
    with mrcfile.new_mmap(path, shape=tuple(array.shape), mrc_mode=mode, overwrite=False) as mrc:
        if ext is not None:
            mrc.set_extended_header(ext)
            mrc.header.exttyp = header.exttyp.encode("ascii", "replace")[:4].ljust(4)
        stats = _copy_slabs(array, mrc.data, dtype)
        h = mrc.header
        if header.image_stack:
            mrc.set_image_stack()
        else:
            mrc.set_volume()
        sampling = (int(h.mz), int(h.my), int(h.mx))
        cella = [np.float32(v * m) for v, m in zip(header.voxel_size, sampling)]
        h.cella.z, h.cella.y, h.cella.x = cella
        h.origin.z, h.origin.y, h.origin.x = (np.float32(v) for v in header.origin)
        h.nzstart, h.nystart, h.nxstart = header.nstart
        h.dmin, h.dmax, h.dmean, h.rms = stats
        if header.labels:
            labels = list(header.labels)[-10:]  # the newest ten
            h.label = [lab.encode("ascii", "replace")[:80].ljust(80) for lab in labels] + [b" " * 80] * (10 - len(labels))
            h.nlabl = len(labels)


def _copy_slabs(array: np.ndarray, out: np.ndarray, dtype: np.dtype):
    """Copy ``array`` into ``out`` slab by slab as ``dtype``; returns ``(min, max, mean, rms)``
    of the written values (float64 accumulators, one slab in memory at a time)."""
    lo, hi, total, total_sq, n = np.inf, -np.inf, 0.0, 0.0, 0
    for sl in iter_slabs(array.shape):
        chunk = cast_chunk(np.asarray(array[sl]), dtype)
        out[sl] = chunk
        release_pages(out)  # written pages go to the file; they leave the resident set (and a read map's too)
        release_pages(array)
        if chunk.size:
            lo, hi = min(lo, float(chunk.min())), max(hi, float(chunk.max()))
            wide = chunk.astype(np.float64, copy=False)  # one slab, bounded by SLAB_VOXELS
            total += float(wide.sum())
            total_sq += float(np.square(wide).sum())
            n += chunk.size
    if n == 0:
        return 0.0, 0.0, 0.0, 0.0
    mean = total / n
    rms = float(np.sqrt(max(total_sq / n - mean * mean, 0.0)))
    return lo, hi, mean, rms
