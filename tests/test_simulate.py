"""Tests of the simulated tomograms (cet_monai.data) and the orthoslice figures (cet_monai.visualize).

Small volumes (32x48x48) keep the whole file well under a minute on two cores.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from cet_monai.data import (
    CTFParams,
    OUTPUT_FILES,
    SimulationOptionError,
    make_phantom,
    neighbour_correlation,
    simulate_to_folder,
    simulate_tomogram,
    wedge_energy_ratio,
)
from cet_monai.data import tomography as tomo
from cet_monai.errors import CetMonaiError, OutputExistsError
from cet_monai.visualize import save_orthoslices

SHAPE = (32, 48, 48)
SNR = 0.05


def _real_label_file() -> Path | None:
    here = Path(__file__).resolve()
    candidates = [os.environ.get("CET_MONAI_SHARED", "")]
    candidates += [str(p / "shared") for p in here.parents[:3]] + ["/work/shared"]
    for c in candidates:
        if c:
            f = Path(c) / "data" / "real" / "vesicle_membrane_labels.mrc"
            if f.is_file():
                return f
    return None


@pytest.fixture(scope="module")
def sim():
    return simulate_tomogram(shape=SHAPE, snr=SNR, seed=1, n_complexes=6)


def _corr(a, b) -> float:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / math.sqrt((a * a).sum() * (b * b).sum()))


# ------------------------------------------------------------------------- the phantom


def test_labels_cover_bilayers():
    ph = make_phantom(SHAPE, 10.0, seed=3)
    m, lab = ph.membrane_density, ph.labels
    assert lab.dtype == np.uint8 and set(np.unique(lab)) <= {0, 1}
    assert lab.any(), "no membrane at all"
    peaks = m > 0.5 * m.max()
    # every leaflet peak voxel is labelled ...
    assert lab[peaks].mean() > 0.99
    # ... and labelled voxels are bilayer (leaflets or the core between them), not background
    assert (m[lab == 1] > 0.05 * m.max()).mean() > 0.95
    # the label is a thin shell: far fewer labelled voxels than voxels with any membrane density
    assert lab.sum() < (m > 1e-3 * m.max()).sum()


def test_label_spans_both_leaflets_and_the_gap():
    ph = make_phantom(SHAPE, 10.0, seed=5, n_vesicles=1, n_complexes=0, sheet=False,
                      background_std=0.0)
    ves = [o for o in ph.objects if o["kind"] == "vesicle"]
    assert len(ves) == 1
    cx, cy, cz = ves[0]["center_A"]
    nz, ny, nx = SHAPE
    iz, iy = int(round(cz / 10 + (nz - 1) / 2)), int(round(cy / 10 + (ny - 1) / 2))
    ix = int(round(cx / 10 + (nx - 1) / 2))
    line_m = ph.membrane_density[iz, iy, ix:]
    line_l = ph.labels[iz, iy, ix:]
    # two leaflet maxima on the ray from the centre outwards, 3-5 voxels (30-50 A) apart
    pk = [i for i in range(1, len(line_m) - 1)
          if line_m[i] >= line_m[i - 1] and line_m[i] >= line_m[i + 1] and line_m[i] > 0.3 * line_m.max()]
    assert len(pk) >= 2
    assert 2 <= pk[1] - pk[0] <= 6
    assert line_l[pk[0]:pk[1] + 1].all(), "the space between the leaflets must be labelled"
    # the lumen centre and the far cytosol are not membrane
    assert line_l[0] == 0


def test_phantom_has_complexes_and_membranes(sim):
    counts = sim.params["counts"]
    assert counts.get("vesicle", 0) >= 1 and counts.get("sheet", 0) == 1
    # a 32 nm thick, 48 nm wide volume is crowded: not all 6 complexes find room
    assert sum(counts.get(k, 0) for k in ("ribosome", "barrel", "small")) >= 2
    assert sim.phantom.min() >= 0 and sim.phantom.max() > 0.8


# ------------------------------------------------------------------------- imaging


def test_outputs_shapes_types(sim):
    for name, v in sim.volumes().items():
        assert v.shape == SHAPE, name
        assert v.dtype == (np.uint8 if name == "labels" else np.float32), name
        assert np.isfinite(v).all(), name
    assert sim.voxel_size == 10.0
    # the projected specimen extends laterally so that 60 deg rays cross the whole slab
    assert sim.params["lateral_padding_voxels"] >= math.ceil(SHAPE[0] * math.tan(math.radians(60)))
    np.testing.assert_allclose(sim.tilt_angles, np.arange(-60, 61, 2))


def test_snr_exact(sim):
    n = sim.noisy.astype(np.float64) - sim.clean.astype(np.float64)
    measured = sim.clean.astype(np.float64).var() / n.var()
    assert abs(measured / SNR - 1) < 1e-3


def test_noisy_is_mean_of_halves(sim):
    assert np.array_equal(sim.noisy, (sim.even + sim.odd) / 2)


def test_halves_independent_and_half_dose(sim):
    ne = sim.even.astype(np.float64) - sim.clean
    no = sim.odd.astype(np.float64) - sim.clean
    assert abs(_corr(ne, no)) < 0.05
    # half the dose: each half's noise variance is twice the full tomogram's
    full = (sim.noisy.astype(np.float64) - sim.clean).var()
    assert ne.var() / full == pytest.approx(2.0, rel=0.1)
    assert no.var() / full == pytest.approx(2.0, rel=0.1)


def test_noise_is_backprojection_like(sim):
    n = sim.noise
    cz, cy, cx = (neighbour_correlation(n, a) for a in range(3))
    assert cz > 0.2, f"back-projected noise correlates along Z, got {cz:.3f}"
    assert abs(cy) < 0.05, f"rows along the tilt axis are independent, got {cy:.3f}"
    assert cx < 0, f"ramp-filtered noise anticorrelates along X, got {cx:.3f}"


def test_missing_wedge_is_empty(sim):
    for name in ("noisy", "clean"):
        assert wedge_energy_ratio(getattr(sim, name), 60.0) < 0.05, name
    # the measure sees energy where there is some: white noise and the phantom have no wedge
    white = np.random.default_rng(0).standard_normal(SHAPE)
    assert wedge_energy_ratio(white, 60.0) == pytest.approx(1.0, abs=0.2)
    assert wedge_energy_ratio(sim.phantom, 60.0) > 5 * wedge_energy_ratio(sim.clean, 60.0)


def test_slab_padding_no_truncation():
    """A laterally uniform slab reconstructs laterally uniform on the output grid only when the
    projected volume is padded (high-tilt rays cross the whole slab)."""
    nz, ny, nx = 16, 2, 32
    ang = tomo.tilt_angles(60, 2)

    def lateral_spread(pad):
        nxp = nx + 2 * pad
        pm = tomo.projection_matrix(nz, nxp, ang)
        bm = tomo.backprojection_matrix(nz, nx, ang, nxp, x_offset=pad, grid_nx=nxp)
        rec = tomo.backproject(tomo.ramp_filter(tomo.project(torch.ones(nz, ny, nxp), pm, len(ang))),
                               bm, nz, nx).numpy()
        mid = rec[nz // 4: 3 * nz // 4]
        return float(mid.std(axis=2).mean() / abs(mid.mean()))

    good = lateral_spread(tomo.lateral_padding(nz, 60))
    bad = lateral_spread(0)
    assert good < 0.05
    assert bad > 3 * good


def test_wbp_scale_full_range():
    """With a (nearly) full tilt range the WBP reproduces the density of a disc."""
    nz, nx = 48, 48
    ang = tomo.tilt_angles(89, 1)
    nxp = nx + 48
    z, x = np.meshgrid(np.arange(nz) - (nz - 1) / 2, np.arange(nxp) - (nxp - 1) / 2, indexing="ij")
    disc = torch.from_numpy(((z ** 2 + x ** 2) < 12 ** 2).astype(np.float32))[:, None, :]
    pm = tomo.projection_matrix(nz, nxp, ang)
    bm = tomo.backprojection_matrix(nz, nx, ang, nxp, x_offset=24, grid_nx=nxp)
    rec = tomo.backproject(tomo.ramp_filter(tomo.project(disc, pm, len(ang))), bm, nz, nx)
    assert rec[nz // 2, 0, nx // 2].item() == pytest.approx(1.0, abs=0.03)
    assert abs(rec[2, 0, 2].item()) < 0.03


# ------------------------------------------------------------------------- options


def test_seed_determinism(sim):
    again = simulate_tomogram(shape=SHAPE, snr=SNR, seed=1, n_complexes=6)
    for name, v in sim.volumes().items():
        assert np.array_equal(v, again.volumes()[name]), name
    other = simulate_tomogram(shape=SHAPE, snr=SNR, seed=2, n_complexes=6)
    assert not np.array_equal(other.phantom, sim.phantom)
    assert not np.array_equal(other.noisy, sim.noisy)


def test_ctf_changes_result_keeps_shapes(sim):
    c = simulate_tomogram(shape=SHAPE, snr=SNR, seed=1, n_complexes=6, ctf=CTFParams(defocus_um=3.0))
    assert c.noisy.shape == sim.noisy.shape and c.clean.shape == sim.clean.shape
    assert np.array_equal(c.phantom, sim.phantom)  # same specimen ...
    assert _corr(c.clean, sim.clean) < 0.95  # ... imaged differently
    assert abs(c.measured_snr() / SNR - 1) < 1e-3
    assert c.params["ctf"]["defocus_um"] == 3.0
    # dict and True are accepted too
    d = simulate_tomogram(shape=SHAPE, snr=SNR, seed=1, ctf={"defocus_um": 3.0}, mode="fast")
    assert d.clean.shape == SHAPE


def test_fast_mode():
    f = simulate_tomogram(shape=SHAPE, snr=SNR, seed=1, mode="fast")
    assert f.noisy.shape == SHAPE and f.mode == "fast"
    assert abs(f.measured_snr() / SNR - 1) < 1e-3
    assert np.array_equal(f.noisy, (f.even + f.odd) / 2)
    assert wedge_energy_ratio(f.noisy, 60.0) < 0.05
    assert neighbour_correlation(f.noise, 0) > 0.2


def test_bad_options():
    with pytest.raises(SimulationOptionError):
        simulate_tomogram(shape=SHAPE, mode="slow")
    with pytest.raises(CetMonaiError):
        simulate_tomogram(shape=(4, 48, 48))
    with pytest.raises(SimulationOptionError):
        simulate_tomogram(shape=SHAPE, snr=-1)
    with pytest.raises(SimulationOptionError):
        simulate_tomogram(shape=SHAPE, tilt_range=95)
    with pytest.raises(SimulationOptionError, match="noise_gradient"):
        simulate_tomogram(shape=SHAPE, noise_gradient=0)


@pytest.mark.parametrize("mode", ["tilt_series", "fast"])
def test_noise_gradient_thickens_the_lamella_along_x(mode, sim):
    """``noise_gradient=2``: the noise grows along X (about 2x between the ends; the tilts mix
    neighbouring columns), the volume's SNR is unchanged; ``1`` is the uniform default exactly."""
    g = simulate_tomogram(shape=SHAPE, snr=SNR, seed=1, n_complexes=6, mode=mode, noise_gradient=2.0)
    n = g.noisy.astype(np.float64) - g.clean
    quarter = SHAPE[2] // 4
    low, high = n[..., :quarter].std(), n[..., -quarter:].std()
    assert 1.35 < high / low < 2.0
    assert abs(g.measured_snr() / SNR - 1) < 1e-3 and g.params["noise_gradient"] == 2.0
    if mode == "tilt_series":
        u = simulate_tomogram(shape=SHAPE, snr=SNR, seed=1, n_complexes=6, noise_gradient=1.0)
        np.testing.assert_array_equal(u.noisy, sim.noisy)


def test_real_label_map_geometry():
    f = _real_label_file()
    if f is None:
        pytest.skip("shared/data/real/vesicle_membrane_labels.mrc not found")
    shape = (32, 96, 96)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the file's zero machine stamp is warned about
        s = simulate_tomogram(shape=shape, snr=SNR, seed=0, membrane_labels=f, mode="fast",
                              n_complexes=4)
        import mrcfile

        with mrcfile.open(f, permissive=True) as m:
            real = np.array(m.data)
    assert s.labels.shape == shape and s.labels.any()
    assert s.params["counts"].get("vesicle", 0) == 0 and s.params["counts"].get("sheet", 0) == 0
    # same voxel size: the labels are the real membrane, centre-cropped
    oz, oy, ox = ((np.array(real.shape) - np.array(shape)) // 2)
    ref = real[oz:oz + shape[0], oy:oy + shape[1], ox:ox + shape[2]] == 1
    dice = 2 * (ref & (s.labels == 1)).sum() / (ref.sum() + s.labels.sum())
    assert dice > 0.6, f"dice with the real membrane label {dice:.2f}"
    # the bilayer density sits on the label: much denser inside than outside
    assert s.phantom[s.labels == 1].mean() > 2 * s.phantom[s.labels == 0].mean()
    # a coarser target grid (labels at 5 A, tomogram at 10 A) halves the vesicle
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = simulate_tomogram(shape=shape, snr=SNR, seed=0, membrane_labels=f, mode="fast",
                                 n_complexes=0, labels_voxel_size=5.0)
    assert 0.15 < half.labels.sum() / s.labels.sum() < 0.6


# ------------------------------------------------------------------------- files


def _read_mrc(p):
    import mrcfile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mrcfile.open(p, permissive=True) as m:
            return np.array(m.data), tuple(float(m.voxel_size[a]) for a in "zyx")


def test_save_and_refuse_overwrite(sim, tmp_path):
    out = tmp_path / "sim"
    paths = sim.save(out)
    assert set(paths) == set(OUTPUT_FILES)
    for role in ("noisy", "clean", "phantom", "labels", "even", "odd"):
        data, vox = _read_mrc(paths[role])
        assert vox == (10.0, 10.0, 10.0), role
        np.testing.assert_array_equal(data, getattr(sim, role), err_msg=role)
    assert paths["preview"].stat().st_size > 1000
    assert paths["parameters"].read_text().startswith("{")
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left"
    before = paths["noisy"].stat().st_mtime_ns
    with pytest.raises(OutputExistsError):
        sim.save(out)
    assert paths["noisy"].stat().st_mtime_ns == before
    sim.save(out, overwrite=True)
    with pytest.raises(OutputExistsError):  # refused before simulating
        simulate_to_folder(out, shape=SHAPE)


def test_simulate_to_folder(tmp_path):
    s = simulate_to_folder(tmp_path / "f", shape=SHAPE, mode="fast", seed=4)
    data, _ = _read_mrc(tmp_path / "f" / "noisy.mrc")
    np.testing.assert_array_equal(data, s.noisy)


def test_save_orthoslices(tmp_path):
    rng = np.random.default_rng(0)
    vols = {
        "float": rng.standard_normal((10, 20, 30)).astype(np.float32),
        "torch (1,Z,Y,X)": torch.ones(1, 10, 20, 30) + torch.rand(1, 10, 20, 30),
        "labels": (rng.random((10, 20, 30)) > 0.5).astype(np.uint8) * 3,
        "constant": np.zeros((10, 20, 30), np.float32),
    }
    p = save_orthoslices(tmp_path / "o" / "fig.png", vols, voxel_size=(20.0, 10.0, 10.0), title="t")
    assert p.exists() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [q.name for q in p.parent.iterdir()] == ["fig.png"]
    with pytest.raises(ValueError):
        save_orthoslices(tmp_path / "bad.png", {"2d": np.zeros((4, 4))})
