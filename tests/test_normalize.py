"""Tests of cet_monai.normalize: whole-tomogram percentile clipping + standardisation."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from cet_monai.normalize import (
    NormalizeTomogram,
    NormalizeTomogramd,
    TomogramNormalizer,
    subsample,
    subsample_strides,
)


@pytest.fixture(scope="module")
def tomogram() -> np.ndarray:
    """(Z, Y, X) float32 with a skewed intensity distribution, a bright outlier blob ("gold")
    and a brightness gradient along Z, so percentiles, clipping and patch statistics matter."""
    rng = np.random.default_rng(0)
    vol = rng.gamma(2.0, 15.0, size=(48, 96, 112)).astype(np.float32) + 100.0
    vol += np.linspace(0, 40, vol.shape[0], dtype=np.float32)[:, None, None]
    vol[10:14, 20:24, 30:34] = 5000.0
    return vol


def test_transform_standardises_the_clipped_volume(tomogram):
    norm = TomogramNormalizer(max_samples=10**9).fit(tomogram)
    lo, hi = np.percentile(tomogram, [0.5, 99.5])
    assert norm.lower_value == pytest.approx(lo, rel=1e-6) and norm.upper_value == pytest.approx(hi, rel=1e-6)
    out = norm.transform(tomogram)
    assert out.dtype == np.float32 and out.shape == tomogram.shape
    assert float(out.mean(dtype=np.float64)) == pytest.approx(0.0, abs=1e-5)
    assert float(out.std(dtype=np.float64)) == pytest.approx(1.0, rel=1e-5)
    assert out.max() == pytest.approx((hi - norm.mean) / norm.std, rel=1e-5)  # the gold is clipped


def test_inverse_undoes_transform_within_the_clip_range(tomogram):
    norm = TomogramNormalizer().fit(tomogram)
    back = norm.inverse(norm.transform(tomogram))
    inside = (tomogram >= norm.lower_value) & (tomogram <= norm.upper_value)
    assert inside.mean() > 0.98
    np.testing.assert_allclose(back[inside], tomogram[inside], rtol=1e-5)
    # clipping is not inverted: the gold comes back at the upper bound, not at 5000
    assert back[12, 22, 32] == pytest.approx(norm.upper_value, rel=1e-5)
    assert np.all(back <= norm.upper_value * (1 + 1e-6))


def test_subsample_statistics_close_to_full_statistics(tomogram):
    full = TomogramNormalizer(max_samples=10**9).fit(tomogram)
    sub = TomogramNormalizer(max_samples=20_000).fit(tomogram)
    assert full.n_samples == tomogram.size
    assert 10_000 < sub.n_samples <= 20_000
    assert sub.mean == pytest.approx(full.mean, rel=0.01)
    assert sub.std == pytest.approx(full.std, rel=0.03)
    assert sub.lower_value == pytest.approx(full.lower_value, rel=0.05)
    assert sub.upper_value == pytest.approx(full.upper_value, rel=0.05)
    again = TomogramNormalizer(max_samples=20_000).fit(tomogram)
    assert again.state_dict() == sub.state_dict()  # deterministic


def test_subsample_strides_bound_and_balance():
    for shape, n in [((500, 4000, 4000), 2_000_000), ((48, 96, 112), 20_000), ((3, 1000, 7), 100), ((9,), 1)]:
        strides = subsample_strides(shape, n)
        count = np.prod([len(range(0, s, st)) for s, st in zip(shape, strides)])
        assert count <= n, (shape, strides)
    assert subsample_strides((10, 10, 10), 2_000_000) == (1, 1, 1)
    z, y, x = subsample_strides((500, 4000, 4000), 2_000_000)
    assert z < y == x  # the thin Z axis is thinned least


def test_subsample_reads_memmap_plane_by_plane(tmp_path, tomogram):
    path = tmp_path / "v.raw"
    mm = np.memmap(path, dtype=np.float16, mode="w+", shape=tomogram.shape)
    mm[:] = tomogram
    mm.flush()
    mm = np.memmap(path, dtype=np.float16, mode="r", shape=tomogram.shape)

    class Spy:
        def __init__(self, a):
            self.a, self.shape, self.dtype, self.seen = a, a.shape, a.dtype, []

        def __getitem__(self, index):
            part = self.a[index]
            self.seen.append(part.size)
            return part

    spy = Spy(mm)
    sample = subsample(spy, max_samples=20_000)
    assert sample.dtype == np.float32 and sample.size <= 20_000
    assert max(spy.seen) <= tomogram.shape[1] * tomogram.shape[2]  # never more than one plane
    np.testing.assert_array_equal(sample, subsample(tomogram.astype(np.float16), max_samples=20_000))
    a = TomogramNormalizer(max_samples=20_000).fit(mm)
    b = TomogramNormalizer(max_samples=20_000).fit(np.asarray(mm))
    assert a.state_dict() == b.state_dict()


def test_patches_use_whole_tomogram_statistics(tomogram):
    norm = TomogramNormalizer().fit(tomogram)
    whole = norm.transform(tomogram)
    top, bottom = tomogram[:8, :16, :16], tomogram[-8:, :16, :16]
    np.testing.assert_allclose(norm.transform(top), whole[:8, :16, :16], rtol=1e-6)
    # no per-patch re-centring: the brighter bottom patch stays brighter than the top one
    assert norm.transform(bottom).mean() > norm.transform(top).mean() + 0.5


def test_torch_and_numpy_agree(tomogram):
    norm = TomogramNormalizer().fit(tomogram)
    patch = tomogram[5:21, 10:42, 20:52]
    np_out = norm.transform(patch)
    t_out = norm.transform(torch.from_numpy(patch))
    assert isinstance(t_out, torch.Tensor) and t_out.dtype == torch.float32
    np.testing.assert_allclose(t_out.numpy(), np_out, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(norm.inverse(t_out).numpy(), norm.inverse(np_out), rtol=1e-6)
    ints = patch.astype(np.int16)
    np.testing.assert_allclose(norm.transform(torch.from_numpy(ints)).numpy(), norm.transform(ints), rtol=1e-6)
    assert norm.transform(ints).dtype == np.float32
    assert norm.transform(patch.astype(np.float64)).dtype == np.float64
    fitted_on_tensor = TomogramNormalizer().fit(torch.from_numpy(tomogram))
    assert fitted_on_tensor.state_dict() == norm.state_dict()


def test_state_dict_round_trip_through_a_checkpoint(tomogram):
    norm = TomogramNormalizer(lower=1.0, upper=99.0).fit(tomogram)
    buffer = io.BytesIO()
    torch.save({"normalizer": norm.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)["normalizer"]
    restored = TomogramNormalizer.from_state_dict(state)
    assert restored.lower == 1.0 and restored.upper == 99.0
    np.testing.assert_array_equal(restored.transform(tomogram[:4]), norm.transform(tomogram[:4]))


def test_errors():
    with pytest.raises(RuntimeError, match="not fitted"):
        TomogramNormalizer().transform(np.zeros(3))
    with pytest.raises(ValueError):
        TomogramNormalizer(lower=60, upper=40)
    with pytest.raises(ValueError, match="constant"):
        TomogramNormalizer().fit(np.full((4, 4, 4), 2.0))
    bad = np.ones((4, 4, 4))
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        TomogramNormalizer().fit(bad)


def test_monai_wrappers(tomogram):
    from monai.data import MetaTensor

    norm = TomogramNormalizer().fit(tomogram)
    patch = MetaTensor(torch.from_numpy(tomogram[None, :8, :8, :8].copy()))
    out = NormalizeTomogram(norm.state_dict())(patch)
    assert isinstance(out, MetaTensor)
    np.testing.assert_allclose(out.numpy()[0], norm.transform(tomogram[:8, :8, :8]), rtol=1e-6)
    d = NormalizeTomogramd(["image", "target"], norm)({"image": patch, "target": patch, "label": 1})
    assert d["label"] == 1
    np.testing.assert_allclose(d["target"].numpy(), out.numpy())
    inv = NormalizeTomogramd("image", norm).inverse(d)
    clipped = np.clip(patch.numpy(), norm.lower_value, norm.upper_value)  # clipping stays
    np.testing.assert_allclose(inv["image"].numpy(), clipped, rtol=1e-5)
    with pytest.raises(RuntimeError):
        NormalizeTomogram(TomogramNormalizer())
