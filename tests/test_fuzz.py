"""Hostile input: corrupted headers, wrong sizes, truncated data, absurd numbers, every mode.

Property-based (hypothesis): for every generated file the readers give a 3D array or raise the
package's one-line error (:class:`~cet_monai.errors.CetMonaiError`), never another exception,
never a hang, never an allocation sized by a corrupt header (traced peak under 64 MiB for files of
a few hundred bytes); ``cet-monai denoise`` on the same files exits 2 with one line, no traceback.
Examples per run: 150 MRC header edits, 80 MRC size/mode fields, 60 truncations, 120 NIfTI
edits, 120 TIFF edits, 20 command lines (about half a minute in all).
"""

import os
import struct
import tracemalloc
import warnings

import mrcfile
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cet_monai.cli import EXIT_USAGE, main  # noqa: E402
from cet_monai.errors import CetMonaiError  # noqa: E402
from cet_monai.io import read_volume, write_volume  # noqa: E402

FAST = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def _valid_bytes(tmp, suffix: str) -> bytes:
    path = os.path.join(tmp, f"valid{suffix}")
    data = np.arange(120, dtype=np.float32).reshape(4, 5, 6)
    if suffix == ".mrc":
        with mrcfile.new(path, overwrite=True) as m:
            m.set_data(data)
            m.voxel_size = 10.0
    else:
        write_volume(path, data, voxel_size=10.0, overwrite=True)
    with open(path, "rb") as f:
        return f.read()


def _read_or_clear_error(path) -> None:
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for mmap in (False, True):
                try:
                    data, header = read_volume(path, mmap=mmap, validate=True)
                except CetMonaiError as err:
                    assert str(path) in str(err)
                else:
                    assert data.ndim == 3 and all(np.isfinite(v) and v > 0 for v in header.voxel_size)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"{peak} bytes allocated for a {os.path.getsize(path)}-byte file"


def _write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@settings(max_examples=150, **FAST)
@given(st.lists(st.tuples(st.integers(0, 1023), st.integers(0, 255)), min_size=1, max_size=12))
def test_mrc_with_corrupted_header_bytes(tmp_path, edits):
    data = bytearray(_valid_bytes(str(tmp_path), ".mrc"))
    for position, value in edits:
        data[position] = value
    _read_or_clear_error(_write(tmp_path, "x.mrc", bytes(data)))


@settings(max_examples=80, **FAST)
@given(
    st.lists(st.sampled_from([-5, -1, 0, 1, 2, 3, 1000, 2**20, 2**31 - 1]), min_size=3, max_size=3),
    st.sampled_from([-1, 0, 1, 2, 3, 4, 6, 12, 16, 101, 255]),
    st.sampled_from([0.0, -10.0, 1e-30, 1e30, float("nan"), float("inf"), 40.0]),
)
def test_mrc_with_absurd_sizes_modes_and_cells(tmp_path, dims, mode, cell):
    data = bytearray(_valid_bytes(str(tmp_path), ".mrc"))
    struct.pack_into("<3i", data, 0, *dims)
    struct.pack_into("<i", data, 12, mode)
    struct.pack_into("<3f", data, 40, cell, cell, cell)
    _read_or_clear_error(_write(tmp_path, "x.mrc", bytes(data)))


@settings(max_examples=60, **FAST)
@given(st.integers(0, 1024 + 480 - 1))
def test_truncated_mrc(tmp_path, length):
    _read_or_clear_error(_write(tmp_path, "x.mrc", _valid_bytes(str(tmp_path), ".mrc")[:length]))


@settings(max_examples=120, **FAST)
@given(st.lists(st.tuples(st.integers(0, 351), st.integers(0, 255)), min_size=1, max_size=8), st.integers(1, 900))
def test_nifti_with_corrupted_header_or_truncated(tmp_path, edits, length):
    data = bytearray(_valid_bytes(str(tmp_path), ".nii"))
    for position, value in edits:
        data[position] = value
    _read_or_clear_error(_write(tmp_path, "x.nii", bytes(data[:length] if length < 352 else data)))


@settings(max_examples=120, **FAST)
@given(st.data())
def test_tiff_with_corrupted_bytes(tmp_path, draw):
    data = bytearray(_valid_bytes(str(tmp_path), ".tif"))
    for _ in range(draw.draw(st.integers(1, 8))):
        data[draw.draw(st.integers(0, len(data) - 1))] = draw.draw(st.integers(0, 255))
    _read_or_clear_error(_write(tmp_path, "x.tif", bytes(data)))


@pytest.mark.parametrize("values", ["nan", "inf", "constant"])
def test_non_finite_and_constant_volumes_are_refused(tmp_path, values):
    data = np.random.default_rng(0).random((8, 8, 8)).astype(np.float32)
    data = {"nan": np.where(data > 0.9, np.nan, data), "inf": np.where(data > 0.9, np.inf, data), "constant": np.ones_like(data)}[values]
    path = tmp_path / "v.mrc"
    write_volume(path, data.astype(np.float32))
    with pytest.raises(CetMonaiError):
        read_volume(path, validate=True)


@settings(max_examples=20, **FAST)
@given(st.lists(st.tuples(st.integers(0, 1023), st.integers(0, 255)), min_size=0, max_size=6),
       st.sampled_from([(4, 5, 6), (1, 64, 64), (64, 64, 1), (24, 24, 24)]))
def test_command_line_on_hostile_files_is_one_line(tmp_path, capsys, edits, shape):
    """Corrupt, 1-voxel-thin or smaller-than-a-patch: exit 2 and one line (checked before training)."""
    path = tmp_path / "t.mrc"
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.random.default_rng(1).random(shape).astype(np.float32))
    data = bytearray(path.read_bytes())
    for position, value in edits:
        data[position] = value
    path.write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["denoise", str(path), "-o", str(tmp_path / "out.mrc"), "--overwrite"])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and "Traceback" not in err and err.count("error:") == 1, err[-500:]
