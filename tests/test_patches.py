"""Tests of patch sampling (coverage, specimen mask, metadata, memmaps) and wedge-preserving flips."""

import tracemalloc

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, FlattenSequence

from cet_monai.transforms import (
    FourierSamplePool,
    RandFourierPaird,
    RandTomogramPatchd,
    RandWedgeFlipd,
    measured_mask,
    missing_wedge_mask,
    tiling_positions,
)


def _vol(shape=(1, 30, 26, 22), seed=0):
    return np.random.RandomState(seed).randn(*shape).astype(np.float32)


# ---------------------------------------------------------------- tilings


@pytest.mark.parametrize("length,patch", [(96, 96), (97, 96), (200, 96), (512, 96), (50, 7), (31, 16)])
def test_every_tiling_covers_every_voxel(length, patch):
    rng = np.random.RandomState(0)
    for _ in range(50):
        starts = tiling_positions(rng, (length, patch, patch), (patch, patch, patch))[:, 0]
        starts = np.unique(starts)
        assert starts.min() == 0 and starts.max() == length - patch
        cov = np.zeros(length, int)
        for s in starts:
            cov[s : s + patch] += 1
        assert cov.min() >= 1


@pytest.mark.parametrize("length,patch", [(200, 96), (512, 96), (64, 16)])
def test_expected_coverage_is_nearly_flat(length, patch):
    """Mean coverage over 400 tilings: printed; edge/interior ratio far above uniform starts' 1/patch."""
    rng = np.random.RandomState(1)
    cov = np.zeros(length)
    for _ in range(400):
        starts = np.unique(tiling_positions(rng, (length, patch, patch), (patch, patch, patch))[:, 0])
        for s in starts:
            cov[s : s + patch] += 1
    cov /= 400
    ratio = cov.min() / cov.mean()
    # uniform random starts in [0, D - p] would give edge/mean ~ 1 / p
    print(f"coverage D={length} p={patch}: min {cov.min():.2f} max {cov.max():.2f} mean {cov.mean():.2f} min/mean {ratio:.2f}")
    assert cov.min() >= 1.0
    assert ratio > 0.65


def test_sampler_pops_whole_tilings_and_is_reproducible():
    vol = _vol((1, 40, 40, 40))
    t = RandTomogramPatchd("image", patch_size=16, num_samples=3).set_random_state(0)
    n_tiles = len(tiling_positions(np.random.RandomState(0), (40, 40, 40), (16, 16, 16)))
    starts = [tuple(o["patch_start"].tolist()) for _ in range(n_tiles // 3) for o in t({"image": vol})]
    covered = np.zeros((40, 40, 40), bool)
    for s in starts[: n_tiles - n_tiles % 3]:
        covered[s[0] : s[0] + 16, s[1] : s[1] + 16, s[2] : s[2] + 16] = True
    # the first tiling is popped entirely (up to the remainder of the last call)
    assert len(set(starts)) == len(starts) or n_tiles % 3
    t2 = RandTomogramPatchd("image", patch_size=16, num_samples=3).set_random_state(0)
    starts2 = [tuple(o["patch_start"].tolist()) for _ in range(n_tiles // 3) for o in t2({"image": vol})]
    assert starts == starts2
    if n_tiles % 3 == 0:
        assert covered.all()


def test_patch_content_metadata_and_margin_padding():
    vol = _vol()
    img = MetaTensor(torch.as_tensor(vol), meta={"filename_or_obj": "t.mrc"})
    t = RandTomogramPatchd("image", patch_size=(8, 10, 6), num_samples=20, margin=3).set_random_state(2)
    out = t({"image": img, "extra": "x"})
    assert len(out) == 20
    padded = np.pad(vol, [(0, 0)] + [(3, 3)] * 3, mode="reflect")
    for i, o in enumerate(out):
        s = o["patch_start"].tolist()
        assert o["patch_margin"].tolist() == [3, 3, 3] and o["patch_size"].tolist() == [8, 10, 6]
        p = o["image"]
        assert p.shape == (1, 14, 16, 12)
        assert p.meta["patch_start"].tolist() == s and p.meta["patch_index"] == i
        assert p.meta["filename_or_obj"] == "t.mrc" and o["extra"] == "x"
        ref = padded[:, s[0] : s[0] + 14, s[1] : s[1] + 16, s[2] : s[2] + 12]
        np.testing.assert_array_equal(p.numpy(), ref)
        # affine origin at the first voxel read (start - margin)
        np.testing.assert_allclose(p.affine[:3, 3].numpy(), np.array(s) - 3)


def test_patch_inverse_puts_the_patch_back_and_invertd_works():
    """Each patch records its crop; inverse / Invertd return the volume's shape, patch in place."""
    from monai.transforms import Invertd

    vol = _vol()
    aff = torch.diag(torch.tensor([2.0, 3.0, 4.0, 1.0], dtype=torch.float64))
    img = MetaTensor(torch.as_tensor(vol), affine=aff)
    shape = tuple(vol.shape[1:])
    t = RandTomogramPatchd("image", patch_size=(8, 10, 6), num_samples=12, margin=3).set_random_state(4)
    pipeline = Compose([t])
    out = pipeline({"image": img})
    inv = Invertd(keys="pred", transform=pipeline, orig_keys="image", nearest_interp=False)
    touched_border = False
    for o in out:
        assert len(o["image"].applied_operations) == 1
        s = o["patch_start"].tolist()
        o["pred"] = o["image"] * 2.0
        back = inv(o)["pred"]
        assert tuple(back.shape) == (1,) + shape
        np.testing.assert_allclose(back.affine.numpy(), aff.numpy())  # origin back at voxel 0
        lo = [a - 3 for a in s]
        sl = (slice(None),) + tuple(slice(max(a, 0), min(a + n, d)) for a, n, d in zip(lo, (14, 16, 12), shape))
        touched_border |= any(a < 0 or a + n > d for a, n, d in zip(lo, (14, 16, 12), shape))
        inside = np.zeros(back.shape, bool)
        inside[sl] = True
        np.testing.assert_array_equal(back.numpy()[inside], 2.0 * vol[inside])  # in place, padding dropped
        assert not back.numpy()[~inside].any()
        direct = t.inverse(o)["image"]  # the array key itself, through the transform
        np.testing.assert_array_equal(direct.numpy()[inside], vol[inside])
        assert len(direct.applied_operations) == 0
    assert touched_border  # the margin's reflect padding outside the volume was exercised


def test_specimen_mask_is_respected():
    vol = _vol((1, 32, 32, 32))
    mask = np.zeros((32, 32, 32), bool)
    mask[:, :, :12] = True  # specimen only at low X
    t = RandTomogramPatchd("image", patch_size=8, num_samples=40, mask_key="mask", min_mask_fraction=0.5)
    out = t.set_random_state(0)({"image": vol, "mask": mask})
    for o in out:
        s = o["patch_start"].tolist()
        assert mask[s[0] : s[0] + 8, s[1] : s[1] + 8, s[2] : s[2] + 8].mean() >= 0.5
        assert "mask" not in o
    with pytest.raises(ValueError):
        t({"image": vol, "mask": np.zeros((32, 32, 32), bool)})


def test_memmap_is_never_copied_whole(tmp_path):
    shape = (1, 64, 64, 64)  # 1 MiB of float32
    mm = np.lib.format.open_memmap(tmp_path / "t.npy", mode="w+", dtype=np.float32, shape=shape)
    mm[:] = _vol(shape)
    mm.flush()
    vol = np.load(tmp_path / "t.npy", mmap_mode="r")
    t = RandTomogramPatchd("image", patch_size=8, num_samples=4, margin=2).set_random_state(0)
    tracemalloc.start()
    out = t({"image": vol})
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 0.25 * vol.nbytes, peak
    assert not isinstance(out[0]["image"], np.memmap) and out[0]["image"].shape == (1, 12, 12, 12)


# ---------------------------------------------------------------- flips


def _wedge_filtered(shape, seed=0):
    x = torch.as_tensor(_vol((1,) + shape, seed))
    w = measured_mask(shape, 60.0).float()
    return torch.fft.irfftn(torch.fft.rfftn(x, dim=(-3, -2, -1)) * w, s=shape, dim=(-3, -2, -1))


def test_flips_keep_the_missing_wedge_empty():
    shape = (16, 14, 12)
    x = _wedge_filtered(shape)
    wedge = missing_wedge_mask(shape, 60.0)
    total = torch.fft.rfftn(x, dim=(-3, -2, -1)).abs().pow(2).sum()
    t = RandWedgeFlipd(["image", "label"]).set_random_state(0)
    seen = set()
    for _ in range(40):
        out = t({"image": x.clone(), "label": x.clone() * 2})
        torch.testing.assert_close(out["label"].as_tensor(), 2 * out["image"].as_tensor())  # flipped together
        spec = torch.fft.rfftn(out["image"].as_tensor(), dim=(-3, -2, -1))
        assert spec.abs().pow(2)[:, wedge].sum() < 1e-8 * total
        seen.add(tuple(bool(f._do_transform) for f in t.flippers))
    assert len(seen) == 8  # all flip combinations occur
    # a 90-degree rotation in the Z-X plane would not keep it (sanity check of the test)
    rot = torch.rot90(x, 1, dims=(1, 3))
    sr = torch.fft.rfftn(rot, dim=(-3, -2, -1))
    assert sr.abs().pow(2)[:, missing_wedge_mask(rot.shape[1:], 60.0)].sum() > 0.1 * total


def test_flip_inverse_and_reproducibility():
    x = torch.as_tensor(_vol((1, 6, 7, 8)))
    t = RandWedgeFlipd("image").set_random_state(3)
    out = t({"image": x})
    back = t.inverse(out)
    torch.testing.assert_close(back["image"].as_tensor(), x)
    a = RandWedgeFlipd("image").set_random_state(9)({"image": x})["image"]
    b = RandWedgeFlipd("image").set_random_state(9)({"image": x})["image"]
    assert torch.equal(a.as_tensor(), b.as_tensor())
    none = RandWedgeFlipd("image", prob=0.0)
    out = none({"image": x})
    torch.testing.assert_close(out["image"].as_tensor(), x)
    torch.testing.assert_close(none.inverse(out)["image"].as_tensor(), x)


# ---------------------------------------------------------------- pipelines


def test_split_pool_pipeline_pairs_before_flips():
    """sampler -> pool pairing -> flatten -> flips: image + label is the wedge-filtered patch, flipped."""
    shape = (20, 18, 16)
    vol = _vol((1,) + shape, 4)
    pool = FourierSamplePool(vol, num_samples=6, kind="split", scaling="none", keep_dc=False, storage="ram")
    x_w = _wedge_filtered(shape, 4)[0].numpy()
    pipe = Compose(
        [
            RandTomogramPatchd("image", patch_size=8, num_samples=2),
            RandFourierPaird("image", mode="pool", pool=pool, num_samples=3),
            FlattenSequence(),
            RandWedgeFlipd(["image", "label"]),
        ]
    )
    pipe.set_random_state(0)
    out = pipe({"image": vol})
    assert len(out) == 6
    for o in out:
        s = o["patch_start"].tolist()
        ref = torch.as_tensor(x_w[s[0] : s[0] + 8, s[1] : s[1] + 8, s[2] : s[2] + 8])
        both = (o["image"] + o["label"])[0].as_tensor()
        candidates = [ref] + [torch.flip(ref, a) for a in [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]]
        assert any(torch.allclose(both, c, atol=5e-3) for c in candidates)


def test_per_patch_split_pipeline_with_margin():
    vol = _vol((1, 24, 24, 24))
    pipe = Compose(
        [
            RandTomogramPatchd("image", patch_size=8, num_samples=2, margin=4),
            RandFourierPaird("image", mode="split", num_samples=2),
            FlattenSequence(),
            RandWedgeFlipd(["image", "label"]),
        ]
    )
    out = pipe.set_random_state(1)({"image": vol})
    assert len(out) == 4
    assert all(o["image"].shape == o["label"].shape == (1, 8, 8, 8) for o in out)
    assert all(o["patch_margin"].tolist() == [0, 0, 0] for o in out)


def test_margin_wider_than_the_volume_reflects_again():
    """A 24-voxel noise margin on a 12-voxel-thin tomogram: numpy reflects repeatedly, so each
    patch equals the same block cut from the whole volume reflect-padded by the margin."""
    vol = _vol((1, 12, 20, 20))
    t = RandTomogramPatchd("image", patch_size=(8, 16, 16), num_samples=4, margin=24).set_random_state(3)
    padded = np.pad(vol[0], 24, mode="reflect")
    for o in t({"image": vol}):
        assert tuple(o["image"].shape) == (1, 8 + 48, 16 + 48, 16 + 48)
        z, y, x = (int(v) for v in o["patch_start"])
        np.testing.assert_array_equal(np.asarray(o["image"][0]), padded[z:z + 56, y:y + 64, x:x + 64])
