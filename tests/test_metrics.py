import numpy as np
import pytest
import torch

from cet_monai.metrics import (
    best_gaussian,
    fit_scale_offset,
    fourier_shell_correlation,
    fsc_resolution,
    psnr,
    ssim,
)


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    ref = np.zeros((16, 24, 24), np.float32)
    ref[4:12, 6:18, 6:18] = 1.0
    from scipy import ndimage

    ref = ndimage.gaussian_filter(ref, 1.0)
    noisy = ref + rng.normal(0, 0.3, ref.shape).astype(np.float32)
    return noisy, ref


def test_fit_recovers_affine_map(pair):
    _, ref = pair
    fitted = fit_scale_offset(-3.0 * ref + 7.0, ref)
    np.testing.assert_allclose(fitted, ref, atol=1e-6)


def test_psnr_ssim_invariant_to_scale_and_offset(pair):
    noisy, ref = pair
    assert psnr(5 * noisy - 2, ref) == pytest.approx(psnr(noisy, ref), abs=1e-4)
    assert ssim(5 * noisy - 2, ref) == pytest.approx(ssim(noisy, ref), abs=1e-4)


def test_psnr_matches_definition(pair):
    noisy, ref = pair
    fitted = fit_scale_offset(noisy, ref)
    mse = np.mean((fitted - ref) ** 2)
    expected = 10 * np.log10((ref.max() - ref.min()) ** 2 / mse)
    assert psnr(noisy, ref) == pytest.approx(expected, abs=1e-3)
    assert psnr(torch.as_tensor(noisy), ref) == pytest.approx(expected, abs=1e-3)


def test_ssim_perfect_and_noisy(pair):
    noisy, ref = pair
    assert ssim(ref, ref) == pytest.approx(1.0, abs=1e-5)
    assert ssim(noisy, ref) < 0.9


def test_best_gaussian_beats_raw_and_is_chosen_per_metric(pair):
    noisy, ref = pair
    best = best_gaussian(noisy, ref, sigmas=(0.5, 1.0, 2.0))
    assert best["psnr"].value > psnr(noisy, ref)
    assert best["ssim"].value > ssim(noisy, ref)
    assert best["psnr"].value == pytest.approx(psnr(best["psnr"].filtered, ref), abs=1e-3)


def test_fsc_identical_is_one_and_independent_noise_is_low():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(32, 32, 32))
    freq, fsc = fourier_shell_correlation(a, a, voxel_size=10.0)
    np.testing.assert_allclose(fsc, 1.0, atol=1e-9)
    assert freq[-1] < 0.05 and freq[-1] > 0.04  # Nyquist of 10 A voxels is 0.05 / A
    _, fsc_indep = fourier_shell_correlation(a, rng.normal(size=a.shape))
    assert np.abs(fsc_indep[2:]).max() < 0.2


def test_fsc_resolution_interpolates_crossing():
    freq = np.array([0.01, 0.02, 0.03, 0.04])
    fsc = np.array([1.0, 0.8, 0.4, 0.1])
    # crossing 0.5 between 0.02 (0.8) and 0.03 (0.4): f = 0.0275
    assert fsc_resolution(freq, fsc, 0.5) == pytest.approx(1 / 0.0275)
    assert fsc_resolution(freq, np.ones(4), 0.5) == pytest.approx(25.0)


def test_gaussian_risk_estimates_the_error_without_the_clean_volume():
    from scipy import ndimage

    from cet_monai.metrics import gaussian_by_noise_spectrum, gaussian_risk
    from cet_monai.noise_spectrum import NoiseSpectrum

    rng = np.random.default_rng(3)
    clean = ndimage.gaussian_filter(rng.standard_normal((32, 48, 48)), 2.5, mode="wrap")
    clean *= 1.0 / clean.std()
    noisy = clean + 0.8 * rng.standard_normal(clean.shape)
    white = NoiseSpectrum(np.full((8, 8, 8), 0.64))
    sigmas = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
    risk = gaussian_risk(noisy, white, sigmas)
    true = {s: float(((ndimage.gaussian_filter(noisy, s, mode="wrap") - clean) ** 2).mean()) for s in sigmas}
    for s in sigmas:
        assert risk[s] == pytest.approx(true[s], rel=0.1), (s, risk[s], true[s])
    best = gaussian_by_noise_spectrum(noisy, white, sigmas)
    assert best.metric == "risk" and best.sigma == min(true, key=true.get)
    # a spectrum that is much too low (noise taken for signal) picks a smaller sigma
    assert gaussian_by_noise_spectrum(noisy, white.scaled(0.05), sigmas).sigma < best.sigma
