"""Whole-tomogram Fourier pool inference: the inference counterpart of a masked sample pool.

A network trained on a :class:`~cet_monai.transforms.FourierSamplePool` of Bernoulli-block
masks (``kind="bernoulli"``: ``x_s = irfft(F * w_s)``, ``w_s = clip(ball + blocks, 1) * sign``, drawn
on the whole tomogram's spectrum) has only ever seen crops of whole-tomogram masked copies: their
blocks are ``block_scale`` coefficients of the *tomogram's* spectrum (1/8 to 1/16 of a
64x128x128 band), and the speckle each mask leaves reaches across the whole volume. Masks drawn on
each window's own spectrum are another family (the same 8 coefficients span a quarter to a sixth
of a 32-48 voxel window's band: coarser in frequency; a periodic window). So inference draws ``K``
members of the training family on the whole tomogram and denoises each through the same
``T`` thinned networks, the described estimate

    x_k = irfft(F * w_k);   z = irfft( FFT(1/(K*T) sum_k sum_t f_t(x_k)) / E[w](k) )

where ``E[w](k)`` (:func:`~cet_monai.transforms.expected_bernoulli_mask`) undoes the attenuation a
network trained on masked targets learns (0.3-0.8 by frequency), so ``z`` keeps the input's
intensity scale. Memory: the tomogram's spectrum, one member, one prediction and the running
mean, whatever ``K``; the whole FFT means this path is not slabbed.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.inferers import Inferer

from cet_monai.transforms.fourier_masks import FFT_DIMS, LowpassBall, bernoulli_fourier_mask, expected_bernoulli_mask

from .mc_inferer import IdentitySampler, MCDropoutInferer

__all__ = ["FourierPoolInferer", "VersionMoments"]


class VersionMoments:
    """Running mean and spread over ``K`` versions, each the mean (and std) of ``T`` passes.

    ``add(pred)`` takes a tensor (one prediction per version) or the window inferer's
    ``{"mean", "std"}`` (mean and std over its ``T`` passes). :meth:`std` is the standard
    deviation over all ``K x T`` predictions (law of total variance:
    ``mean_k(std_k^2 + mean_k^2) - mean^2``), not the mean of the per-version ones.
    """

    def __init__(self) -> None:
        self.count = 0
        self.total = None
        self.second = None

    def add(self, pred) -> torch.Tensor:
        """Accumulate one version; returns its mean prediction."""
        std = None
        if isinstance(pred, dict):
            pred, std = pred["mean"], pred["std"]
        pred = pred.float()
        self.count += 1
        self.total = pred.clone() if self.total is None else self.total.add_(pred)
        if std is not None:
            moment = std.float().square().add_(pred.square())
            self.second = moment if self.second is None else self.second.add_(moment)
        return pred

    def mean(self) -> torch.Tensor:
        return self.total / self.count

    def std(self) -> torch.Tensor | None:
        if self.second is None:
            return None
        mean = self.mean()
        return (self.second / self.count - mean.square()).clamp_min_(0.0).sqrt_()


class FourierPoolInferer(Inferer):
    """K whole-tomogram Bernoulli-block copies, each denoised by an :class:`MCDropoutInferer`.

    Args:
        window_inferer: denoises one whole masked copy with its ``T`` dropout passes (its sampler
            must be the identity: the copies are made here).
        num_versions: K, whole-tomogram masked copies.
        keep_prob, block_scale, flip_prob, lowpass_fraction: the training pool's mask settings
            (:class:`~cet_monai.transforms.FourierSamplePool`, ``kind="bernoulli"``).
        seed: seeds the masks (a ``RandomState`` stream, as the pool's).

    Input ``(1, C, Z, Y, X)``, the whole normalised tomogram; output the same shape (or
    ``{"mean", "std"}`` when the window inferer returns the spread: the std over the ``K x T``
    predictions, before the ``E[w]`` correction).
    """

    def __init__(
        self,
        window_inferer: MCDropoutInferer,
        num_versions: int = 4,
        keep_prob: float = 0.5,
        block_scale: int = 8,
        flip_prob: float = 0.1,
        lowpass_fraction: tuple[float, float] = (0.05, 0.10),
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(window_inferer.sampler, IdentitySampler):
            raise ValueError("the window inferer of a FourierPoolInferer must use the IdentitySampler")
        if int(num_versions) < 1:
            raise ValueError(f"num_versions must be >= 1, got {num_versions}")
        self.window_inferer = window_inferer
        self.num_versions = int(num_versions)
        self.keep_prob = float(keep_prob)
        self.block_scale = int(block_scale)
        self.flip_prob = float(flip_prob)
        self.lowpass_fraction = tuple(float(f) for f in lowpass_fraction)
        self.seed = int(seed)
        self.config = {"num_versions": self.num_versions, "keep_prob": self.keep_prob, "block_scale": self.block_scale,
                       "flip_prob": self.flip_prob, "lowpass_fraction": self.lowpass_fraction, "seed": self.seed}

    def members(self, shape, device=None):
        """The ``K`` masks ``w_k`` (half spectra of ``shape``), in drawing order."""
        rng = np.random.RandomState(self.seed)
        ball = LowpassBall(tuple(shape))
        for _ in range(self.num_versions):
            yield bernoulli_fourier_mask(rng, shape, self.keep_prob, self.block_scale, self.flip_prob, self.lowpass_fraction, device, ball)

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args, **kwargs):
        if inputs.shape[0] != 1:
            raise ValueError("FourierPoolInferer denoises one tomogram at a time (batch size 1)")
        x = torch.as_tensor(inputs).float()
        shape = tuple(x.shape[-3:])
        spec = torch.fft.rfftn(x[0], dim=FFT_DIMS)  # (C, Z, Y, X//2+1)
        moments = VersionMoments()
        for w in self.members(shape, x.device):
            member = torch.fft.irfftn(spec * w, s=shape, dim=FFT_DIMS)[None]
            moments.add(self.window_inferer(member, network, *args, **kwargs))
            del member, w
        expected = expected_bernoulli_mask(shape, self.keep_prob, self.flip_prob, self.lowpass_fraction).to(x.device, torch.float32)
        mean = moments.mean().to(x.device)
        out = torch.fft.irfftn(torch.fft.rfftn(mean[0], dim=FFT_DIMS) / expected, s=shape, dim=FFT_DIMS)[None]
        std = moments.std()
        return out if std is None else {"mean": out, "std": std}
