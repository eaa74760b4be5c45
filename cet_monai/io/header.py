"""The metadata of a volume that survives a read -> write round trip."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

__all__ = ["VolumeHeader"]


def _triple(value, name: str, cast=float) -> tuple:
    """``value`` as a 3-tuple (a single number is repeated); raises ``ValueError`` otherwise."""
    if np.ndim(value) == 0:
        return (cast(value),) * 3
    values = tuple(cast(v) for v in np.asarray(value).ravel())
    if len(values) != 3:
        raise ValueError(f"{name} needs 1 or 3 values (Z, Y, X), got {value!r}")
    return values


@dataclass(frozen=True)
class VolumeHeader:
    """What is known about a volume besides its voxels.

    Attributes:
        voxel_size: voxel size in angstrom, ``(Z, Y, X)`` like the array axes. ``1.0`` where the
            file gives none (or zero, the MRC "unknown").
        origin: world coordinate of the first voxel in angstrom, ``(Z, Y, X)``. MRC: the header's
            ``origin`` field; NIfTI: the translation of the affine; TIFF: always zero.
        nstart: MRC ``nzstart, nystart, nxstart`` (index of the first voxel in the unit cell),
            ``(Z, Y, X)``; zero for other formats.
        labels: MRC text labels (at most 10 of 80 characters are written).
        exttyp: MRC extended header type (e.g. ``"FEI1"``); ``""`` when there is none.
        extended_header: raw bytes of the MRC extended header; written back unchanged.
        image_stack: the MRC file is a stack of 2D images (space group 0), not a volume.
        format: ``"mrc"``, ``"nifti"``, ``"tiff"`` for a header read from a file, ``""`` otherwise.
        nifti_affine: the 4x4 affine of a NIfTI file as stored (``(i, j, k)`` = ``(X, Y, Z)``
            indices to world), so a NIfTI output keeps the input's orientation (rotations and
            flips); ``None`` otherwise. Its column lengths and translation are replaced by
            ``voxel_size`` and ``origin`` when written, so those stay authoritative.

    Only ``voxel_size`` and ``origin`` are carried to every format; the other fields are MRC's and
    are written back only to MRC files. Data statistics (min, max, mean, rms) and the MRC mode are
    not part of the header: they are recomputed from whatever array is written.
    """

    voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    nstart: tuple[int, int, int] = (0, 0, 0)
    labels: tuple[str, ...] = ()
    exttyp: str = ""
    extended_header: bytes = b""
    image_stack: bool = False
    format: str = ""
    nifti_affine: tuple | None = None

    def __post_init__(self):
        object.__setattr__(self, "voxel_size", _triple(self.voxel_size, "voxel_size"))
        object.__setattr__(self, "origin", _triple(self.origin, "origin"))
        object.__setattr__(self, "nstart", _triple(self.nstart, "nstart", int))
        object.__setattr__(self, "labels", tuple(str(s) for s in self.labels))
        object.__setattr__(self, "extended_header", bytes(self.extended_header))
        if self.nifti_affine is not None:
            a = np.asarray(self.nifti_affine, dtype=np.float64)
            if a.shape != (4, 4) or not np.isfinite(a).all():
                raise ValueError(f"nifti_affine must be a finite 4x4 matrix, got shape {a.shape}")
            object.__setattr__(self, "nifti_affine", tuple(tuple(float(v) for v in row) for row in a))
        if not all(np.isfinite(v) and v > 0 for v in self.voxel_size):
            raise ValueError(f"voxel_size must be positive and finite, got {self.voxel_size}")

    def replace(self, **changes) -> VolumeHeader:
        """A copy with some fields changed, e.g. ``header.replace(voxel_size=(10.0, 10.0, 10.0))``."""
        return dataclasses.replace(self, **changes)

    @property
    def affine(self) -> np.ndarray:
        """4x4 float64 affine mapping array indices ``(z, y, x, 1)`` to angstrom ``(Z, Y, X, 1)``."""
        affine = np.diag([*self.voxel_size, 1.0])
        affine[:3, 3] = self.origin
        return affine

    @classmethod
    def from_affine(cls, affine, **fields) -> VolumeHeader:
        """The header of a volume whose ``(Z, Y, X)`` index -> angstrom affine is ``affine``.

        The voxel size is the length of each of the first three columns (so a rotation or flip
        is dropped, not refused); the origin is the translation column.
        """
        affine = np.asarray(affine, dtype=np.float64)
        voxel_size = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
        origin = tuple(float(v) for v in affine[:3, 3])
        return cls(voxel_size=voxel_size, origin=origin, **fields)
