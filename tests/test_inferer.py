import warnings

import pytest
import torch
from torch import nn

from cet_monai.inferers import MCDropoutInferer, WindowSampler, mc_dropout
from cet_monai.networks import DropoutUNet


def tiny_net(norm="batch"):
    torch.manual_seed(0)
    return DropoutUNet(features=(4, 8), dropout=0.5, norm=norm)


class ScaledCopies(WindowSampler):
    """K versions x * (k+1): deterministic, so averages can be computed by hand."""

    num_versions = 3

    def versions(self, windows, generator):
        return torch.stack([windows * (k + 1) for k in range(self.num_versions)]), None


def test_only_dropout_changes_mode_and_all_modes_restored():
    net = tiny_net()
    net.train()
    net.encoders[0].eval()  # a mixed state must come back exactly
    before = {name: m.training for name, m in net.named_modules()}
    with mc_dropout(net):
        for m in net.modules():
            if isinstance(m, nn.Dropout):
                assert m.training
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                assert not m.training
    assert {name: m.training for name, m in net.named_modules()} == before
    assert "forward" not in net.decoders[0][0].adn.D.__dict__


def test_average_equals_hand_computed_average():
    net = tiny_net()
    x = torch.randn(1, 1, 8, 8, 8)
    passes = 4
    inferer = MCDropoutInferer(roi_size=(8, 8, 8), sampler=ScaledCopies(), passes=passes, seed=3, overlap=0)
    result = inferer(x, net)
    seeds = [3 * 10_007 + t for t in range(passes)]
    hand = []
    with mc_dropout(net, seeds) as state, torch.no_grad():
        for t in range(passes):
            for k in range(3):
                state.pass_index = torch.tensor([t])
                hand.append(net(x * (k + 1)))
    expected = torch.stack(hand).mean(0)
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-6)
    # dropout really was on: passes differ
    assert (hand[0] - hand[3]).abs().max() > 1e-4


def test_batched_and_unbatched_passes_agree_exactly():
    net = tiny_net()
    x = torch.randn(1, 1, 12, 16, 16)
    common = dict(roi_size=(8, 8, 8), sampler=ScaledCopies(), passes=3, seed=1, sw_batch_size=3, overlap=0.5)
    batched = MCDropoutInferer(**common)(x, net)
    one_by_one = MCDropoutInferer(max_batch=1, **common)(x, net)
    torch.testing.assert_close(batched, one_by_one, rtol=1e-5, atol=1e-6)
    again = MCDropoutInferer(**common)(x, net)
    torch.testing.assert_close(batched, again, rtol=0, atol=0)
    other_seed = MCDropoutInferer(**{**common, "seed": 2})(x, net)
    assert (other_seed - batched).abs().max() > 1e-5


def test_std_output_and_no_dropout_mode():
    net = tiny_net()
    x = torch.randn(1, 1, 8, 8, 8)
    out = MCDropoutInferer(roi_size=8, passes=4, return_std=True)(x, net)
    assert out["mean"].shape == x.shape and out["std"].shape == x.shape
    assert float(out["std"].mean()) > 0
    deterministic = MCDropoutInferer(roi_size=8, passes=0, return_std=True)(x, net)
    assert float(deterministic["std"].abs().max()) == 0.0
    with torch.no_grad():
        net.eval()
        torch.testing.assert_close(deterministic["mean"], net(x), rtol=1e-5, atol=1e-6)


class OOMAbove(nn.Module):
    """Wraps a network and raises an out-of-memory error for batches above ``limit``."""

    def __init__(self, net, limit):
        super().__init__()
        self.net, self.limit, self.sizes = net, limit, []

    def forward(self, x):
        self.sizes.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (fake limit)")
        return self.net(x)


def test_out_of_memory_halves_the_batch_and_goes_on():
    net = tiny_net()
    x = torch.randn(1, 1, 8, 16, 16)
    common = dict(roi_size=(8, 8, 8), sampler=ScaledCopies(), passes=2, sw_batch_size=2, overlap=0)
    reference = MCDropoutInferer(**common)(x, net)
    limited = OOMAbove(net, limit=3)
    inferer = MCDropoutInferer(**common)
    with pytest.warns(UserWarning, match="out of memory"):
        result = inferer(x, limited)
    torch.testing.assert_close(result, reference, rtol=1e-5, atol=1e-6)
    # 2 windows x 3 versions x 2 passes = 12 samples: 12 fails, 6 fails, then chunks of 3
    assert limited.sizes[:3] == [12, 6, 3] and max(limited.sizes[3:]) <= 3
    assert inferer.max_batch == 3


def test_other_errors_are_not_swallowed():
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        MCDropoutInferer(roi_size=8, passes=1)(torch.randn(1, 1, 8, 8, 8), Broken())
