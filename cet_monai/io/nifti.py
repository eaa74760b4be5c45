"""NIfTI volumes (``.nii .nii.gz``) through ``nibabel``.

NIfTI arrays are indexed ``(i, j, k)`` = ``(X, Y, Z)``; they are transposed (a view) to
``(Z, Y, X)`` when read and back when written, so ``nib.load(p).get_fdata().T`` is what
:func:`read_nifti` returns. ``pixdim`` (the affine's column lengths) is read as the voxel size in
angstrom exactly as stored -- NIfTI's nominal unit (mm) and ``xyzt_units`` are ignored, and
files are written with units "unknown" -- so a label map made for an MRC tomogram round-trips
with the tomogram's voxel size. Rotations and flips in the affine are not applied to the array;
they are kept in the header (``VolumeHeader.nifti_affine``) and written back to NIfTI outputs, so
an output overlays its input in any NIfTI viewer.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from cet_monai.errors import TomogramError
from cet_monai.io.header import VolumeHeader
from cet_monai.io.utils import cast_chunk

__all__ = ["read_nifti", "write_nifti", "NIFTI_DTYPES"]

#: dtypes a NIfTI-1 file can hold (no float16)
NIFTI_DTYPES = tuple(
    np.dtype(t) for t in (np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.float32, np.float64)
)


def _f32(value) -> float:
    """A float32 header value as the shortest decimal that is the same float32 (10.52, not 10.5200004...)."""
    return float(str(np.float32(value)))


def read_nifti(path: os.PathLike | str, mmap: bool = False):
    """Read a NIfTI file as ``(data (Z, Y, X), VolumeHeader)``.

    With ``mmap=True`` an uncompressed, unscaled file comes back as a ``numpy.memmap`` view;
    compressed or scaled (``scl_slope``) files are read whole. Trailing singleton dimensions
    are dropped; a 2D image comes back as ``(1, Y, X)``.
    """
    path = Path(path)
    try:
        img = nib.load(path, mmap="r" if mmap else False)
        data = np.asanyarray(img.dataobj)
    except Exception as err:  # nibabel raises many types for corrupt files
        raise TomogramError(path, f"not a readable NIfTI file ({err})") from err
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim > 3:
        raise TomogramError(path, f"is a {data.ndim}D NIfTI image of shape {data.shape}, a single 3D volume is needed")
    while data.ndim < 3:
        data = data[..., np.newaxis]
    zooms = [_f32(z) for z in img.header.get_zooms()[:3]]
    zooms += [1.0] * (3 - len(zooms))
    voxel_size = tuple(z if np.isfinite(z) and z > 0 else 1.0 for z in reversed(zooms))
    origin = tuple(_f32(v) for v in img.affine[2::-1, 3])
    affine = np.asarray(img.affine, dtype=np.float64)
    kept = affine if np.isfinite(affine).all() and abs(np.linalg.det(affine[:3, :3])) > 0 else None
    return data.transpose(2, 1, 0), VolumeHeader(voxel_size=voxel_size, origin=origin, format="nifti", nifti_affine=kept)


def write_nifti(path: os.PathLike | str, array: np.ndarray, header: VolumeHeader, dtype) -> None:
    """Write ``array`` ``(Z, Y, X)`` as NIfTI-1: the input's orientation (``header.nifti_affine``,
    else axis-aligned) with ``header``'s voxel size and origin."""
    dtype = np.dtype(dtype)  # one NIfTI can hold, checked by write_volume
    affine = np.diag([*header.voxel_size[::-1], 1.0])
    if header.nifti_affine is not None:
        stored = np.asarray(header.nifti_affine, dtype=np.float64)[:3, :3]
        directions = stored / np.linalg.norm(stored, axis=0)
        affine[:3, :3] = directions * np.asarray(header.voxel_size[::-1])
    affine[:3, 3] = header.origin[::-1]
    data = cast_chunk(np.asarray(array), dtype).transpose(2, 1, 0)
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("unknown", "unknown")
    nib.save(img, os.fspath(path))
