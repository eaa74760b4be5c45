"""Tomograms larger than RAM: slabbed inference with its result on disk, pages given back,
normalisation and writing slab by slab, with the same values as the in-memory path."""

import numpy as np
import pytest
import torch

from cet_monai.inferers import IdentitySampler, MCDropoutInferer
from cet_monai.inferers.streaming import SlabInferer
from cet_monai.io import read_volume, write_volume
from cet_monai.io.utils import SlabwiseVolume, disk_array, release_pages
from cet_monai.normalize import TomogramNormalizer


def _rss_kib(field: str = "VmRSS") -> int:
    """This process's resident memory (``VmRSS``) or a part of it (``RssFile``: mapped files), KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field}")


def test_release_pages_gives_a_written_disk_array_back_and_keeps_its_data():
    a = disk_array((64, 256, 256))  # 16 MiB
    a[:] = 3.0
    before = _rss_kib()
    assert release_pages(a)
    assert before - _rss_kib() > 12 * 1024
    assert float(a[10].mean()) == 3.0 and float(a[-1, -1, -1]) == 3.0
    assert not release_pages(np.zeros(4))  # not a map: nothing to do


def test_slabwise_volume_reads_and_writes_like_the_array(tmp_path):
    a = disk_array((20, 8, 8))
    a[:] = np.arange(20 * 64, dtype=np.float32).reshape(20, 8, 8)
    lazy = SlabwiseVolume(a, lambda x: x * 2 + 1)
    np.testing.assert_array_equal(lazy[3:5], a[3:5] * 2 + 1)
    np.testing.assert_array_equal(np.asarray(lazy), np.asarray(a) * 2 + 1)
    write_volume(tmp_path / "m.mrc", lazy, voxel_size=4.0)
    write_volume(tmp_path / "n.nii.gz", lazy, voxel_size=4.0)
    for name in ("m.mrc", "n.nii.gz"):
        np.testing.assert_array_equal(read_volume(tmp_path / name)[0], np.asarray(a) * 2 + 1)


def test_slabwise_normalisation_gives_the_same_values(tmp_path):
    x = (np.random.default_rng(1).standard_normal((33, 40, 24)) * 7 + 100).astype(np.float32)
    write_volume(tmp_path / "t.mrc", x)
    raw = read_volume(tmp_path / "t.mrc", mmap=True)[0]
    norm = TomogramNormalizer().fit(raw)
    np.testing.assert_array_equal(norm.transform_slabwise(raw), np.asarray(norm.transform(x), np.float32))


def _window_inferer(seed=0):
    return MCDropoutInferer((8, 8, 8), sampler=IdentitySampler(), passes=0, sw_batch_size=4, overlap=0.5, seed=seed)


def test_a_tomogram_that_fits_one_slab_is_not_slabbed():
    net = torch.nn.Conv3d(1, 1, 3, padding=1)
    x = torch.randn(1, 1, 16, 16, 16)
    slab = SlabInferer(_window_inferer(), slab_voxels=16 ** 3)
    assert slab.slabs((16, 16, 16)) == [(0, 16, 0, 16)]
    torch.testing.assert_close(slab(x, net), _window_inferer()(x, net), rtol=0, atol=0)


def test_slabs_cover_every_plane_once_with_half_a_window_of_margin():
    slab = SlabInferer(_window_inferer(), slab_voxels=24 * 16 * 16)
    parts = slab.slabs((50, 16, 16))
    kept = [z for _, _, lo, hi in parts for z in range(lo, hi)]
    assert kept == list(range(50))
    for lo, hi, keep_lo, keep_hi in parts:
        assert (hi - lo) * 16 * 16 <= 24 * 16 * 16
        assert keep_lo - lo == min(4, keep_lo) and hi - keep_hi == min(4, 50 - keep_hi)
        assert keep_hi - keep_lo >= 8  # balanced: never a slab thinner than a window
    assert SlabInferer.plan((50, 16, 16), 8, 24 * 16 * 16) == parts


def test_slabbed_inference_is_on_disk_and_matches_the_whole_tomogram():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 50, 16, 16)
    identity = torch.nn.Identity()
    slab = SlabInferer(_window_inferer(), slab_voxels=24 * 16 * 16)
    out = slab(x, identity)
    assert isinstance(out.disk_array, np.memmap)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-5)  # an identity network: blending changes nothing
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 1, 3, padding=1))
    whole = _window_inferer()(x, net)
    slabbed = slab(x, net)
    # a network with zero-padded convolutions depends on where the windows lie; slabs restart the
    # window grid, so they may differ from one call by as much as a shifted grid does, not more
    shifted = _window_inferer()(x[:, :, 3:], net)
    grid_rms = float((shifted - whole[:, :, 3:]).pow(2).mean().sqrt())
    slab_rms = float((slabbed - whole).pow(2).mean().sqrt())
    assert 0 < slab_rms < 1.5 * grid_rms, (slab_rms, grid_rms)
    torch.testing.assert_close(slabbed[:, :, :9], whole[:, :, :9], rtol=0, atol=1e-6)  # the first slab's grid is the whole's


def test_each_slab_draws_its_own_noise_with_the_same_dropout_networks():
    calls = []

    class Recording:
        sliding_window = type("SW", (), {"roi_size": (8, 8, 8)})()
        seed = 5

        def __call__(self, inputs, network, generator_seed=None):
            calls.append(generator_seed)
            return inputs.clone()

    SlabInferer(Recording(), slab_voxels=24 * 16 * 16)(torch.zeros(1, 1, 50, 16, 16), torch.nn.Identity())
    assert calls == [5 + i for i in range(len(calls))] and len(calls) > 2


def test_predict_with_slabs_writes_what_the_in_memory_path_writes(tmp_path):
    """The bundle's inference on a tiny trained model: slabbed (result on disk, written slab by
    slab, the std too) against one call, same checkpoint and seed."""
    from cet_monai.data import simulate_tomogram
    from cet_monai.engines import latest_checkpoint
    from cet_monai.workflows import predict, train

    tomo = tmp_path / "t.mrc"
    write_volume(tomo, simulate_tomogram(shape=(40, 32, 32), snr=0.05, seed=2).noisy.astype(np.float32), voxel_size=10.0)
    train("recorrupted", tomogram=str(tomo), output_dir=str(tmp_path / "run"), iterations=2, epoch_length=2, patch_size=[16, 16, 16],
          margin=4, progress=False, **{"network_def#features": [4, 8], "device": "$torch.device('cpu')"})
    ckpt = latest_checkpoint(str(tmp_path / "run"))
    common = dict(method="recorrupted", save_std=True, versions=2, progress=False, device="$torch.device('cpu')")
    predict([str(tomo)], ckpt, str(tmp_path / "whole.mrc"), **common)
    predict([str(tomo)], ckpt, str(tmp_path / "slabs.mrc"), slab_voxels=24 * 32 * 32, **common)
    predict([str(tomo)], ckpt, str(tmp_path / "other_seed.mrc"), seed=1, **common)
    whole, slabs, other = (read_volume(tmp_path / f"{n}.mrc")[0] for n in ("whole", "slabs", "other_seed"))
    assert whole.shape == slabs.shape == (40, 32, 32)
    # slabs draw their own noise: the result differs from one call as another seed's does, not more
    corr = np.corrcoef(whole.ravel(), slabs.ravel())[0, 1]
    baseline = np.corrcoef(whole.ravel(), other.ravel())[0, 1]
    assert corr > baseline - 0.05, (corr, baseline)
    assert not np.array_equal(whole, slabs)
    assert read_volume(tmp_path / "slabs_std.mrc")[0].std() > 0
    assert (tmp_path / "slabs.png").exists()


@pytest.mark.parametrize("bad", [2])
def test_slab_inferer_refuses_batches(bad):
    with pytest.raises(ValueError, match="one tomogram"):
        SlabInferer(_window_inferer(), slab_voxels=100)(torch.zeros(bad, 1, 8, 8, 8), torch.nn.Identity())


def test_release_pages_finds_a_disk_array_from_a_torch_view_of_it():
    """Training and inference read the normalised tomogram as a torch tensor made with
    ``torch.from_numpy``, which keeps no link to the memmap: the map is found from its address."""
    a = disk_array((64, 256, 256))  # 16 MiB
    a[:] = 2.0
    release_pages(a)
    view = torch.from_numpy(a)[None][:, 8:]
    before = _rss_kib()
    assert float(view.sum()) == 2.0 * 56 * 256 * 256  # reading makes the pages resident
    assert _rss_kib() - before > 12 * 1024
    assert release_pages(view[:, :, 100:])
    assert _rss_kib() - before < 4 * 1024
    assert float(a[-1, -1, -1]) == 2.0
    assert not release_pages(torch.zeros(4)) and not release_pages(torch.from_numpy(np.zeros(4)))


def test_a_normalised_copy_on_disk_trains_and_denoises_like_one_in_memory(tmp_path, monkeypatch):
    """Above DISK_COPY_VOXELS the normalised copy is a disk-backed map (tomograms larger than RAM):
    same values, bit-identical training and output, and the pages a patch read touched are given back."""
    from cet_monai.data import simulate_tomogram
    from cet_monai.engines import data as engine_data
    from cet_monai.engines import latest_checkpoint
    from cet_monai.io.utils import _mmap_of
    from cet_monai.transforms import RandTomogramPatchd
    from cet_monai.workflows import predict, train

    tomo = tmp_path / "t.mrc"
    write_volume(tomo, simulate_tomogram(shape=(40, 32, 32), snr=0.05, seed=2).noisy.astype(np.float32), voxel_size=10.0)
    ram = engine_data.TomogramSource(str(tomo))
    disk = engine_data.TomogramSource(str(tomo), on_disk=True)
    assert _mmap_of(ram.image) is None and _mmap_of(disk.image) is not None and _mmap_of(disk.training_region()) is not None
    torch.testing.assert_close(disk.image, ram.image, rtol=0, atol=0)
    patcher = RandTomogramPatchd("image", patch_size=16, num_samples=3)
    patcher.set_random_state(0)
    from_disk = patcher(disk.training_items(1)[0])
    patcher.set_random_state(0)
    from_ram = patcher(ram.training_items(1)[0])
    for p, q in zip(from_disk, from_ram):
        torch.testing.assert_close(p["image"], q["image"], rtol=0, atol=0)

    import cet_monai.io.utils as io_utils

    made = []
    monkeypatch.setattr(io_utils, "disk_array", lambda shape, dtype=np.float32: made.append(tuple(shape)) or disk_array(shape, dtype))
    outputs = {}
    for name, threshold in (("ram", 1 << 40), ("disk", 0)):
        made.clear()
        monkeypatch.setattr(engine_data, "DISK_COPY_VOXELS", threshold)
        run = tmp_path / f"run_{name}"
        train("recorrupted", tomogram=str(tomo), output_dir=str(run), iterations=2, epoch_length=2, patch_size=[16, 16, 16],
              margin=4, progress=False, **{"network_def#features": [4, 8], "device": "$torch.device('cpu')"})
        ckpt = latest_checkpoint(str(run))
        predict([str(tomo)], ckpt, str(tmp_path / f"{name}.mrc"), method="recorrupted", versions=2, progress=False,
                device="$torch.device('cpu')")
        outputs[name] = (torch.load(ckpt, weights_only=False)["network"], read_volume(tmp_path / f"{name}.mrc")[0])
        # training's copy and inference's copy on disk, nothing on disk below the threshold
        assert made == ([] if name == "ram" else [(40, 32, 32)] * 2), made
    for key, value in outputs["ram"][0].items():
        torch.testing.assert_close(outputs["disk"][0][key], value, rtol=0, atol=0)
    np.testing.assert_array_equal(outputs["disk"][1], outputs["ram"][1])


def test_writing_a_result_from_a_disk_backed_input_keeps_its_pages_out_of_memory(tmp_path, monkeypatch):
    """The saver writes the output and its preview (a YZ slice touches every page of a volume)
    from a disk-backed normalised input and a disk-backed result without making either resident."""
    from cet_monai.engines import LoadTomogramd, SaveTomogramd, collate_single
    from cet_monai.engines import data as engine_data

    tomo = tmp_path / "t.mrc"
    write_volume(tomo, np.random.default_rng(0).normal(size=(128, 256, 256)).astype(np.float32), voxel_size=10.0)  # 32 MiB
    monkeypatch.setattr(engine_data, "DISK_COPY_VOXELS", 0)
    item = LoadTomogramd("image")({"image": str(tomo)})
    image = item["image"]
    pred = disk_array((128, 256, 256))
    for z in range(0, 128, 32):
        pred[z : z + 32] = 0.5
    release_pages(pred)
    release_pages(image)
    batch = collate_single([{"image": image}])["image"]
    prediction = torch.from_numpy(pred)[None, None]
    prediction.disk_array = pred
    before = _rss_kib("RssFile")
    SaveTomogramd("pred", str(tmp_path / "out.mrc"))({"image": batch, "pred": prediction})
    grown = _rss_kib("RssFile") - before
    assert (tmp_path / "out.png").exists() and read_volume(tmp_path / "out.mrc")[0].shape == (128, 256, 256)
    assert grown < 12 * 1024, f"the input's or the result's pages stayed resident ({grown / 1024:.0f} MiB)"
