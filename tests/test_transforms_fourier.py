"""Statistical and API tests of the Fourier-space (Noise2Noise) transforms.

White-noise correlations between input and target (printed with ``pytest -s``) are the point:
~0 for split masks, clearly > 0 for seed-style masks.
"""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from cet_monai.transforms import (
    FourierSamplePool,
    RandFourierPair,
    RandFourierPaird,
    combine_split_predictions,
    expected_bernoulli_mask,
    fourier_versions,
    hermitian_symmetrize,
    is_hermitian_consistent,
    measured_mask,
    missing_wedge_mask,
    bernoulli_fourier_mask,
    split_fourier_mask,
)

DIMS = (-3, -2, -1)


def _noise(shape, seed=0):
    return np.random.RandomState(seed).randn(*shape).astype(np.float32)


def _corr(a, b):
    a = a.double().flatten() - a.double().mean()
    b = b.double().flatten() - b.double().mean()
    return float((a @ b) / (a.norm() * b.norm()))


# ---------------------------------------------------------------- masks


@pytest.mark.parametrize("shape", [(8, 8, 8), (7, 9, 11), (6, 5, 8), (32, 32, 8)])
def test_masks_are_hermitian_consistent(shape):
    rng = np.random.RandomState(0)
    assert is_hermitian_consistent(bernoulli_fourier_mask(rng, shape, block_scale=2), shape[-1])
    assert is_hermitian_consistent(split_fourier_mask(rng, shape), shape[-1])
    assert is_hermitian_consistent(split_fourier_mask(rng, shape, block_size=2), shape[-1])
    assert is_hermitian_consistent(missing_wedge_mask(shape), shape[-1])
    raw = torch.rand(shape[0], shape[1], shape[2] // 2 + 1) < 0.5
    assert is_hermitian_consistent(hermitian_symmetrize(raw, shape[-1]), shape[-1])


@pytest.mark.parametrize("shape", [(16, 16, 16), (9, 12, 15)])
def test_hermitian_mask_equals_full_spectrum_masking(shape):
    """irfftn(F*w) on the half spectrum == real ifftn(F_full*w_full) with w_full(-k) = w(k)."""
    x = torch.as_tensor(_noise(shape))
    m = split_fourier_mask(np.random.RandomState(1), shape).float()
    half = torch.fft.irfftn(torch.fft.rfftn(x) * m, s=shape)
    # full-grid mask: take the half where it exists, the conjugate point's value elsewhere
    nz, ny, nx = shape
    full = torch.empty(shape)
    for i in range(nz):
        for j in range(ny):
            for k in range(nx):
                if k <= nx // 2:
                    full[i, j, k] = m[i, j, k]
                else:
                    full[i, j, k] = m[(-i) % nz, (-j) % ny, (-k) % nx]
    ref = torch.fft.ifftn(torch.fft.fftn(x) * full)
    assert ref.imag.abs().max() < 1e-4
    torch.testing.assert_close(half, ref.real, atol=1e-4, rtol=1e-4)


def test_missing_wedge_geometry():
    shape = (32, 16, 32)
    w = missing_wedge_mask(shape, tilt_range_deg=60)
    assert w.shape == (32, 16, 17)
    assert not w[0, 0, 0]  # DC measured
    assert w[5, 3, 0] and not w[0, 3, 5]  # kz axis missing, kx axis measured
    assert torch.equal(w[:, 0], w[:, 7])  # same for every ky (tilt axis Y)
    # fraction of the kz-kx plane in the wedge ~ (90-60)/90 = 1/3 of angles
    assert 0.2 < w.float().mean().item() < 0.45
    assert not missing_wedge_mask(shape, tilt_range_deg=90).any()
    assert measured_mask(shape, None) is None
    wx = missing_wedge_mask(shape, tilt_range_deg=60, tilt_axis="X")
    assert wx[5, 0, 3] and not wx[0, 5, 3]


# ---------------------------------------------------------------- shapes / real / determinism


@pytest.mark.parametrize("mode", ["patch", "split"])
@pytest.mark.parametrize("shape", [(1, 16, 16, 16), (2, 13, 11, 9), (1, 10, 12, 7)])
def test_samples_real_and_shaped(mode, shape):
    x = _noise(shape)
    pairs = RandFourierPair(mode=mode, num_samples=2, margin=2).set_random_state(0).draw(x)
    assert len(pairs) == 2
    for a, b in pairs:
        assert a.shape == b.shape == (shape[0],) + tuple(s - 4 for s in shape[1:])
        assert a.dtype == torch.float32 and not torch.is_complex(a)
        assert torch.isfinite(a).all() and torch.isfinite(b).all()


@pytest.mark.parametrize("mode", ["patch", "split"])
def test_reproducible_numpy_torch_and_dict_agree(mode):
    x = _noise((1, 12, 11, 10), 3)
    a = RandFourierPair(mode=mode, num_samples=3).set_random_state(4).draw(x)
    b = RandFourierPair(mode=mode, num_samples=3).set_random_state(4).draw(torch.as_tensor(x))
    c = RandFourierPaird("image", mode=mode, num_samples=3).set_random_state(4)({"image": x, "k": 1})
    d = RandFourierPair(mode=mode, num_samples=3).set_random_state(5).draw(x)
    assert len(c) == 3
    for (ia, ta), (ib, tb), item in zip(a, b, c):
        torch.testing.assert_close(ia.as_tensor(), ib.as_tensor())
        torch.testing.assert_close(ta.as_tensor(), tb.as_tensor())
        torch.testing.assert_close(item["image"].as_tensor(), ia.as_tensor())
        torch.testing.assert_close(item["label"].as_tensor(), ta.as_tensor())
        assert item["k"] == 1
    assert not torch.allclose(a[0][0], d[0][0])


def test_margin_from_metadata_and_affine():
    x = MetaTensor(torch.as_tensor(_noise((1, 16, 16, 16))), meta={"patch_margin": torch.tensor([2, 3, 4])})
    a, b = RandFourierPair(mode="split").set_random_state(0)(x)
    assert a.shape == (1, 12, 10, 8)
    torch.testing.assert_close(a.affine[:3, 3], torch.tensor([2.0, 3.0, 4.0], dtype=a.affine.dtype))
    assert a.meta["patch_margin"].tolist() == [0, 0, 0]


def test_prob_zero_gives_identity_pairs():
    x = _noise((1, 10, 10, 10))
    out = RandFourierPaird("image", mode="split", prob=0.0, num_samples=2, margin=1)({"image": x})
    assert len(out) == 2
    torch.testing.assert_close(out[0]["image"].as_tensor(), torch.as_tensor(x)[:, 1:-1, 1:-1, 1:-1])
    torch.testing.assert_close(out[0]["label"].as_tensor(), out[0]["image"].as_tensor())


# ---------------------------------------------------------------- split exactness


@pytest.mark.parametrize("shape", [(1, 16, 16, 16), (1, 9, 11, 7), (1, 32, 32, 8)])
def test_split_halves_partition_measured_spectrum(shape):
    x = torch.as_tensor(_noise(shape, 1))
    t = RandFourierPair(mode="split", scaling="none", keep_dc=False, num_samples=1).set_random_state(2)
    a, b = t(x)
    sa, sb = torch.fft.rfftn(a.as_tensor(), dim=DIMS), torch.fft.rfftn(b.as_tensor(), dim=DIMS)
    # disjoint supports, union = measured region
    assert (sa * sb).abs().max() < 1e-5 * sa.abs().max() * sb.abs().max()
    w = measured_mask(shape[1:], 60.0).float()
    x_w = torch.fft.irfftn(torch.fft.rfftn(x, dim=DIMS) * w, s=shape[1:], dim=DIMS)
    torch.testing.assert_close(a.as_tensor() + b.as_tensor(), x_w, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("shape", [(32, 32, 32), (33, 31, 29), (32, 32, 8)])
@pytest.mark.parametrize("tilt", [60.0, None])
def test_split_white_noise_correlation_is_zero(shape, tilt):
    """Mean over 8 noise/mask draws of corr(input, target); SE ~ 1/sqrt(8 N)."""
    reps = 8
    rs = []
    t = RandFourierPair(mode="split", tilt_range_deg=tilt, num_samples=1).set_random_state(0)
    for r in range(reps):
        x = _noise((1,) + shape, 100 + r)
        a, b = t(x)
        rs.append(_corr(a, b))
    n = np.prod(shape)
    mean_r = float(np.mean(rs))
    print(f"split corr shape={shape} tilt={tilt}: mean r = {mean_r:+.1e}, max |r| = {np.max(np.abs(rs)):.1e}")
    assert abs(mean_r) < 5 / np.sqrt(reps * n)
    assert np.max(np.abs(rs)) < 1e-4  # disjoint spectral supports: zero up to float error (Parseval)


@pytest.mark.parametrize("shape", [(32, 32, 32), (33, 31, 29), (32, 32, 8)])
def test_split_with_margin_white_noise_correlation_is_zero(shape):
    """Per-patch split with a cropped margin: halves no longer orthogonal, still independent."""
    reps, margin = 8, 4
    t = RandFourierPair(mode="split", margin=margin, num_samples=1).set_random_state(0)
    rs = [_corr(*t(_noise((1,) + tuple(s + 2 * margin for s in shape), 300 + r))) for r in range(reps)]
    mean_r = float(np.mean(rs))
    print(f"split+margin corr shape={shape}: mean r = {mean_r:+.5f}, sd r = {np.std(rs):.5f}")
    assert abs(mean_r) < 5 / np.sqrt(reps * np.prod(shape))


@pytest.mark.parametrize("shape", [(32, 32, 32), (32, 32, 8)])
def test_control_non_hermitian_split_leaks(shape):
    """Control: the same split WITHOUT Hermitian symmetrisation correlates input and target noise."""
    rs = []
    for r in range(8):
        x = torch.as_tensor(_noise(shape, 200 + r))
        m = torch.rand(shape[0], shape[1], shape[2] // 2 + 1, generator=torch.Generator().manual_seed(r)) < 0.5
        spec = torch.fft.rfftn(x)
        rs.append(_corr(torch.fft.irfftn(spec * m, s=shape), torch.fft.irfftn(spec * ~m, s=shape)))
    print(f"non-Hermitian split corr shape={shape}: mean r = {np.mean(rs):+.4f}")
    assert np.mean(rs) > 5 / np.sqrt(8 * np.prod(shape))


@pytest.mark.parametrize("block", [2, 4])
def test_split_blocks_white_noise_correlation_is_zero(block):
    shape = (32, 32, 8)
    t = RandFourierPair(mode="split", split_block_size=block, num_samples=1).set_random_state(1)
    rs = [_corr(*t(_noise((1,) + shape, r))) for r in range(8)]
    assert abs(np.mean(rs)) < 5 / np.sqrt(8 * np.prod(shape))


def test_seed_masks_white_noise_correlation_is_positive():
    shape = (1, 32, 32, 32)
    rs_patch = [_corr(a, b) for a, b in RandFourierPair(mode="patch", num_samples=8).set_random_state(0).draw(_noise(shape))]
    x = _noise(shape, 9)
    pool = FourierSamplePool(x, num_samples=16, kind="bernoulli", seed=0, storage="ram")
    t = RandFourierPair(mode="pool", pool=pool, num_samples=8).set_random_state(0)
    rs_pool = [_corr(a, b) for a, b in t.draw(torch.as_tensor(x), patch_start=(0, 0, 0))]
    print(f"seed corr patch: {np.mean(rs_patch):.3f}, pool: {np.mean(rs_pool):.3f}")
    assert np.mean(rs_patch) > 0.2 and np.mean(rs_pool) > 0.2


# ---------------------------------------------------------------- expectations (Monte Carlo)


def test_seed_expected_sample_monte_carlo():
    shape = (1, 10, 9, 7)
    x = torch.as_tensor(_noise(shape, 5)) + 1.0
    n = 400  # pairs: 800 samples
    pairs = RandFourierPair(mode="patch", num_samples=n, block_scale=2).set_random_state(3).draw(x)
    samples = torch.stack([a.as_tensor() for a, _ in pairs] + [b.as_tensor() for _, b in pairs]).double()
    mean, se = samples.mean(0), samples.std(0) / np.sqrt(samples.shape[0])
    ew = expected_bernoulli_mask(shape[1:])
    expected = torch.fft.irfftn(torch.fft.rfftn(x.double(), dim=DIMS) * ew, s=shape[1:], dim=DIMS)
    z = ((mean - expected) / se).abs().max().item()
    assert z < 5.0, z
    # and the mask mean itself
    rng = np.random.RandomState(0)
    masks = torch.stack([bernoulli_fourier_mask(rng, shape[1:], block_scale=2) for i in range(2 * n)])
    zm = ((masks.double().mean(0) - ew) / (masks.double().std(0) / np.sqrt(2 * n) + 1e-12)).abs().max().item()
    assert zm < 5.0, zm


@pytest.mark.parametrize("scaling,factor", [("energy", np.sqrt(0.5)), ("mean", 1.0)])
def test_split_expected_sample_monte_carlo(scaling, factor):
    shape = (1, 8, 9, 10)
    x = torch.as_tensor(_noise(shape, 6)) + 2.0
    n = 500
    pairs = RandFourierPair(mode="split", scaling=scaling, num_samples=n).set_random_state(1).draw(x)
    spec = torch.fft.rfftn(x.double(), dim=DIMS)
    w = measured_mask(shape[1:], 60.0).double() * factor
    w[0, 0, 0] = 1.0  # keep_dc: the mean passes unscaled
    expected = torch.fft.irfftn(spec * w, s=shape[1:], dim=DIMS)
    for k in (0, 1):
        s = torch.stack([p[k].as_tensor() for p in pairs]).double()
        z = ((s.mean(0) - expected) / (s.std(0) / np.sqrt(n))).abs().max().item()
        assert z < 5.0, (scaling, k, z)


def test_split_energy_scaling_preserves_noise_variance():
    shape = (1, 24, 24, 24)
    x = _noise(shape, 2)
    a, b = RandFourierPair(mode="split", tilt_range_deg=None).set_random_state(0)(x)
    assert abs(a.std().item() - 1.0) < 0.05 and abs(b.std().item() - 1.0) < 0.05


# ---------------------------------------------------------------- pool


def test_pool_reads_match_recomputation_and_memmap(tmp_path):
    x = _noise((1, 12, 14, 10), 4) * 5 + 100
    pool = FourierSamplePool(x, num_samples=4, kind="bernoulli", seed=3, directory=tmp_path)
    assert pool.path and pool.path.startswith(str(tmp_path)) and isinstance(pool._data, np.memmap)
    rng = np.random.RandomState(int(pool.sample_seeds[2]))
    w = bernoulli_fourier_mask(rng, x.shape[1:])
    ref = torch.fft.irfftn(torch.fft.rfftn(torch.as_tensor(x[0])) * w, s=x.shape[1:]).numpy()
    got = pool.sample(2)[0]
    # float16 storage of the standardised sample: error ~ 5e-4 std per unit of |z|
    assert np.abs(got - ref).max() < 3e-3 * ref.std()
    patch = pool.read([2], (1, 2, 3), (4, 5, 6))[0, 0]
    np.testing.assert_allclose(patch, got[1:5, 2:7, 3:9])
    path = pool.path
    pool.close()
    import os

    assert not os.path.exists(path)


def test_split_pool_pairs_are_complementary():
    x = _noise((1, 12, 12, 12), 8)
    pool = FourierSamplePool(x, num_samples=4, kind="split", scaling="none", keep_dc=False, storage="ram")
    w = measured_mask(x.shape[1:], 60.0).float()
    x_w = torch.fft.irfftn(torch.fft.rfftn(torch.as_tensor(x[0])) * w, s=x.shape[1:]).numpy()
    for i in range(pool.num_pairs):
        np.testing.assert_allclose(pool.sample(2 * i)[0] + pool.sample(2 * i + 1)[0], x_w, atol=5e-3)
    t = RandFourierPaird("image", mode="pool", pool=pool, num_samples=2).set_random_state(0)
    item = {"image": torch.zeros(1, 6, 6, 6), "patch_start": torch.tensor([1, 2, 3])}
    out = t(item)
    for o in out:
        np.testing.assert_allclose((o["image"] + o["label"])[0].numpy(), x_w[1:7, 2:8, 3:9], atol=5e-3)


def test_pool_mode_draws_distinct_members_and_average():
    x = _noise((1, 10, 10, 10))
    pool = FourierSamplePool(x, num_samples=12, kind="bernoulli", storage="ram")
    t = RandFourierPair(mode="pool", pool=pool, num_samples=6)
    t.set_random_state(0)
    t.randomize((10, 10, 10), 6)
    members = [i for pair in t._draws for i in pair]
    assert len(set(members)) == 12
    with pytest.raises(ValueError):
        RandFourierPair(mode="pool", pool=pool, num_samples=7)
    avg = RandFourierPaird("image", mode="pool", pool=pool, num_samples=3, average=True).set_random_state(1)
    out = avg({"image": MetaTensor(torch.zeros(1, 4, 4, 4), meta={"patch_start": torch.tensor([0, 1, 2])})})
    assert len(out) == 1 and out[0]["image"].shape == (1, 4, 4, 4)
    with pytest.raises(ValueError):
        RandFourierPair(mode="split", average=True)


# ---------------------------------------------------------------- inference helpers


def test_fourier_versions_and_combine():
    x = torch.as_tensor(_noise((2, 1, 12, 10, 9), 1))
    g = torch.Generator().manual_seed(0)
    v = fourier_versions(x, 6, mode="split", generator=g)
    assert v.inputs.shape == (6, 2, 1, 12, 10, 9) and v.input_masks.shape == (6, 2, 1, 12, 10, 5)
    # the inputs really are the masked spectra
    spec = torch.fft.rfftn(x, dim=DIMS)
    torch.testing.assert_close(torch.fft.rfftn(v.inputs, dim=DIMS), spec * v.input_weights, atol=1e-4, rtol=1e-3)
    # an oracle that predicts target_scale * (x - mean) + mean is merged back to x
    mean = x.mean(dim=DIMS, keepdim=True)
    preds = (v.target_scale * (x - mean) + mean).unsqueeze(0).expand(6, -1, -1, -1, -1, -1)
    torch.testing.assert_close(combine_split_predictions(preds, v.input_masks, v.target_scale), x, atol=1e-4, rtol=1e-4)
    # same generator seed -> same versions; seed mode works too
    v2 = fourier_versions(x, 6, mode="split", generator=torch.Generator().manual_seed(0))
    assert torch.equal(v.input_masks, v2.input_masks)
    # torch.Generator masks are Hermitian-consistent too (odd and even X)
    for k in range(6):
        assert is_hermitian_consistent(v.input_masks[k, 0, 0], 9)
    g = torch.Generator().manual_seed(1)
    for shape in [(8, 6, 10), (7, 5, 9)]:
        assert is_hermitian_consistent(bernoulli_fourier_mask(g, shape, block_scale=2), shape[-1])
        assert is_hermitian_consistent(split_fourier_mask(g, shape, block_size=2), shape[-1])
    vs = fourier_versions(x, 3, mode="bernoulli", generator=1)
    assert vs.inputs.shape == (3, 2, 1, 12, 10, 9) and vs.input_masks is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_gpu_stays_on_gpu_and_matches_cpu():
    x = torch.as_tensor(_noise((1, 16, 15, 14)))
    for mode in ("patch", "split"):
        cpu = RandFourierPair(mode=mode, num_samples=2, margin=1).set_random_state(3).draw(x)
        gpu = RandFourierPair(mode=mode, num_samples=2, margin=1).set_random_state(3).draw(x.cuda())
        for (a, b), (c, d) in zip(cpu, gpu):
            assert c.device.type == "cuda" and d.device.type == "cuda"
            torch.testing.assert_close(a.as_tensor(), c.as_tensor().cpu(), atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(b.as_tensor(), d.as_tensor().cpu(), atol=1e-4, rtol=1e-4)
    g = torch.Generator(device="cuda").manual_seed(0)
    v = fourier_versions(x.cuda()[None], 4, generator=g)
    assert v.inputs.device.type == "cuda" and v.input_masks.device.type == "cuda"
    out = combine_split_predictions(v.inputs, v.input_masks, v.target_scale)
    assert out.device.type == "cuda"


@pytest.mark.parametrize("name", ["RandBernoulliMask", "RandFourierPair", "RandTomogramPatchd"])
def test_plain_monai_compose_randomize_skips_instead_of_crashing(name):
    """MONAI's Compose.randomize(data) passes the data to every transform's randomize and skips,
    with a warning, those raising TypeError; ours take a shape, so data is a TypeError (it was a
    ValueError, which crashed the Compose), and the Compose still runs."""
    import warnings

    from monai.transforms import Compose

    import cet_monai.transforms as T

    x = torch.randn(1, 24, 24, 24)
    transform = T.RandTomogramPatchd(keys="image", patch_size=[8, 8, 8]) if name == "RandTomogramPatchd" else getattr(T, name)()
    data = {"image": x} if name == "RandTomogramPatchd" else x
    compose = Compose([transform])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compose.randomize(data)
    assert any("not randomized" in str(w.message) for w in caught)
    with pytest.raises(TypeError, match="spatial shape"):
        transform.randomize(x if name != "RandTomogramPatchd" else (x, None))
    assert compose(data) is not None


def test_old_name_of_the_bernoulli_masks_is_refused_with_its_new_name():
    from cet_monai.inferers.samplers import FourierSampler

    x = torch.zeros(1, 1, 8, 8, 8)
    with pytest.raises(ValueError, match="renamed 'bernoulli'"):
        FourierSamplePool(np.zeros((8, 8, 8), np.float32), num_samples=2, kind="seed")
    with pytest.raises(ValueError, match="renamed 'bernoulli'"):
        FourierSampler(masks="seed")
    with pytest.raises(ValueError, match="renamed 'bernoulli'"):
        fourier_versions(x, 1, mode="seed")
