"""NoiseWeightedMSELoss: the plain MSE for a flat spectrum, weights by the noise power otherwise."""

import numpy as np
import pytest
import torch

from cet_monai.losses import NoiseWeightedMSELoss
from cet_monai.noise_spectrum import NoiseSpectrum


def _ramp(n=16, scale=1.0):
    kz, ky, kx = np.meshgrid(*[np.fft.fftfreq(n)] * 3, indexing="ij")
    return NoiseSpectrum(scale * np.sqrt(kz**2 + ky**2 + kx**2))  # 0 at zero frequency: the floor's case


def _cosine(shape, cycles_x):
    x = np.arange(shape[-1])
    return torch.from_numpy(np.broadcast_to(np.cos(2 * np.pi * cycles_x * x / shape[-1]), shape).astype(np.float32).copy())


def test_flat_spectrum_is_the_plain_mse_and_odd_shapes_work():
    loss = NoiseWeightedMSELoss(NoiseSpectrum(np.full((8, 8, 8), 3.0)), exponent=0.5)
    for shape in [(2, 1, 12, 10, 9), (1, 2, 8, 8, 8)]:
        a, b = torch.randn(shape), torch.randn(shape)
        torch.testing.assert_close(loss(a, b), torch.nn.functional.mse_loss(a, b), rtol=1e-5, atol=0)


def test_errors_cost_by_the_noise_power_at_their_frequency():
    """Two errors of equal MSE, one at 2 and one at 6 cycles across X of a 16^3 patch: with
    exponent 1 their losses are in the ratio of the spectrum there (|k| = 6/16 against 2/16); with
    exponent 0 they cost the same; the weights average to 1 over the full grid."""
    shape = (1, 1, 16, 16, 16)
    low, high = _cosine(shape, 2), _cosine(shape, 6)
    zero = torch.zeros(shape)
    weighted = NoiseWeightedMSELoss(_ramp(), exponent=1.0, floor=0.05)
    assert float(weighted(high, zero) / weighted(low, zero)) == pytest.approx(3.0, rel=1e-4)
    plain = NoiseWeightedMSELoss(_ramp(), exponent=0.0)
    torch.testing.assert_close(plain(high, zero), plain(low, zero))
    torch.testing.assert_close(plain(high, zero), torch.nn.functional.mse_loss(high, zero))
    # weights on the half spectrum, each column counted as often as it stands for: mean 1 over the full grid
    w = weighted.weights((16, 16, 16))
    assert float(w.sum()) / 16**3 == pytest.approx(1.0, rel=1e-5)
    # the floor: zero frequency, where the ramp is 0, weighs 0.05 of the mean power to the power 1, not 0
    mean_power = float(np.mean(_ramp().on_grid((16, 16, 16), rfft=False)))
    ratio = float(w[0, 0, 0] / (w[0, 0, 6] / 2))  # column 6 stands for two coefficients of the full spectrum
    assert ratio == pytest.approx(0.05 * mean_power / (6 / 16), rel=0.02)


def test_several_spectra_count_by_their_shape_not_their_level():
    a, b = torch.randn(1, 1, 12, 12, 12), torch.randn(1, 1, 12, 12, 12)
    one = NoiseWeightedMSELoss(_ramp(), exponent=0.5)
    levels = NoiseWeightedMSELoss([_ramp(scale=1.0), _ramp(scale=20.0)], exponent=0.5)
    torch.testing.assert_close(one(a, b), levels(a, b))
    flat = NoiseSpectrum(np.ones((8, 8, 8)))
    mixed = NoiseWeightedMSELoss([_ramp(), flat], exponent=1.0)
    expected = 0.5 * (_ramp().on_grid((12, 12, 12)) / np.mean(_ramp().on_grid((12, 12, 12), rfft=False)) + 1.0)
    w = mixed.weights((12, 12, 12)) / torch.from_numpy(np.array([1.0] + [2.0] * 5 + [1.0], np.float32))
    np.testing.assert_allclose(w.numpy() / w.numpy()[0, 0, 3], np.maximum(expected, 0.05 * expected.mean()) / expected[0, 0, 3], rtol=0.02)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="noise spectrum"):
        NoiseWeightedMSELoss(None)
    with pytest.raises(ValueError, match="floor"):
        NoiseWeightedMSELoss(_ramp(), floor=0.0)
    with pytest.raises(ValueError, match="one shape"):
        NoiseWeightedMSELoss(_ramp())(torch.zeros(1, 1, 8, 8, 8), torch.zeros(1, 1, 8, 8, 9))
