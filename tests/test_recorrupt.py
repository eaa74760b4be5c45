"""Recorrupted pairs: independent noise in input and target, seeding, margins, MONAI composition, inference sampler."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from cet_monai.inferers.samplers import RecorruptedSampler
from cet_monai.noise_spectrum import NoiseSpectrum
from cet_monai.transforms import RandRecorruptedPair, RandRecorruptedPaird, RandTomogramPatchd, colored_noise


def _spectrum(n=16, scale=1.0):
    kz, ky, kx = np.meshgrid(*[np.fft.fftfreq(n)] * 3, indexing="ij")
    p = np.sqrt(kz**2 + ky**2 + kx**2) + 0.05
    return NoiseSpectrum(scale * p / p.mean())


def _noisy(spectrum, shape=(24, 24, 24), seed=0):
    white = torch.from_numpy(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))
    return colored_noise(white, spectrum)[None]  # (1, Z, Y, X): noise only, x = 0


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_input_and_target_noise_are_uncorrelated_with_the_right_spectrum(alpha):
    """y = n (no signal): corr(n + a z, n - z / a) ~ 0 when z has n's spectrum; with a spectrum
    twice too strong the correlation is clearly negative (the check can fail)."""
    spec = _spectrum()

    def mean_corr(s):
        t = RandRecorruptedPair(spectrum=s, alpha=alpha, num_samples=4, margin=4).set_random_state(1)
        cs = []
        for seed in range(6):
            for inp, tgt in t(_noisy(spec, seed=seed)):
                cs.append(np.corrcoef(inp.numpy().ravel(), tgt.numpy().ravel())[0, 1])
        return float(np.mean(cs))

    assert abs(mean_corr(spec)) < 0.03
    assert mean_corr(spec.scaled(2.0)) < -0.15


def test_pairs_shapes_margin_and_difference():
    spec = _spectrum()
    x = torch.randn(1, 24, 24, 24)
    pairs = RandRecorruptedPair(spectrum=spec, alpha=2.0, num_samples=3, margin=4).set_random_state(0)(x)
    assert len(pairs) == 3
    for inp, tgt in pairs:
        assert inp.shape == tgt.shape == (1, 16, 16, 16)
        # (input + a^2 target) / (1 + a^2) = ((y + a z) + a^2 (y - z / a)) / (1 + a^2) = y, the cropped patch
        torch.testing.assert_close((inp + 4.0 * tgt) / 5.0, x[:, 4:-4, 4:-4, 4:-4], atol=1e-5, rtol=0)
    assert not torch.allclose(pairs[0][0], pairs[1][0])


def test_seeded_reproducible_and_numpy_input():
    spec = _spectrum()
    x = np.random.default_rng(0).normal(size=(1, 20, 20, 20)).astype(np.float32)
    a = RandRecorruptedPair(spectrum=spec, num_samples=2).set_random_state(5)(x)
    b = RandRecorruptedPair(spectrum=spec, num_samples=2).set_random_state(5)(torch.from_numpy(x))
    c = RandRecorruptedPair(spectrum=spec, num_samples=2).set_random_state(6)(x)
    torch.testing.assert_close(a[0][0], b[0][0])
    assert not torch.allclose(a[0][0], c[0][0])


def test_prob_zero_gives_the_identity_pair():
    x = torch.randn(1, 16, 16, 16)
    ((inp, tgt),) = RandRecorruptedPair(spectrum=_spectrum(), num_samples=1, prob=0.0)(x)
    torch.testing.assert_close(inp, x)
    torch.testing.assert_close(tgt, x)


def test_dictionary_version_in_a_plain_monai_compose():
    """Patches with margins, then pairs; MONAI's Compose.randomize and set_random_state work as with its own transforms."""
    spec = _spectrum()
    volume = MetaTensor(torch.randn(1, 32, 40, 40))

    def chain(seed):
        c = Compose([
            RandTomogramPatchd("image", patch_size=16, num_samples=2, margin=4),
            RandRecorruptedPaird("image", spectrum=spec, num_samples=2),
        ], map_items=2)
        c.set_random_state(seed)
        return c

    c = chain(0)
    c.randomize(None)  # must not raise (MONAI catches TypeError only)
    out = [item for items in chain(0)({"image": volume}) for item in items]
    again = [item for items in chain(0)({"image": volume}) for item in items]
    assert len(out) == 4
    for item, other in zip(out, again):
        assert item["image"].shape == item["label"].shape == (1, 16, 16, 16)
        assert isinstance(item["image"], MetaTensor)
        torch.testing.assert_close(item["image"].as_tensor(), other["image"].as_tensor())
        assert int(torch.as_tensor(item["patch_margin"]).sum()) == 0


def test_dictionary_version_reads_the_spectrum_from_the_item():
    spec = _spectrum()
    out = RandRecorruptedPaird("image", num_samples=1).set_random_state(0)({"image": torch.zeros(1, 16, 16, 16), "noise_spectrum": spec})
    assert "noise_spectrum" not in out[0] and float(out[0]["image"].std()) > 0.5
    with pytest.raises(ValueError, match="noise spectrum"):
        RandRecorruptedPaird("image", num_samples=1)({"image": torch.zeros(1, 16, 16, 16)})


def test_inference_sampler_draws_k_noise_versions_of_the_spectrum():
    spec = _spectrum(scale=2.0)
    sampler = RecorruptedSampler(spec.state_dict(), num_versions=6, alpha=0.5, margin=4)  # as a checkpoint stores it
    windows = torch.zeros(3, 1, 16, 16, 16)
    versions, _ = sampler.versions(windows, torch.Generator().manual_seed(0))
    assert versions.shape == (6, 3, 1, 16, 16, 16)
    assert float(versions.var()) == pytest.approx(0.25 * 2.0, rel=0.15)  # a^2 * variance
    again, _ = sampler.versions(windows, torch.Generator().manual_seed(0))
    torch.testing.assert_close(versions, again)
    preds = torch.randn(2, 6, 3, 1, 16, 16, 16)
    torch.testing.assert_close(sampler.combine(preds, None), preds.mean(dim=(0, 1)))
    with pytest.raises(ValueError):
        RecorruptedSampler(spec, num_versions=0)


def test_local_level_scales_the_drawn_noise_to_the_patch_and_window():
    """With ``local_level`` a patch whose noise is twice the spectrum's gets noise twice as strong
    (same draw otherwise), in training pairs and at inference; without it, the same noise."""
    spec = NoiseSpectrum(_spectrum().grid, {"k0": 0.15})
    weak, strong = _noisy(spec, shape=(32, 32, 32), seed=3), 2.0 * _noisy(spec, shape=(32, 32, 32), seed=3)

    def added(x, local):
        (inp, _), = RandRecorruptedPair(spectrum=spec, num_samples=1, margin=4, local_level=local).set_random_state(0)(x)
        return inp - x[:, 4:-4, 4:-4, 4:-4]

    torch.testing.assert_close(added(strong, False), added(weak, False))
    ratio = float(added(strong, True).std() / added(weak, True).std())
    assert ratio == pytest.approx(2.0, rel=1e-3)
    assert float(added(weak, True).std() / added(weak, False).std()) == pytest.approx(1.0, abs=0.1)
    sampler = RecorruptedSampler(spec, num_versions=2, margin=4, local_level=True)
    windows = torch.cat([weak[None], strong[None]])  # (B=2, C=1, 32, 32, 32)
    versions, _ = sampler.versions(windows, torch.Generator().manual_seed(0))
    drawn = versions - windows[None]
    assert float(drawn[:, 1].std() / drawn[:, 0].std()) == pytest.approx(2.0, rel=0.1)  # different draws per window
    assert sampler.config["local_level"] is True



def test_equalize_level_divides_the_patch_and_window_by_their_noise_level():
    """With ``equalize_level`` the pair is the ``local_level`` pair divided by ``sqrt(level)``:
    a patch whose noise is twice the spectrum's gives the same pairs as the weak one (the noise
    drawn at the spectrum's strength); at inference each window's versions are divided alike and
    ``restore`` multiplies the predictions back, so an identity network returns exactly what the
    ``local_level`` sampler's versions average to."""
    spec = NoiseSpectrum(_spectrum().grid, {"k0": 0.15})
    weak, strong = _noisy(spec, shape=(32, 32, 32), seed=3), 2.0 * _noisy(spec, shape=(32, 32, 32), seed=3)

    def pair(x, equalize):
        t = RandRecorruptedPair(spectrum=spec, num_samples=1, margin=4, local_level=True, equalize_level=equalize)
        (inp, tgt), = t.set_random_state(0)(x)
        return inp, tgt

    scaled_inp, scaled_tgt = pair(strong, False)
    eq_inp, eq_tgt = pair(strong, True)
    from cet_monai.noise_spectrum import local_noise_level

    root = float(local_noise_level(strong, spec).mean().sqrt())
    assert root == pytest.approx(2.0, rel=0.1)
    torch.testing.assert_close(eq_inp * root, scaled_inp, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(eq_tgt * root, scaled_tgt, rtol=1e-4, atol=1e-4)
    weak_inp, _ = pair(weak, True)  # the same noise strength in the network's input either way
    assert float(eq_inp.std() / weak_inp.std()) == pytest.approx(1.0, rel=0.05)
    with pytest.raises(ValueError, match="local_level"):
        RandRecorruptedPair(spectrum=spec, equalize_level=True)

    windows = torch.cat([weak[None], strong[None]])  # (B=2, C=1, 32, 32, 32)
    plain = RecorruptedSampler(spec, num_versions=3, margin=4, local_level=True)
    equal = RecorruptedSampler(spec, num_versions=3, margin=4, local_level=True, equalize_level=True)
    v_plain, aux_plain = plain.versions(windows, torch.Generator().manual_seed(0))
    v_equal, aux_equal = equal.versions(windows, torch.Generator().manual_seed(0))
    assert aux_plain is None and aux_equal.shape == (2, 1, 1, 1, 1)
    assert float(v_equal[:, 1].std() / v_equal[:, 0].std()) == pytest.approx(1.0, rel=0.1)
    restored = equal.restore(v_equal[None], aux_equal)  # the identity network's predictions, scaled back
    torch.testing.assert_close(equal.combine(restored, aux_equal), plain.combine(v_plain[None], None), rtol=1e-4, atol=1e-4)
    assert equal.config["equalize_level"] is True and "equalize_level" not in plain.config
    with pytest.raises(ValueError, match="local_level"):
        RecorruptedSampler(spec, equalize_level=True)
    from cet_monai.inferers import MCDropoutInferer

    def infer(sampler):  # the whole inferer, the spread over predictions included
        inferer = MCDropoutInferer(roi_size=32, sampler=sampler, passes=0, seed=0, return_std=True)
        return inferer(strong[None], torch.nn.Identity())

    out_plain, out_equal = infer(plain), infer(equal)
    torch.testing.assert_close(out_equal["mean"], out_plain["mean"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out_equal["std"], out_plain["std"], rtol=1e-4, atol=1e-4)


def _echo_spectrum(shape=(8, 8, 128), lag=40):
    """Unit white noise plus a copy of itself ``lag`` voxels along X: covariance 1 at lag 0 and
    0.5 at +-lag along X (power ``1 + cos(2 pi k_x lag)``), a long-range structure that is fine
    in frequency (period 1/lag cycles/voxel)."""
    kx = np.fft.fftfreq(shape[2])[None, None, :]
    return NoiseSpectrum(np.broadcast_to(1.0 + np.cos(2 * np.pi * kx * lag), shape).copy())


def _lag_correlation(patches, lag):
    a, b = patches[..., :-lag], patches[..., lag:]
    return float((a * b).mean() / patches.var())


def test_noise_bank_keeps_the_long_range_covariance_a_patch_grid_loses():
    """Noise cut from a bank on the spectrum's own grid has the covariance 0.5 at X-lag 40 and none
    at lag 8 inside 48-voxel patches; drawn on each patch's own grid (the spectrum interpolated to
    it, periodic over 48 voxels) the echo wraps around to lag 48 - 40 = 8, where there is none."""
    spec = _echo_spectrum()
    x = torch.zeros(1, 8, 8, 48)
    banked = RandRecorruptedPair(spectrum=spec, num_samples=8, margin=0, noise_bank=4).set_random_state(0)
    own = RandRecorruptedPair(spectrum=spec, num_samples=8, margin=0).set_random_state(0)

    def drawn(t):
        return torch.cat([torch.cat([inp for inp, _ in t(x)]) for _ in range(8)])  # y = 0: the input is a z

    banked_noise, own_noise = drawn(banked), drawn(own)
    assert _lag_correlation(banked_noise, 40) == pytest.approx(0.5, abs=0.08)
    assert abs(_lag_correlation(banked_noise, 8)) < 0.05
    assert _lag_correlation(own_noise, 8) > 0.3
    assert banked.bank(spec).size == 4 and banked.bank(spec).grid == (8, 8, 128)


def test_noise_bank_cuts_wrap_around_and_are_seeded():
    from cet_monai.transforms import NoiseBank

    volumes = torch.arange(2 * 4 * 5 * 6, dtype=torch.float32).reshape(2, 4, 5, 6)
    bank = NoiseBank(volumes)
    cut = bank.cut((3, 3, 4), [1], np.array([[3, 4, 5]]))[0]
    expected = volumes[1][np.ix_([3, 0, 1], [4, 0, 1], [5, 0, 1, 2])]
    torch.testing.assert_close(cut, expected)
    assert bank.holds((4, 5, 6)) and not bank.holds((5, 5, 6))
    with pytest.raises(ValueError, match="does not fit"):
        bank.cut((5, 5, 6), [0], np.zeros((1, 3), int))
    spec = _spectrum()
    x = torch.randn(1, 24, 24, 24)
    a = RandRecorruptedPair(spectrum=spec, num_samples=2, margin=4, noise_bank=3).set_random_state(5)(x)
    b = RandRecorruptedPair(spectrum=spec, num_samples=2, margin=4, noise_bank=3).set_random_state(5)(x)
    c = RandRecorruptedPair(spectrum=spec, num_samples=2, margin=4, noise_bank=3).set_random_state(6)(x)
    torch.testing.assert_close(a[1][0], b[1][0])
    assert not torch.allclose(a[1][0], c[1][0])
    # the patch (24^3) is larger than the spectrum's grid (16^3): drawn on its own grid, same shapes
    (inp, tgt), _ = a
    assert inp.shape == tgt.shape == (1, 16, 16, 16)
    torch.testing.assert_close((inp + tgt) / 2, x[:, 4:-4, 4:-4, 4:-4], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="noise_bank"):
        RandRecorruptedPair(spectrum=spec, noise_bank=-1)


def test_noise_bank_resumes_from_the_transform_state():
    """A run restored from a checkpoint (``self.R``'s state and the transform's ``state_dict``) cuts
    its pairs from the same bank as the uninterrupted run, though the bank was drawn before the
    checkpoint; re-seeding draws another bank; a state from before banks had seeds loads as none."""
    spec = _spectrum()
    x = torch.randn(1, 12, 12, 12)

    def pairer():
        return RandRecorruptedPair(spectrum=spec, num_samples=2, margin=2, noise_bank=3).set_random_state(11)

    straight = pairer()
    straight(x)  # the bank is drawn here, at the first patch
    r_state, t_state = straight.R.get_state(), straight.state_dict()
    expected = straight(x)
    resumed = pairer()  # a new process: nothing drawn yet
    resumed.R.set_state(r_state)
    resumed.load_state_dict(t_state)
    got = resumed(x)
    for (a, b), (c, d) in zip(got, expected):
        torch.testing.assert_close(a, c)
        torch.testing.assert_close(b, d)
    # without the transform's state the restored stream draws another bank: the state is what resumes it
    unseeded = pairer()
    unseeded.R.set_state(r_state)
    assert not torch.allclose(unseeded(x)[0][0], expected[0][0])
    assert int(t_state["bank_seed"]) >= 0 and int(pairer().state_dict()["bank_seed"]) == -1
    old = pairer()
    old.load_state_dict({})
    assert int(old.state_dict()["bank_seed"]) == -1
    bank = straight.bank(spec)
    straight.set_random_state(12)
    assert not torch.allclose(straight.bank(spec).volumes, bank.volumes)


def test_noise_bank_pairs_are_uncorrelated_and_the_sampler_cuts_from_its_own_bank():
    spec = _spectrum(n=32)
    t = RandRecorruptedPair(spectrum=spec, num_samples=4, margin=2, noise_bank=4).set_random_state(1)
    cs = [np.corrcoef(i.numpy().ravel(), g.numpy().ravel())[0, 1] for seed in range(6) for i, g in t(_noisy(spec, shape=(20, 20, 20), seed=seed))]
    assert abs(float(np.mean(cs))) < 0.03
    sampler = RecorruptedSampler(spec, num_versions=4, alpha=0.5, margin=2, noise_bank=3)
    windows = torch.zeros(2, 1, 12, 12, 12)
    versions, _ = sampler.versions(windows, torch.Generator().manual_seed(0))
    assert versions.shape == (4, 2, 1, 12, 12, 12)
    assert float(versions.var()) == pytest.approx(0.25 * spec.variance, rel=0.2)
    assert sampler._bank.size == 3 and sampler.config["noise_bank"] == 3
    again = RecorruptedSampler(spec, num_versions=4, alpha=0.5, margin=2, noise_bank=3).versions(windows, torch.Generator().manual_seed(0))[0]
    torch.testing.assert_close(versions, again)
    assert "noise_bank" not in RecorruptedSampler(spec).config  # records without a bank are what they were


def test_target_lowpass_filters_the_target_on_the_patch_with_its_margin():
    """The input is untouched; the target is the unfiltered target low-passed on the patch WITH its
    margin, then cropped: nothing left above cutoff + roll-off, everything kept below the cutoff."""
    from cet_monai.transforms import radial_lowpass

    spec = _spectrum()
    x = torch.randn(1, 32, 32, 32)
    whole = RandRecorruptedPair(spectrum=spec, num_samples=2, margin=0).set_random_state(3)(x)
    plain = RandRecorruptedPair(spectrum=spec, num_samples=2, margin=4).set_random_state(3)(x)
    cut = RandRecorruptedPair(spectrum=spec, num_samples=2, margin=4, target_lowpass=0.2).set_random_state(3)(x)
    for (inp_w, tgt_w), (inp_p, tgt_p), (inp_c, tgt_c) in zip(whole, plain, cut):
        torch.testing.assert_close(inp_c, inp_p)  # same draws, input unchanged
        torch.testing.assert_close(tgt_p, tgt_w[:, 4:-4, 4:-4, 4:-4])
        filtered = radial_lowpass(tgt_w, 0.2, 0.05)
        torch.testing.assert_close(tgt_c, filtered[:, 4:-4, 4:-4, 4:-4], atol=1e-5, rtol=0)
        assert not torch.allclose(tgt_c, tgt_p, atol=1e-2)
    k = np.sqrt(sum(f**2 for f in np.meshgrid(np.fft.fftfreq(32), np.fft.fftfreq(32), np.fft.rfftfreq(32), indexing="ij")))
    low, high = torch.fft.rfftn(filtered[0]), torch.fft.rfftn(tgt_w[0])
    assert float(low.abs()[k > 0.25].max()) < 1e-3 * float(high.abs()[k > 0.25].max())
    torch.testing.assert_close(low[k <= 0.2], high[k <= 0.2], atol=1e-3, rtol=1e-4)
    with pytest.raises(ValueError, match="target_lowpass"):
        RandRecorruptedPair(spectrum=spec, target_lowpass=0.0)
