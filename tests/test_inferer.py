import warnings

import pytest
import torch
from torch import nn

from cet_monai.inferers import IdentitySampler, MCDropoutInferer, WindowSampler, mc_dropout
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


class PositionWeight(nn.Module):
    """``x * w`` with a fixed weight that varies along Z, Y and X: not flip-equivariant, so a
    flipped version's prediction flipped back differs from the unflipped one."""

    def __init__(self, shape):
        super().__init__()
        z, y, x = torch.meshgrid(*[torch.linspace(0.5, 2.0, n) for n in shape], indexing="ij")
        self.register_buffer("w", (z * y**2 * x**3)[None, None])

    def forward(self, x):
        return x * self.w


def test_flipped_versions_are_flipped_back_before_they_are_averaged():
    """Version k goes through the network flipped by pattern k (Z = 1, Y = 2, X = 4) and comes
    back unflipped: with 8 copies the estimate is x times the mean of w over the 8 flips."""
    from cet_monai.inferers import flip_axes

    shape = (6, 8, 10)
    net, x = PositionWeight(shape), torch.randn(1, 1, *shape)
    inferer = MCDropoutInferer(roi_size=shape, sampler=IdentitySampler(8), passes=0, overlap=0, flip_versions=True)
    flipped = [torch.flip(net.w, flip_axes(k)) for k in range(8)]
    assert sorted(len(flip_axes(k)) for k in range(8)) == [0, 1, 1, 1, 2, 2, 2, 3]
    torch.testing.assert_close(inferer(x, net), x * torch.stack(flipped).mean(0))
    plain = MCDropoutInferer(roi_size=shape, sampler=IdentitySampler(8), passes=0, overlap=0)
    torch.testing.assert_close(plain(x, net), net(x))
    # a flip-equivariant network (voxelwise) gives the same estimate with and without flips
    voxelwise = nn.Tanh()
    torch.testing.assert_close(inferer(x, voxelwise), plain(x, voxelwise))
    # even/odd Noise2Noise gets the same flips for a like-for-like comparison: K copies of each window
    from cet_monai.methods import EvenOddHalves

    halves = EvenOddHalves(patch_size=shape, versions=8, flip_versions=True).window_inferer()
    assert halves.flip_versions and halves.sampler.num_versions == 8


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


class ConstantOutput(nn.Module):
    """Ignores its input and returns the matching crop of a fixed volume (through sliding windows:
    the window's position is recovered from a coordinate channel-free trick: we return a constant)."""

    def __init__(self, value):
        super().__init__()
        self.value = value
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.full_like(x, self.value) + 0 * self.dummy


def test_whole_tomogram_split_merges_per_frequency():
    from cet_monai.inferers import FourierSplitInferer, IdentitySampler
    from cet_monai.transforms.fourier import split_scales

    x = torch.randn(1, 1, 16, 16, 16)
    window = MCDropoutInferer(roi_size=16, sampler=IdentitySampler(), passes=0)
    # a constant prediction lives on the DC coefficient only, which keep_dc leaves unscaled
    out = FourierSplitInferer(window, num_versions=3, seed=0)(x, ConstantOutput(2.5))
    torch.testing.assert_close(out, torch.full_like(x, 2.5), rtol=1e-4, atol=1e-4)
    # an identity network: each prediction is its own input, which holds nothing on the
    # coefficients it did not see; only coefficients every input saw (about 1/2**K of them,
    # where the plain mean is the fallback) and the mean survive the merge
    ident = nn.Conv3d(1, 1, 1, bias=False)
    with torch.no_grad():
        ident.weight.fill_(1.0)
    merged = FourierSplitInferer(window, num_versions=6, seed=1)(x, ident)
    plain = FourierSplitInferer(window, num_versions=6, seed=1, restrict=False)(x, ident)
    assert float(merged.mean()) == pytest.approx(float(x.mean()), abs=1e-5)
    assert float(merged.var()) < 0.1 * float(plain.var())
    assert split_scales(0.5, "energy")[1] == pytest.approx(2**0.5)


def test_whole_tomogram_split_needs_identity_windows():
    from cet_monai.inferers import FourierSplitInferer

    with pytest.raises(ValueError, match="IdentitySampler"):
        FourierSplitInferer(MCDropoutInferer(roi_size=8, sampler=ScaledCopies()))


class _SameInputBernoulli(WindowSampler):
    """Self2Self-style sampler whose N "masked" copies are all the window itself, so any
    difference between the N predictions can only come from the network each went through."""

    one_network_per_version = True
    num_versions = 3

    def __init__(self):
        self.counts = []

    def versions(self, windows, generator, count=None):
        self.counts.append(count)
        return windows.unsqueeze(0).repeat((count,) + (1,) * windows.dim()), None


class _Recorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.outputs = []

    def forward(self, x):
        y = self.drop(torch.ones_like(x))
        self.outputs.append(y.detach().clone())
        return y


def test_each_bernoulli_sample_gets_its_own_thinned_network():
    """Self2Self: z = 1/N sum_n f_theta_n(b_n x); N = K x T samples, sample n through network n
    (two samples through one network would give equal outputs here: a failure)."""
    sampler, net = _SameInputBernoulli(), _Recorder()
    inferer = MCDropoutInferer(roi_size=(8, 8, 8), sampler=sampler, passes=2, sw_batch_size=2, overlap=0.0, seed=1)
    x = torch.zeros(1, 1, 8, 8, 16)  # two windows with the same content
    inferer(x, net)
    assert sampler.counts == [6]  # K=3 x T=2 samples per window
    (out,) = net.outputs  # (N * windows, C, 8, 8, 8), version-major
    per_sample = out.reshape(6, 2, -1)
    flat = per_sample[:, 0]
    assert all(not torch.equal(flat[i], flat[j]) for i in range(6) for j in range(i + 1, 6))
    # the same thinned network theta_n in every window
    torch.testing.assert_close(per_sample[:, 0], per_sample[:, 1])
    # reproducible
    net2 = _Recorder()
    MCDropoutInferer(roi_size=(8, 8, 8), sampler=_SameInputBernoulli(), passes=2, sw_batch_size=2, overlap=0.0, seed=1)(x, net2)
    torch.testing.assert_close(net2.outputs[0], out)


def test_bernoulli_std_is_nonzero_with_one_pass():
    from cet_monai.inferers.samplers import BernoulliSampler

    net = DropoutUNet(spatial_dims=3, in_channels=1, out_channels=1, features=(4, 8), dropout=0.3)
    inferer = MCDropoutInferer(roi_size=(8, 8, 8), sampler=BernoulliSampler(num_versions=4), passes=1, return_std=True, seed=0)
    out = inferer(torch.randn(1, 1, 8, 8, 8), net)
    assert out["std"].min() > 0


def test_bernoulli_block_fourier_masks_keep_the_intensity_scale():
    """With an identity network the mean of K masked copies is irfftn(F E[w]) (0.3-0.8 of the
    input by frequency); the sampler divides by E[w]: slope of the input on the estimate ~1."""
    from cet_monai.inferers.samplers import FourierSampler

    x = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    sampler = FourierSampler(num_versions=256, masks="bernoulli", keep_prob=0.5, flip_prob=0.1, block_scale=2)
    versions, aux = sampler.versions(x, torch.Generator().manual_seed(1))
    preds = versions.unsqueeze(0)  # identity network, T = 1
    plain = preds.mean(dim=(0, 1))
    estimate = sampler.combine(preds, aux)

    def slope(out):
        return float((out * x).sum() / (out * out).sum())

    assert slope(plain) > 1.3  # attenuated: the input is ~1.6 times the plain mean
    assert 0.9 < slope(estimate) < 1.1


class _WindowRecorder(nn.Module):
    """Identity that keeps every batch of windows it is given."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return x


def test_window_context_pads_the_windows_and_crops_them_back():
    """A sampler with context c gets windows of roi + 2c made of real neighbouring voxels; the
    stitched result of an identity network is the input itself (no margin voxel leaks in)."""

    class Context(IdentitySampler):
        context = 4

    x = torch.randn(1, 1, 20, 24, 28, generator=torch.Generator().manual_seed(0))
    net = _WindowRecorder()
    out = MCDropoutInferer(roi_size=8, sampler=Context(), passes=0, overlap=0.0, sw_batch_size=1)(x, net)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)
    assert {tuple(w.shape[-3:]) for w in net.seen} == {(16, 16, 16)}
    padded = torch.nn.functional.pad(x, (4,) * 6, mode="reflect")
    torch.testing.assert_close(net.seen[0][0], padded[0, :, :16, :16, :16])  # the first window, margin included


def test_fourier_pool_inference_reads_whole_tomogram_members():
    """Pool inference denoises K whole-tomogram masked copies (the family the pool trained on):
    every window the network sees is a crop of one member irfft(F w_k) with w_k drawn on the whole
    tomogram's spectrum, not masks drawn on the window's own spectrum."""
    from cet_monai.methods import FourierMasks
    from cet_monai.transforms.fourier import FFT_DIMS

    method = FourierMasks(sampling="pool", versions=2, passes=0, patch_size=(16, 16, 16))
    x = torch.randn(1, 1, 24, 32, 32, generator=torch.Generator().manual_seed(0))
    inferer = method.inferer(overlap=0.0, sw_batch_size=1)
    net = _WindowRecorder()
    inferer(x, net)
    spec = torch.fft.rfftn(x[0], dim=FFT_DIMS)
    members = [torch.fft.irfftn(spec * w, s=x.shape[-3:], dim=FFT_DIMS) for w in inferer.members(x.shape[-3:])]
    assert len(members) == 2 and len(net.seen) == 2 * 2 * 2 * 2  # K members x 8 windows of 16^3 (the 24 edge: 2)
    starts = [(z, y, xx) for z in (0, 8) for y in (0, 16) for xx in (0, 16)]
    for window in net.seen:
        crops = [m[:, z:z + 16, y:y + 16, xx:xx + 16] for m in members for z, y, xx in starts]
        assert min(float((window[0] - c).abs().max()) for c in crops) < 1e-4
    # per-window masks (the measured option) see other inputs
    windows = FourierMasks(sampling="pool", pool_inference="windows", versions=2, passes=0, patch_size=(16, 16, 16))
    other = _WindowRecorder()
    windows.inferer(overlap=0.0, sw_batch_size=1)(x, other)
    assert all(tuple(w.shape[-3:]) == (32, 32, 32) for w in other.seen)  # window + the training margin


def test_fourier_pool_inference_keeps_the_intensity_scale():
    """Identity network: the mean of K whole-tomogram masked copies, divided by E[w], is the input
    (slope without a fit ~1; the plain mean would be ~0.6 of it)."""
    from cet_monai.inferers import FourierPoolInferer, IdentitySampler

    x = torch.randn(1, 1, 40, 48, 56, generator=torch.Generator().manual_seed(2))
    window = MCDropoutInferer(roi_size=(40, 48, 56), sampler=IdentitySampler(), passes=0)
    out = FourierPoolInferer(window, num_versions=64, seed=3)(x, nn.Identity())
    assert float((out * x).sum() / (x * x).sum()) == pytest.approx(1.0, abs=0.03)


def test_pool_std_is_the_spread_over_all_versions_and_passes():
    """--save-std of a whole-tomogram inferer: the std over the K x T predictions (here the K
    member inputs, T = 1), not the mean of each member's spread over its passes (0 here)."""
    from cet_monai.inferers import FourierPoolInferer, IdentitySampler

    x = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(4))
    window = MCDropoutInferer(roi_size=16, sampler=IdentitySampler(), passes=0, return_std=True)
    inferer = FourierPoolInferer(window, num_versions=3, seed=5)
    out = inferer(x, nn.Identity())
    from cet_monai.transforms.fourier import FFT_DIMS

    spec = torch.fft.rfftn(x[0], dim=FFT_DIMS)
    members = torch.stack([torch.fft.irfftn(spec * w, s=(16, 16, 16), dim=FFT_DIMS) for w in inferer.members((16, 16, 16))])
    torch.testing.assert_close(out["std"][0], members.std(dim=0, unbiased=False), atol=1e-5, rtol=1e-4)
