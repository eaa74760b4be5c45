"""Statistical and API tests of the real-space Bernoulli (Self2Self) transforms and the masked loss."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from cet_monai.losses import MaskedMSELoss
from cet_monai.transforms import RandBernoulliMask, RandBernoulliMaskd, bernoulli_versions

SHAPE = (1, 24, 20, 18)


def _x(shape=SHAPE, seed=0):
    return np.random.RandomState(seed).randn(*shape).astype(np.float32) + 3.0  # no exact zeros


@pytest.mark.parametrize("keep_prob", [0.5, 0.25, 0.8])
def test_density_matches_keep_prob(keep_prob):
    t = RandBernoulliMask(keep_prob=keep_prob, num_samples=4).set_random_state(1)
    triples = t.draw(_x())
    kept = sum(float((1 - lm).sum()) for _, _, lm in triples)
    n = 4 * np.prod(SHAPE)
    se = np.sqrt(keep_prob * (1 - keep_prob) / n)
    assert abs(kept / n - keep_prob) < 5 * se


def test_block_masks_density_and_blocks():
    t = RandBernoulliMask(keep_prob=0.5, num_samples=6, block_scale=4, block_mask_prob=1.0).set_random_state(2)
    x = _x((1, 32, 32, 32))
    triples = t.draw(x)
    keep = torch.stack([1 - lm[0] for _, _, lm in triples])
    # blocks: neighbours along each axis agree far more often than for voxel-wise masks (3/4 vs 1/2)
    for ax in (1, 2, 3):
        agree = (keep.narrow(ax, 1, 31) == keep.narrow(ax, 0, 31)).float().mean().item()
        assert agree > 0.7
    # density: 6 masks x (32/4+1)^3 blocks ~ 4000 Bernoulli blocks
    assert abs(keep.mean().item() - 0.5) < 5 * np.sqrt(0.25 / (6 * 8**3))


def test_input_and_loss_mask_are_complements():
    x = _x()
    inp, tgt, lm = RandBernoulliMask().set_random_state(3)(x)
    assert inp.shape == tgt.shape == lm.shape == SHAPE
    assert set(torch.unique(lm).tolist()) <= {0.0, 1.0}
    visible = lm == 0
    torch.testing.assert_close(inp[visible], torch.as_tensor(x)[visible])
    assert torch.all(inp[~visible] == 0)
    torch.testing.assert_close(tgt, torch.as_tensor(x))


def test_mask_shared_across_channels():
    x = _x((3, 8, 9, 10))
    _, _, lm = RandBernoulliMask().set_random_state(0)(x)
    assert torch.equal(lm[0], lm[1]) and torch.equal(lm[0], lm[2])


def test_reproducible_and_numpy_torch_agree():
    x = _x()
    a = RandBernoulliMask(num_samples=3).set_random_state(7).draw(x)
    b = RandBernoulliMask(num_samples=3).set_random_state(7).draw(torch.as_tensor(x))
    c = RandBernoulliMask(num_samples=3).set_random_state(8).draw(x)
    for (ia, ta, la), (ib, tb, lb) in zip(a, b):
        torch.testing.assert_close(ia.as_tensor(), ib.as_tensor())
        torch.testing.assert_close(la.as_tensor(), lb.as_tensor())
    assert not torch.equal(a[0][2], c[0][2])


def test_array_and_dict_agree_under_same_seed():
    x = _x()
    arr = RandBernoulliMask(num_samples=4, block_mask_prob=0.5).set_random_state(11).draw(x)
    dic = RandBernoulliMaskd("image", num_samples=4, block_mask_prob=0.5).set_random_state(11)(
        {"image": x, "other": 5}
    )
    assert len(dic) == 4
    for (inp, tgt, lm), item in zip(arr, dic):
        assert item["image"].shape == SHAPE and item["label"].shape == (2,) + SHAPE[1:]
        torch.testing.assert_close(item["image"].as_tensor(), inp.as_tensor())
        torch.testing.assert_close(item["label"][:1].as_tensor(), tgt.as_tensor())
        torch.testing.assert_close(item["label"][1:].as_tensor(), lm.as_tensor())
        assert item["other"] == 5


def test_prob_zero_is_identity_with_empty_loss_mask():
    x = _x()
    out = RandBernoulliMaskd("image", prob=0.0, num_samples=2).set_random_state(0)({"image": x})
    assert len(out) == 2
    torch.testing.assert_close(out[0]["image"].as_tensor(), torch.as_tensor(x))
    assert float(out[0]["label"][1:].sum()) == 0.0


def test_metadata_preserved():
    img = MetaTensor(torch.as_tensor(_x()), meta={"filename_or_obj": "tomo.mrc"})
    inp, tgt, lm = RandBernoulliMask()(img)
    assert isinstance(inp, MetaTensor) and inp.meta["filename_or_obj"] == "tomo.mrc"
    out = RandBernoulliMaskd("image", num_samples=1)({"image": img})
    assert out[0]["label"].meta["filename_or_obj"] == "tomo.mrc"


def test_bernoulli_versions():
    x = torch.as_tensor(_x((2, 1, 8, 9, 10)))
    v = bernoulli_versions(x, 5, generator=torch.Generator().manual_seed(0))
    assert v.inputs.shape == (5, 2, 1, 8, 9, 10) and v.keep_masks.shape == (5, 2, 1, 8, 9, 10)
    torch.testing.assert_close(v.inputs, x.unsqueeze(0) * v.keep_masks)
    v2 = bernoulli_versions(x, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(v.keep_masks, v2.keep_masks)


# ---------------------------------------------------------------- loss


def test_masked_loss_ignores_visible_voxels():
    torch.manual_seed(0)
    target = torch.randn(2, 1, 6, 6, 6)
    mask = (torch.rand(2, 1, 6, 6, 6) < 0.5).float()
    label = torch.cat([target, mask], 1)
    pred = torch.randn(2, 1, 6, 6, 6)
    loss = MaskedMSELoss()(pred, label)
    expected = ((pred - target) ** 2 * mask).sum() / mask.sum()
    torch.testing.assert_close(loss, expected)
    # changing predictions on visible voxels changes nothing
    pred2 = pred + 100.0 * (1 - mask)
    torch.testing.assert_close(MaskedMSELoss()(pred2, label), loss)
    # exact predictions on hidden voxels give zero loss whatever happens elsewhere
    pred3 = torch.where(mask.bool(), target, torch.randn_like(target))
    assert MaskedMSELoss()(pred3, label).item() == 0.0


def test_masked_loss_zero_count_and_grad():
    pred = torch.randn(1, 2, 4, 4, 4, requires_grad=True)
    label = torch.cat([torch.randn(1, 2, 4, 4, 4), torch.zeros(1, 2, 4, 4, 4)], 1)
    loss = MaskedMSELoss()(pred, label)
    assert loss.item() == 0.0 and torch.isfinite(loss)
    loss.backward()
    assert torch.all(pred.grad == 0)


def test_masked_loss_shape_checks_and_reductions():
    with pytest.raises(ValueError):
        MaskedMSELoss()(torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 1, 4, 4, 4))
    pred = torch.ones(1, 1, 2, 2, 2)
    label = torch.cat([torch.zeros(1, 1, 2, 2, 2), torch.ones(1, 1, 2, 2, 2)], 1)
    assert MaskedMSELoss("sum")(pred, label).item() == 8.0
    assert MaskedMSELoss("none")(pred, label).shape == pred.shape


def test_end_to_end_supervised_trainer():
    """An unmodified MONAI SupervisedTrainer trains on RandBernoulliMaskd items with MaskedMSELoss."""
    from monai.data import DataLoader, Dataset, list_data_collate
    from monai.engines import SupervisedTrainer
    from monai.transforms import Compose, FlattenSequence

    from cet_monai.transforms import RandTomogramPatchd

    tomo = _x((1, 20, 20, 20))
    ds = Dataset(
        [{"image": tomo}] * 2,
        Compose(
            [
                RandTomogramPatchd("image", patch_size=8, num_samples=2),
                RandBernoulliMaskd("image", num_samples=2),
                FlattenSequence(),  # two multi-sample transforms nest lists: flatten one level
            ]
        ),
    )
    loader = DataLoader(ds, batch_size=2, collate_fn=list_data_collate)  # 2 items x 4 dicts = batches of 8
    net = torch.nn.Conv3d(1, 1, 3, padding=1)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=loader,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=1e-3),
        loss_function=MaskedMSELoss(),
    )
    trainer.run()
    assert np.isfinite(trainer.state.output[0]["loss"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_gpu_stays_on_gpu_and_matches_cpu():
    x = torch.as_tensor(_x())
    cpu = RandBernoulliMask(num_samples=2).set_random_state(5).draw(x)
    gpu = RandBernoulliMask(num_samples=2).set_random_state(5).draw(x.cuda())
    for a, b in zip(cpu, gpu):
        for u, v in zip(a, b):
            assert v.device.type == "cuda"
            torch.testing.assert_close(u.as_tensor(), v.as_tensor().cpu())
    v = bernoulli_versions(x.cuda()[None], 3, generator=torch.Generator(device="cuda").manual_seed(0))
    assert v.inputs.device.type == "cuda"
    loss = MaskedMSELoss()(gpu[0][0][None], torch.cat([gpu[0][1], gpu[0][2]])[None])
    assert loss.device.type == "cuda"
