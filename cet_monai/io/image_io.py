"""MONAI ``ImageReader`` / ``ImageWriter`` for volumes, built on :mod:`cet_monai.io.volume`.

Array and affine convention (differs from MONAI's NIfTI readers, which give ``(X, Y, Z)``):

* the spatial array is ``(Z, Y, X)``, as everywhere in ``cet_monai`` (``LoadImage`` with
  ``ensure_channel_first=True`` makes it ``(1, Z, Y, X)``);
* ``meta["affine"]`` maps indices ``(z, y, x, 1)`` to angstrom ``(Z, Y, X, 1)``: its diagonal is
  the voxel size ``(Z, Y, X)``, its last column the origin ``(Z, Y, X)``. So MONAI's spatial
  transforms (``Spacingd(pixdim=...)`` etc.) see the pixdim in array order, in angstrom;
* ``meta["voxel_size"]`` and ``meta["origin"]`` repeat these as float64 arrays ``(Z, Y, X)``;
  ``meta["spatial_shape"]`` is ``(Z, Y, X)``.

:class:`MRCWriter` takes the voxel size and origin back from the (possibly updated) affine, so
``LoadImage`` -> transforms -> ``SaveImage(output_ext=".mrc")`` keeps them.

``import cet_monai.io`` registers :class:`MRCReader` in ``monai.transforms.io.array.SUPPORTED_READERS``
(so ``LoadImage()`` / ``LoadImaged`` built afterwards pick it for MRC suffixes) and
:class:`MRCWriter` for the MRC suffixes with ``monai.data.register_writer``. ``.nii``/``.tif``
keep MONAI's own readers, which give ``(X, Y, Z)`` / 2D images: to load NIfTI or TIFF next to
MRC in one pipeline with the same axis order, pass ``reader=VolumeReader()``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from monai.data import ImageReader, ImageWriter
from monai.data.image_reader import _copy_compatible_dict, _stack_images
from monai.utils import MetaKeys, convert_data_type, ensure_tuple

from cet_monai.io.header import VolumeHeader
from cet_monai.io.utils import MRC_SUFFIXES, SUPPORTED_SUFFIXES, has_suffix, to_numpy
from cet_monai.io.volume import read_volume, write_volume

__all__ = ["VolumeReader", "MRCReader", "MRCWriter", "register_monai_io"]


class VolumeReader(ImageReader):
    """Load MRC, NIfTI or TIFF volumes as ``(Z, Y, X)`` arrays with an angstrom affine.

    Args:
        mmap: memory-map the data (the array given to ``LoadImage`` is then a read-only memmap;
            ``LoadImage`` converts it to a tensor).
        validate: run the :func:`~cet_monai.io.read_volume` checks (no NaN/Inf, not constant, 3D).
        kwargs: ignored (``LoadImage`` passes its reader arguments to every reader; positional
            ones make it retry without arguments).

    Several files are stacked on a new first (channel) axis, like MONAI's readers.
    """

    suffixes: tuple[str, ...] = SUPPORTED_SUFFIXES

    def __init__(self, *, mmap: bool = False, validate: bool = False, **kwargs):
        super().__init__()
        self.mmap = mmap
        self.validate = validate

    def verify_suffix(self, filename: Sequence[os.PathLike] | os.PathLike) -> bool:
        """Whether every file name ends with one of :attr:`suffixes`."""
        return all(has_suffix(f, self.suffixes) for f in ensure_tuple(filename))

    def read(self, data: Sequence[os.PathLike] | os.PathLike, **kwargs):
        """Read the file(s); returns ``(array, VolumeHeader)`` or a list of them."""
        filenames = ensure_tuple(data)
        images = [read_volume(f, mmap=self.mmap, validate=self.validate) for f in filenames]
        return images if len(filenames) > 1 else images[0]

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        """``(array, meta)`` from :meth:`read`'s output; see the module docstring for the keys."""
        images = img if isinstance(img, list) else [img]
        arrays, meta = [], {}
        for array, header in images:
            m = {
                MetaKeys.AFFINE: header.affine,
                MetaKeys.ORIGINAL_AFFINE: header.affine,
                MetaKeys.SPATIAL_SHAPE: np.asarray(array.shape),
                MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan"),
                "voxel_size": np.asarray(header.voxel_size, dtype=np.float64),
                "origin": np.asarray(header.origin, dtype=np.float64),
                "format": header.format,
            }
            arrays.append(array)
            _copy_compatible_dict(m, meta)
        return _stack_images(arrays, meta), meta


class MRCReader(VolumeReader):
    """:class:`VolumeReader` limited to MRC suffixes (``.mrc .rec .mrcs .map .st``); the reader
    ``LoadImage()`` picks for those files after ``import cet_monai.io``.

    Example::

        from monai.transforms import LoadImage
        img = LoadImage(reader=MRCReader(), image_only=True)("tomo.mrc")  # (Z, Y, X) MetaTensor
        img.meta["voxel_size"]  # (Z, Y, X) in angstrom
    """

    suffixes = MRC_SUFFIXES


class MRCWriter(ImageWriter):
    """Write a single-channel volume to MRC through :func:`~cet_monai.io.write_volume` (atomic).

    The array handed over by ``SaveImage`` is channel-first ``(1, Z, Y, X)`` (or ``(Z, Y, X)``
    with ``channel_dim=None``); voxel size and origin are taken from ``meta["affine"]`` (column
    lengths and translation, angstrom, ``(Z, Y, X)``). Like MONAI's other writers it overwrites.

    Args:
        output_dtype: dtype in the file (float32 by default; float16, int8, int16, uint16 also).
    """

    def __init__(self, output_dtype=np.float32, **kwargs):
        super().__init__(output_dtype=output_dtype, affine=None, **kwargs)

    def set_data_array(self, data_array, channel_dim: int | None = 0, squeeze_end_dims: bool = True, **kwargs):
        """Drop the channel axis (which must have size 1) and keep ``(Z, Y, X)``."""
        data = to_numpy(data_array)
        if channel_dim is not None:
            if data.shape[channel_dim] != 1:
                raise ValueError(f"MRC holds one channel, got shape {data.shape} with channel_dim={channel_dim}")
            data = np.squeeze(data, axis=channel_dim)
        self.data_obj = data

    def set_metadata(self, meta_dict=None, resample: bool = False, **options):
        """Take the affine from ``meta_dict``; with ``resample`` resample to ``original_affine`` first."""
        original_affine, affine, spatial_shape = self.get_meta_info(meta_dict)
        if resample and original_affine is not None:
            self.data_obj, affine = self.resample_if_needed(
                data_array=self.data_obj, affine=affine, target_affine=original_affine,
                output_spatial_shape=spatial_shape, mode=options.pop("mode", "bilinear"),
                padding_mode=options.pop("padding_mode", "border"), dtype=options.pop("dtype", np.float64),
            )
        self.affine = None if affine is None else convert_data_type(affine, np.ndarray)[0]

    def write(self, filename, verbose: bool = False, **kwargs):
        """Write ``filename`` (parent folders created, an existing file replaced)."""
        super().write(filename, verbose=verbose)
        header = VolumeHeader() if self.affine is None else VolumeHeader.from_affine(self.affine)
        dtype = self.output_dtype if self.output_dtype is not None else None
        write_volume(filename, to_numpy(self.data_obj), header=header, overwrite=True, dtype=dtype)


def register_monai_io() -> None:
    """Make ``LoadImage()`` read and ``SaveImage()`` write the MRC suffixes (idempotent).

    ``LoadImage`` builds its readers from ``SUPPORTED_READERS`` when it is constructed and tries
    the last one first, so loaders created after this call prefer :class:`MRCReader` for MRC files
    (it declines every other suffix).
    """
    from monai.data import image_writer
    from monai.transforms.io import array as io_array

    io_array.SUPPORTED_READERS.pop("mrcreader", None)
    io_array.SUPPORTED_READERS["mrcreader"] = MRCReader
    if not image_writer.SUPPORTED_WRITERS:  # MONAI fills its defaults lazily only while empty
        image_writer.init()
    for suffix in MRC_SUFFIXES:
        ext = suffix.lstrip(".")
        if MRCWriter not in image_writer.SUPPORTED_WRITERS.get(ext, ()):
            image_writer.register_writer(ext, MRCWriter)
