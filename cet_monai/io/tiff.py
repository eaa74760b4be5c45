"""TIFF stacks (``.tif .tiff``) through ``tifffile``; written as ImageJ hyperstacks.

Pages are Z, page rows Y, page columns X, so the array is already ``(Z, Y, X)``. The voxel size
comes from the ``XResolution``/``YResolution`` tags (pixels per unit) and, for Z, from the ImageJ
``spacing`` (the X size if absent), in the ImageJ ``unit`` (nm, micron, angstrom, ...) or else the
``ResolutionUnit`` tag (cm, inch); an uncalibrated file gets 1 A. Files are written in nm, which
Fiji/napari show as such. TIFF has no origin: it reads as zero and is not written.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import tifffile

from cet_monai.errors import TomogramError
from cet_monai.io.header import VolumeHeader
from cet_monai.io.utils import cast_chunk, iter_slabs

__all__ = ["read_tiff", "write_tiff", "TIFF_DTYPES", "UNIT_TO_ANGSTROM"]

#: dtypes an ImageJ TIFF can hold
TIFF_DTYPES = tuple(np.dtype(t) for t in (np.uint8, np.uint16, np.int16, np.float32))

#: length units (lower case) understood in ImageJ metadata, in angstrom
UNIT_TO_ANGSTROM = {
    "a": 1.0, "\u00e5": 1.0, "\u212b": 1.0, "angstrom": 1.0, "angstroms": 1.0,
    "nm": 10.0, "nanometer": 10.0, "nanometers": 10.0,
    "um": 1e4, "\u00b5m": 1e4, "\u03bcm": 1e4, "micron": 1e4, "microns": 1e4, "micrometer": 1e4,
    "mm": 1e7, "cm": 1e8, "m": 1e10, "inch": 2.54e8,
    "pixel": 1.0, "pixels": 1.0, "": 1.0,  # uncalibrated: one A per pixel
}
_RESUNIT_TO_ANGSTROM = {2: 2.54e8, 3: 1e8}  # TIFF ResolutionUnit tag: inch, centimeter


def _pixel_size(tag) -> float | None:
    """Pixel size in file units from an X/YResolution tag (pixels per unit), ``None`` if unset."""
    if tag is None:
        return None
    value = tag.value
    num, den = value if isinstance(value, tuple) else (value, 1)
    return float(den) / float(num) if num and den else None


def read_tiff(path: os.PathLike | str, mmap: bool = False):
    """Read the first series of a TIFF file as ``(data (Z, Y, X), VolumeHeader)``.

    With ``mmap=True`` an uncompressed, contiguous file comes back as a ``numpy.memmap``;
    otherwise (or when the file cannot be mapped) it is read whole. A single page is ``(1, Y, X)``;
    series with channels or samples (RGB) are refused.
    """
    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes, shape = series.axes, tuple(series.shape)
            page = series.pages[0] if series.pages else tif.pages[0]
            ij = tif.imagej_metadata or {}
            res_unit = int(page.tags["ResolutionUnit"].value) if "ResolutionUnit" in page.tags else 1
            xsize, ysize = _pixel_size(page.tags.get("XResolution")), _pixel_size(page.tags.get("YResolution"))
            claimed = int(np.prod(shape, dtype=np.float64)) * np.dtype(series.dtype).itemsize
            size = path.stat().st_size
            # a corrupt tag can claim gigabytes that tifffile would allocate before reading
            limit = size if int(page.compression) == 1 else 1000 * size
            if claimed > limit:
                raise TomogramError(path, f"corrupt TIFF: its tags describe {claimed} bytes of data, the file has {size}")
            data = None
            if mmap:
                try:
                    data = tifffile.memmap(path, mode="r").reshape(shape)
                except ValueError:  # compressed, tiled or not contiguous: read it
                    data = None
            if data is None:
                data = series.asarray()
        keep = [i for i, n in enumerate(shape) if n > 1 or axes[i] in "YX"]
        axes = "".join(axes[i] for i in keep)
        data = data.reshape(tuple(shape[i] for i in keep))
    except TomogramError:
        raise
    except Exception as err:  # tifffile raises many types for corrupt files
        raise TomogramError(path, f"not a readable TIFF file ({err})") from err

    if data.ndim == 2:
        data = data[np.newaxis]
    elif data.ndim != 3 or axes[-2:] != "YX" or axes[0] in "CSE":
        raise TomogramError(path, f"TIFF series has axes {axes!r} and shape {data.shape}, a single-channel "
                                  "3D stack (Z, Y, X) is needed")

    unit = str(ij.get("unit", "")).strip()
    if "\\u" in unit:  # ImageJ writes micron as the escaped text "\u00B5m"
        unit = unit.encode("ascii", "backslashreplace").decode("unicode_escape")
    unit = unit.lower()
    if "unit" in ij and unit in UNIT_TO_ANGSTROM:
        scale = UNIT_TO_ANGSTROM[unit]
    else:
        if "unit" in ij:
            warnings.warn(f"{path}: unknown ImageJ unit {ij['unit']!r}, voxel size read as angstrom", stacklevel=3)
        scale = _RESUNIT_TO_ANGSTROM.get(res_unit, 1.0)
    xsize = xsize or 1.0
    ysize = ysize or xsize
    try:
        zsize = float(ij["spacing"]) if ij.get("spacing") else xsize
    except (TypeError, ValueError):
        warnings.warn(f"{path}: unreadable ImageJ spacing {ij.get('spacing')!r}, Z voxel size taken from X", stacklevel=3)
        zsize = xsize
    # resolutions are uint32 fractions (~9 significant digits): 10.520000000950358 -> 10.52
    voxel_size = tuple(float(f"{v * scale:.9g}") for v in (zsize, ysize, xsize))
    if not all(np.isfinite(v) and v > 0 for v in voxel_size):
        warnings.warn(f"{path}: voxel size {voxel_size} is not positive and finite, read as 1 A", stacklevel=3)
        voxel_size = tuple(v if np.isfinite(v) and v > 0 else 1.0 for v in voxel_size)
    return data, VolumeHeader(voxel_size=voxel_size, format="tiff")


def write_tiff(path: os.PathLike | str, array: np.ndarray, header: VolumeHeader, dtype) -> None:
    """Write ``array`` ``(Z, Y, X)`` as an ImageJ hyperstack, voxel size in nm, one slab at a time."""
    dtype = np.dtype(dtype)  # one of TIFF_DTYPES, checked by write_volume
    vz, vy, vx = (v / 10.0 for v in header.voxel_size)

    def planes():
        for sl in iter_slabs(array.shape):
            yield from cast_chunk(np.asarray(array[sl]), dtype)

    tifffile.imwrite(
        path, planes(), shape=tuple(array.shape), dtype=dtype, imagej=True,
        resolution=(1.0 / vx, 1.0 / vy), metadata={"spacing": vz, "unit": "nm", "axes": "ZYX"},
    )
