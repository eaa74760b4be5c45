"""Tomogram I/O: MRC, NIfTI and TIFF volumes, and MONAI readers/writers for them.

Axis order, once for all formats: every array this package reads or writes is ``(Z, Y, X)``,
the order of ``mrcfile`` (sections, rows, columns); voxel size and origin are angstrom tuples in
the same order (see :class:`VolumeHeader`).

* MRC: as ``mrcfile`` gives it (files with a non-standard ``mapc/mapr/maps`` are transposed to
  it); the header's X, Y, Z fields are reversed.
* NIfTI: nibabel's ``(i, j, k)`` = ``(X, Y, Z)`` array is transposed (``.T``); ``pixdim`` is
  read as angstrom as stored (no mm conversion).
* TIFF: pages are Z, so the stack is already ``(Z, Y, X)``; ImageJ calibration (nm, micron)
  is converted to angstrom.

So ``read_volume("labels.nii.gz")[0][z, y, x]`` and ``read_volume("tomo.mrc")[0][z, y, x]`` are
the same voxel when the NIfTI was written by :func:`write_volume` (or as ``nib.Nifti1Image(mrc.data.T, ...)``).

Importing this package registers :class:`MRCReader` / :class:`MRCWriter` with MONAI's
``LoadImage`` / ``SaveImage`` for ``.mrc .rec .mrcs .map .st`` (see :mod:`cet_monai.io.image_io`
for the MONAI-side affine convention).
"""

from cet_monai.io.header import VolumeHeader
from cet_monai.io.image_io import MRCReader, MRCWriter, VolumeReader, register_monai_io
from cet_monai.io.utils import (
    MRC_SUFFIXES,
    NIFTI_SUFFIXES,
    SUPPORTED_SUFFIXES,
    TIFF_SUFFIXES,
    iter_slabs,
    volume_format,
)
from cet_monai.io.volume import as_float32, check_output_path, check_volume, read_volume, write_volume

register_monai_io()

__all__ = [
    "VolumeHeader",
    "read_volume",
    "write_volume",
    "check_volume",
    "check_output_path",
    "as_float32",
    "iter_slabs",
    "volume_format",
    "MRCReader",
    "MRCWriter",
    "VolumeReader",
    "register_monai_io",
    "MRC_SUFFIXES",
    "NIFTI_SUFFIXES",
    "TIFF_SUFFIXES",
    "SUPPORTED_SUFFIXES",
]
