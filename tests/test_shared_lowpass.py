"""Split pairs with a shared low-frequency ball: the ball goes to both halves, the rest is split."""

import numpy as np
import torch

from cet_monai.transforms import RandFourierPair
from cet_monai.transforms.fourier import FFT_DIMS, fourier_versions, combine_split_predictions, shared_lowpass_mask


def test_ball_is_shared_and_the_rest_split_without_noise_correlation():
    x = torch.randn(1, 24, 24, 24)
    t = RandFourierPair(mode="split", num_samples=4, margin=0, shared_lowpass=0.05, tilt_range_deg=None)
    t.set_random_state(0)
    ball = shared_lowpass_mask((24, 24, 24), 0.05)
    assert 0.03 < float(ball.float().mean()) < 0.07
    for inp, tgt in t.draw(x):
        fi = torch.fft.rfftn(torch.as_tensor(inp)[0], dim=FFT_DIMS)
        ft = torch.fft.rfftn(torch.as_tensor(tgt)[0], dim=FFT_DIMS)
        # inside the ball both are the input's own coefficients (unscaled)
        fx = torch.fft.rfftn(x[0], dim=FFT_DIMS)
        torch.testing.assert_close(fi[ball], fx[ball], rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(ft[ball], fx[ball], rtol=1e-3, atol=1e-3)
        # outside it the two halves are disjoint
        outside = ~ball
        outside[0, 0, 0] = False
        both = (fi.abs() > 1e-3) & (ft.abs() > 1e-3) & outside
        assert int(both.sum()) == 0
        # so the noise outside the ball is uncorrelated between input and target
        hi = torch.fft.irfftn(fi * outside, s=(24, 24, 24), dim=FFT_DIMS)
        ht = torch.fft.irfftn(ft * outside, s=(24, 24, 24), dim=FFT_DIMS)
        assert abs(float(np.corrcoef(hi.ravel(), ht.ravel())[0, 1])) < 1e-4


def test_inference_versions_keep_the_ball_unscaled():
    x = torch.randn(1, 1, 16, 16, 16)
    v = fourier_versions(x, 3, mode="split", generator=0, shared_lowpass=0.05, tilt_range_deg=None)
    assert v.shared_mask is not None and bool(v.input_masks[:, :, :, v.shared_mask].all())
    # predictions equal to the inputs: the shared ball comes back as the input's own coefficients
    merged = combine_split_predictions(v.inputs, v.input_masks, v.target_scale, shared_mask=v.shared_mask)
    fm = torch.fft.rfftn(merged[0, 0], dim=FFT_DIMS)
    fx = torch.fft.rfftn(x[0, 0], dim=FFT_DIMS)
    torch.testing.assert_close(fm[v.shared_mask], fx[v.shared_mask], rtol=1e-3, atol=1e-3)
