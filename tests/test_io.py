"""Tests of cet_monai.io: formats, axis order, header round trips, MONAI reader/writer, bad
inputs, atomic and non-clobbering writes. Volumes are tiny; the real files are small."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import mrcfile
import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch

import cet_monai.io as cio
from cet_monai.errors import OutputExistsError, TomogramError
from cet_monai.io import VolumeHeader, check_output_path, check_volume, read_volume, write_volume

REAL = Path("/work/shared/data/real")
VESICLE = REAL / "vesicle_membrane_labels.mrc"
MT13 = REAL / "13pf_MT.tif"
MT14 = REAL / "14pf_MT.tif"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="real data folder not present")

SHAPE = (5, 6, 7)  # (Z, Y, X), all different so a transposition cannot go unnoticed
HEADER = VolumeHeader(voxel_size=(13.1, 10.52, 7.25), origin=(-40.5, 12.25, 3.0), labels=("test volume",))


def volume(dtype=np.float32, seed=0) -> np.ndarray:
    """A (Z, Y, X) volume whose values encode their position, in ``dtype``'s range."""
    z, y, x = np.indices(SHAPE)
    v = 3 * z + 5 * y - 2 * x + np.random.default_rng(seed).integers(-3, 4, size=SHAPE)
    if np.issubdtype(dtype, np.floating):
        return (v * 0.37).astype(dtype)
    return (v - (v.min() if np.iinfo(dtype).min == 0 else 0)).astype(dtype)


def write_raw_mrc(path, data, **header_fields):
    """Write an MRC file with mrcfile directly, setting raw header fields."""
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
        for key, value in header_fields.items():
            setattr(mrc.header, key, value)
    return path


# ---------------------------------------------------------------- round trips and axis order


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.uint16, np.float16, np.float32])
def test_mrc_round_trip_each_mode(tmp_path, dtype):
    data = volume(dtype)
    path = write_volume(tmp_path / "v.mrc", data, header=HEADER, dtype=None)
    with mrcfile.open(path) as mrc:  # the file itself: mode and (Z, Y, X) layout
        assert mrc.data.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(mrc.data, data)
        assert (float(mrc.header.cella.x) / mrc.header.mx) == pytest.approx(7.25)
        assert mrc.header.ispg == 1
    back, header = read_volume(path)
    assert back.dtype == np.dtype(dtype) and back.shape == SHAPE
    np.testing.assert_array_equal(back, data)
    assert header.voxel_size == (13.1, 10.52, 7.25)
    assert header.origin == (-40.5, 12.25, 3.0)
    assert header.labels == ("test volume",)
    assert header.format == "mrc"


def test_mrc_header_round_trip_is_exact(tmp_path):
    """read -> write -> read keeps every header field bit for bit, extended header included."""
    data = volume()
    ext = np.frombuffer(b"FEI-ish extended header bytes!!!", dtype="V1")
    with mrcfile.new(tmp_path / "in.mrc") as mrc:
        mrc.set_data(data)
        mrc.set_extended_header(ext)
        mrc.header.exttyp = b"FEI1"
        mrc.voxel_size = (3.3333, 1.1, 0.7)  # x, y, z
        mrc.header.origin = (1.5, -2.25, 0.1)
        mrc.header.nxstart, mrc.header.nystart, mrc.header.nzstart = -3, -2, 4
    _, first = read_volume(tmp_path / "in.mrc")
    assert first.voxel_size == (0.7, 1.1, 3.3333)
    assert first.origin == (0.1, -2.25, 1.5)
    assert first.nstart == (4, -2, -3)
    assert first.exttyp == "FEI1" and first.extended_header == ext.tobytes()
    write_volume(tmp_path / "out.mrc", data, header=first)
    _, second = read_volume(tmp_path / "out.mrc")
    assert second == first
    with mrcfile.open(tmp_path / "in.mrc") as a, mrcfile.open(tmp_path / "out.mrc") as b:
        for field in ("cella", "origin", "nxstart", "nystart", "nzstart", "mx", "my", "mz", "exttyp"):
            assert a.header[field] == b.header[field], field


def test_default_output_is_float32_and_float16_on_request(tmp_path):
    data = volume(np.int16)
    write_volume(tmp_path / "a.mrc", data)
    write_volume(tmp_path / "b.mrc", data, dtype="float16")
    with mrcfile.open(tmp_path / "a.mrc") as a, mrcfile.open(tmp_path / "b.mrc") as b:
        assert a.data.dtype == np.float32 and a.header.mode == 2
        assert b.data.dtype == np.float16 and b.header.mode == 12
        np.testing.assert_array_equal(a.data, data)
        assert float(a.header.dmax) == data.max() and float(a.header.dmin) == data.min()
        assert float(a.header.dmean) == pytest.approx(data.mean())
        assert float(a.header.rms) == pytest.approx(data.std(), rel=1e-5)


def test_float_to_integer_output_rounds_and_clips(tmp_path):
    data = np.full(SHAPE, 2.6, np.float32)
    data[0] = 500.0
    write_volume(tmp_path / "l.mrc", data, dtype="int8")
    back, _ = read_volume(tmp_path / "l.mrc")
    assert back[1, 0, 0] == 3 and back[0, 0, 0] == 127


def test_nifti_round_trip_and_axis_order(tmp_path):
    data = volume()
    path = write_volume(tmp_path / "v.nii.gz", data, header=HEADER)
    raw = nib.load(path)  # on disk NIfTI is (X, Y, Z) with pixdim (x, y, z)
    np.testing.assert_array_equal(raw.get_fdata(), data.T)
    np.testing.assert_allclose(raw.header.get_zooms(), (7.25, 10.52, 13.1), rtol=1e-6)
    back, header = read_volume(path)
    assert back.shape == SHAPE
    np.testing.assert_array_equal(back, data)
    assert header.voxel_size == (13.1, 10.52, 7.25)
    assert header.origin == (-40.5, 12.25, 3.0)
    assert header.format == "nifti"


def test_nifti_written_by_nibabel_is_read_as_zyx(tmp_path):
    """A label map made the usual way, nib.Nifti1Image(mrc.data.T), lines up with the MRC."""
    data = volume()
    mrc_path = write_volume(tmp_path / "t.mrc", data, header=HEADER)
    labels = (data > data.mean()).astype(np.uint8)
    nib.save(nib.Nifti1Image(labels.T, np.diag([7.25, 10.52, 13.1, 1.0])), tmp_path / "l.nii")
    tomo, th = read_volume(mrc_path)
    lab, lh = read_volume(tmp_path / "l.nii")
    assert lab.shape == tomo.shape
    np.testing.assert_array_equal(lab, tomo > data.mean())
    assert lh.voxel_size == th.voxel_size


def test_tiff_round_trip_and_axis_order(tmp_path):
    data = volume()
    path = write_volume(tmp_path / "v.tif", data, header=HEADER)
    np.testing.assert_array_equal(tifffile.imread(path), data)  # pages are Z
    back, header = read_volume(path)
    np.testing.assert_array_equal(back, data)
    assert header.voxel_size == (13.1, 10.52, 7.25)
    assert header.origin == (0.0, 0.0, 0.0) and header.format == "tiff"


@pytest.mark.parametrize("unit, factor", [("nm", 10.0), ("micron", 1e4), ("\\u00B5m", 1e4), ("A", 1.0)])
def test_tiff_written_by_imagej_units(tmp_path, unit, factor):
    data = volume(np.uint16)
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / 0.8, 1 / 0.6),
                     metadata={"spacing": 1.2, "unit": unit, "axes": "ZYX"})
    back, header = read_volume(path)
    np.testing.assert_array_equal(back, data)
    np.testing.assert_allclose(header.voxel_size, np.array([1.2, 0.6, 0.8]) * factor, rtol=1e-7)


def test_all_formats_agree(tmp_path):
    data = volume()
    arrays = []
    for name in ("v.mrc", "v.nii", "v.nii.gz", "v.tiff"):
        write_volume(tmp_path / name, data, header=HEADER)
        arrays.append(read_volume(tmp_path / name)[0])
    for a in arrays:
        np.testing.assert_array_equal(a, data)


def test_mrc_with_nonstandard_axis_mapping_is_transposed(tmp_path):
    data = volume()  # (Z, Y, X)
    # columns along Z, rows along X, sections along Y: data axes (section, row, column) = (Y, X, Z)
    write_raw_mrc(tmp_path / "p.mrc", np.ascontiguousarray(data.transpose(1, 2, 0)), mapc=3, mapr=1, maps=2)
    back, _ = read_volume(tmp_path / "p.mrc")
    np.testing.assert_array_equal(back, data)


# ---------------------------------------------------------------- real files


@needs_real
def test_real_vesicle_labels_zero_machine_stamp(recwarn):
    with pytest.raises(ValueError):
        mrcfile.open(VESICLE).close()  # the quirk is real: a strict open refuses it
    with pytest.warns(UserWarning, match=str(VESICLE)):
        data, header = read_volume(VESICLE, validate=True)
    assert data.shape == (50, 166, 166) and data.dtype == np.int8
    assert set(np.unique(data)) == {0, 1, 2, 3}
    assert header.voxel_size == (1.0, 1.0, 1.0) and not header.image_stack
    with pytest.warns(UserWarning, match=str(VESICLE)):
        mapped, _ = read_volume(VESICLE, mmap=True)
    assert isinstance(mapped, np.memmap)
    np.testing.assert_array_equal(mapped, data)


@needs_real
@pytest.mark.parametrize("path, shape", [(MT13, (36, 206, 94)), (MT14, (44, 136, 84))])
def test_real_imagej_tiffs(path, shape):
    data, header = read_volume(path, validate=True)
    assert data.shape == shape and data.dtype == np.uint8
    assert header.voxel_size == (10.52, 10.52, 10.52)
    np.testing.assert_array_equal(data, tifffile.imread(path))


@needs_real
def test_real_tiff_to_mrc_keeps_voxel_size(tmp_path):
    data, header = read_volume(MT13)
    write_volume(tmp_path / "mt.mrc", data, header=header, inputs=[MT13])
    back, h = read_volume(tmp_path / "mt.mrc")
    np.testing.assert_array_equal(back, data)
    assert h.voxel_size == (10.52, 10.52, 10.52)


# ---------------------------------------------------------------- memory mapping


def test_mmap_returns_file_backed_memmap(tmp_path):
    data = volume()
    path = write_volume(tmp_path / "m.mrc", data)
    mapped, _ = read_volume(path, mmap=True)
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
    with mrcfile.mmap(path, mode="r+") as mrc:  # change the file after "reading" it
        mrc.data[2, 3, 4] = 1234.5
    assert mapped[2, 3, 4] == 1234.5  # so the data were never copied into memory
    eager, _ = read_volume(path)
    assert not isinstance(eager, np.memmap) and eager.flags.writeable


def test_mmap_tiff_and_nifti(tmp_path):
    data = volume()
    for name in ("m.tif", "m.nii"):
        write_volume(tmp_path / name, data)
        mapped, _ = read_volume(tmp_path / name, mmap=True)
        assert isinstance(mapped, np.memmap), name
        np.testing.assert_array_equal(mapped, data)


def test_check_volume_reads_slab_by_slab():
    """The NaN/Inf/constant scan never asks for more than one slab, and sees every voxel."""

    class Spy:
        def __init__(self, array):
            self.array, self.shape, self.dtype, self.ndim, self.seen = array, array.shape, array.dtype, 3, []

        def __getitem__(self, index):
            part = self.array[index]
            self.seen.append(part.size)
            return part

    data = volume()
    data[-1, -1, -1] = np.nan  # only in the last slab
    spy = Spy(data)
    with pytest.raises(TomogramError, match="1 NaN value"):
        check_volume(spy, "spy.mrc", slab_voxels=2 * 6 * 7)
    assert max(spy.seen) <= 2 * 6 * 7 and sum(spy.seen) == data.size


# ---------------------------------------------------------------- MONAI reader and writer


def test_loadimage_picks_mrc_reader_after_import(tmp_path):
    from monai.data import MetaTensor
    from monai.transforms import LoadImage, LoadImaged

    data = volume()
    path = write_volume(tmp_path / "t.mrc", data, header=HEADER)
    img = LoadImage(image_only=True)(str(path))
    assert isinstance(img, MetaTensor) and tuple(img.shape) == SHAPE
    np.testing.assert_array_equal(img.numpy(), data)
    np.testing.assert_allclose(np.diag(img.affine.numpy())[:3], (13.1, 10.52, 7.25))
    np.testing.assert_allclose(img.affine.numpy()[:3, 3], (-40.5, 12.25, 3.0))
    np.testing.assert_allclose(img.meta["voxel_size"], (13.1, 10.52, 7.25))
    d = LoadImaged("image", ensure_channel_first=True)({"image": str(path)})
    assert tuple(d["image"].shape) == (1, *SHAPE)
    img2 = LoadImage(reader=cio.MRCReader(), image_only=True)(path)
    np.testing.assert_array_equal(img2.numpy(), data)


def test_mrc_reader_suffixes():
    reader = cio.MRCReader()
    for name in ("a.mrc", "A.REC", "a.mrcs", "a.map", "a.st"):
        assert reader.verify_suffix(name), name
    for name in ("tomo.state.nii.gz", "a.mapping.tif", "a.nii", "a.mrc.bak"):
        assert not reader.verify_suffix(name), name
    assert cio.VolumeReader().verify_suffix(["a.nii.gz", "b.tif", "c.mrc"])


def test_volume_reader_gives_zyx_for_nifti(tmp_path):
    from monai.transforms import LoadImage

    data = volume()
    write_volume(tmp_path / "l.nii.gz", data, header=HEADER)
    img = LoadImage(reader=cio.VolumeReader(), image_only=True)(tmp_path / "l.nii.gz")
    np.testing.assert_array_equal(img.numpy(), data)
    np.testing.assert_allclose(np.diag(img.affine.numpy())[:3], (13.1, 10.52, 7.25))


def test_saveimage_mrc_keeps_voxel_size_and_origin(tmp_path):
    from monai.transforms import LoadImage, SaveImage

    data = volume(np.int16)
    path = write_volume(tmp_path / "in.mrc", data, header=HEADER, dtype=None)
    img = LoadImage(image_only=True, ensure_channel_first=True)(path)
    SaveImage(output_dir=tmp_path, output_ext=".mrc", output_postfix="out", separate_folder=False,
              print_log=False)(img)
    back, header = read_volume(tmp_path / "in_out.mrc")
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, data)
    assert header.voxel_size == (13.1, 10.52, 7.25) and header.origin == (-40.5, 12.25, 3.0)


def test_mrc_writer_directly(tmp_path):
    writer = cio.MRCWriter(output_dtype=np.float16)
    writer.set_data_array(torch.from_numpy(volume()[None]), channel_dim=0)
    writer.set_metadata({"affine": VolumeHeader(voxel_size=(2.0, 3.0, 4.0)).affine})
    writer.write(tmp_path / "w.mrc")
    back, header = read_volume(tmp_path / "w.mrc")
    assert back.dtype == np.float16 and header.voxel_size == (2.0, 3.0, 4.0)


def test_nifti_writers_still_registered():
    """Registering our writer must not stop MONAI from filling in its own defaults."""
    from monai.data.image_writer import resolve_writer

    assert resolve_writer("nii.gz") and resolve_writer("mrc")[0] is cio.MRCWriter


# ---------------------------------------------------------------- bad inputs


def _garbage(path):
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    return path


def _truncated(path):
    write_volume(path, volume())
    path.write_bytes(path.read_bytes()[:-20])
    return path


def _two_d(path):
    return write_raw_mrc(path, volume()[0])


def _flat(path):
    return write_volume(path, np.random.default_rng(0).normal(size=(4, 1, 6)))


def _stack(path):
    with mrcfile.new(path) as mrc:
        mrc.set_data(volume())
        mrc.set_image_stack()
    return path


def _nan(path):
    data = volume()
    data[4, 5, 6] = np.nan
    return write_volume(path, data)


def _inf(path):
    data = volume()
    data[0, 0, 0] = -np.inf
    return write_volume(path, data)


def _constant(path):
    return write_volume(path, np.full(SHAPE, 7.0))


def _longer(path):
    write_volume(path, volume())
    with open(path, "ab") as f:
        f.write(b"\0" * 64)
    return path


@pytest.mark.parametrize(
    "name, make, problem",
    [
        ("missing.mrc", lambda p: p, "not found"),
        ("garbage.mrc", _garbage, "not a readable MRC"),
        ("garbage.tif", _garbage, "not a readable TIFF"),
        ("garbage.nii.gz", _garbage, "not a readable NIfTI"),
        ("truncated.mrc", _truncated, "truncated"),
        ("longer.mrc", _longer, "longer than its header"),
        ("image.mrc", _two_d, "2D image"),
        ("flat.mrc", _flat, "size 1"),
        ("stack.mrcs", _stack, "stack of 5 2D images"),
        ("nan.mrc", _nan, "1 NaN value"),
        ("inf.mrc", _inf, "1 Inf value"),
        ("constant.mrc", _constant, "constant"),
        ("volume.xyz", lambda p: p.write_bytes(b"x") and p, "supported suffixes: .mrc"),
        ("folder.mrc", lambda p: p.mkdir() or p, "directory"),
    ],
)
def test_bad_inputs_raise_tomogram_error_naming_the_file(tmp_path, name, make, problem):
    path = make(tmp_path / name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TomogramError) as info:
            read_volume(path, validate=True)
    assert str(path) in str(info.value) and str(info.value).startswith(str(path))
    assert problem in info.value.problem


def test_structural_errors_even_without_validate(tmp_path):
    for path in (tmp_path / "missing.mrc", _garbage(tmp_path / "g.mrc"), _truncated(tmp_path / "t.mrc")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(TomogramError, match=str(path)):
                read_volume(path, mmap=True)


def test_without_validate_content_is_not_judged(tmp_path):
    data, header = read_volume(_stack(tmp_path / "s.mrcs"))
    assert header.image_stack and data.shape == SHAPE
    data, _ = read_volume(_two_d(tmp_path / "i.mrc"))
    assert data.shape == (1, 6, 7)
    data, _ = read_volume(_nan(tmp_path / "n.mrc"))
    assert np.isnan(data).sum() == 1


def test_space_group_zero_volume_from_old_tools_is_a_volume(tmp_path):
    """ispg 0 with mz == nz (as IMOD and the real vesicle file write) is a volume, not a stack."""
    path = write_raw_mrc(tmp_path / "old.mrc", volume(), ispg=0)
    with mrcfile.open(path) as mrc:
        assert mrc.header.ispg == 0 and mrc.header.mz == mrc.header.nz == SHAPE[0]
    data, header = read_volume(path, validate=True)
    assert not header.image_stack and data.shape == SHAPE


# ---------------------------------------------------------------- writing safely


def test_write_refuses_to_overwrite(tmp_path):
    path = write_volume(tmp_path / "o.mrc", volume())
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match=str(path)):
        write_volume(path, volume(seed=1))
    assert path.read_bytes() == before
    write_volume(path, volume(seed=1), overwrite=True)
    np.testing.assert_array_equal(read_volume(path)[0], volume(seed=1))


def test_output_equal_to_input_is_refused(tmp_path):
    inp = write_volume(tmp_path / "in.mrc", volume())
    (tmp_path / "link.mrc").symlink_to(inp)
    for out in (inp, tmp_path / "sub" / ".." / "in.mrc", tmp_path / "link.mrc", str(inp)):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(OutputExistsError, match="input"):
            check_output_path(out, inputs=[inp])
        with pytest.raises(OutputExistsError):
            write_volume(out, volume(), inputs=[inp])
    assert check_output_path(tmp_path / "new.mrc", inputs=[inp]) == tmp_path / "new.mrc"
    write_volume(inp, volume(seed=2), inputs=[inp], overwrite=True)  # explicitly allowed
    np.testing.assert_array_equal(read_volume(inp)[0], volume(seed=2))


def test_overwriting_a_memory_mapped_input_keeps_the_map_valid(tmp_path):
    inp = write_volume(tmp_path / "in.mrc", volume())
    mapped, header = read_volume(inp, mmap=True)
    write_volume(inp, mapped * 2, header=header, inputs=[inp], overwrite=True)
    np.testing.assert_array_equal(mapped, volume())  # old data still readable
    np.testing.assert_array_equal(read_volume(inp)[0], volume() * 2)


def test_check_output_path_rejects_bad_names(tmp_path):
    with pytest.raises(TomogramError, match="supported suffixes"):
        check_output_path(tmp_path / "out.h5")
    with pytest.raises(TomogramError, match="float16"):
        write_volume(tmp_path / "out.nii", volume(), dtype="float16")
    with pytest.raises(TomogramError, match="float16"):
        write_volume(tmp_path / "out.tif", volume(), dtype="float16")
    with pytest.raises(TomogramError, match="3D"):
        write_volume(tmp_path / "out.mrc", volume()[0])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("exc", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_interrupted_write_leaves_target_untouched_and_no_temp_file(tmp_path, monkeypatch, exc):
    import cet_monai.io.mrc as mrc_module

    target = write_volume(tmp_path / "t.mrc", volume())
    before = target.read_bytes()
    real_copy = mrc_module._copy_slabs

    def copy_half_then_fail(array, out, dtype):
        real_copy(array[: array.shape[0] // 2], out[: array.shape[0] // 2], dtype)
        out.flush()
        assert len(list(tmp_path.iterdir())) == 2  # the temporary file exists at this point
        raise exc

    monkeypatch.setattr(mrc_module, "_copy_slabs", copy_half_then_fail)
    with pytest.raises(type(exc)):
        write_volume(target, volume(seed=3), overwrite=True)
    with pytest.raises(type(exc)):
        write_volume(tmp_path / "new.mrc", volume(seed=3))
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.mrc"]


def test_written_file_has_normal_permissions(tmp_path):
    path = write_volume(tmp_path / "p.mrc", volume())
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_write_accepts_torch_and_memmap(tmp_path):
    data = volume()
    write_volume(tmp_path / "t.mrc", torch.from_numpy(data))
    mapped, header = read_volume(tmp_path / "t.mrc", mmap=True)
    write_volume(tmp_path / "m.tif", mapped, header=header)
    np.testing.assert_array_equal(read_volume(tmp_path / "m.tif")[0], data)


def test_header_validation():
    assert VolumeHeader(voxel_size=4).voxel_size == (4.0, 4.0, 4.0)
    with pytest.raises(ValueError):
        VolumeHeader(voxel_size=(1.0, 2.0))
    with pytest.raises(ValueError):
        VolumeHeader(voxel_size=0.0)
    h = VolumeHeader.from_affine(HEADER.affine)
    assert h.voxel_size == pytest.approx(HEADER.voxel_size) and h.origin == pytest.approx(HEADER.origin)


def test_nifti_output_keeps_the_input_orientation(tmp_path):
    """A rotated / flipped NIfTI input: the output overlays it (same affine), voxel size and
    origin still come from the header (it used to be written with a diagonal affine)."""
    import nibabel as nib

    theta = np.deg2rad(30)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, -1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rot * np.array([7.0, 8.0, 9.0])
    affine[:3, 3] = [10.0, -20.0, 30.0]
    src = tmp_path / "in.nii.gz"
    nib.save(nib.Nifti1Image(np.random.rand(6, 5, 4).astype(np.float32), affine), src)
    data, header = read_volume(src)
    out = write_volume(tmp_path / "out.nii.gz", data, header=header)
    np.testing.assert_allclose(nib.load(out).affine, affine, atol=1e-5)
    changed = write_volume(tmp_path / "vs.nii.gz", data, header=header.replace(voxel_size=(2.0, 2.0, 2.0)))
    a = nib.load(changed).affine
    np.testing.assert_allclose(np.linalg.norm(a[:3, :3], axis=0), [2.0, 2.0, 2.0], atol=1e-5)
    np.testing.assert_allclose(a[:3, :3] / 2.0, rot, atol=1e-5)


def test_full_disk_keeps_the_previous_file_and_says_so(tmp_path, monkeypatch):
    import errno

    from cet_monai.errors import TomogramError
    from cet_monai.io import volume as volume_module

    path = tmp_path / "out.mrc"
    write_volume(path, np.zeros((4, 4, 4), np.float32))
    before = path.read_bytes()

    def full(tmp, *args):
        Path(tmp).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setitem(volume_module._WRITERS, "mrc", full)
    with pytest.raises(TomogramError, match="disk is full.*previous file is intact"):
        write_volume(path, np.ones((4, 4, 4), np.float32), overwrite=True)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.mrc"]  # no temporary left
