"""Whole-tomogram Fourier-split inference: the inference counterpart of a split sample pool.

A network trained on whole-tomogram complementary splits (``FourierSamplePool(kind="split")``:
input ``irfft(F * w_in)``, target ``irfft(F * w_target)`` with ``w_in`` and ``w_target`` on
disjoint, Hermitian-closed sets of the measured coefficients) sees, in every patch, the full
signal plus a far-reaching speckle from the mask. Splitting each *window* instead would give
it a different input (a patch with half of *its own* coefficients missing), so inference splits
the whole tomogram the same way as training did:

    for k in 1..K:  x_k = irfft(F * w_in_k);  p_k = sliding-window MC-dropout estimate of x_k
    z = irfft( sum_k P_k * (1 - m_k) / sum_k (1 - m_k) ) / c_t

Each coefficient is estimated only from predictions whose input did not contain it (with
``restrict=True``; a plain mean of the ``p_k`` otherwise), the estimate of Fourier-space
Bernoulli sampling, ``z = 1/(K*T) sum_k sum_t f_t(p_k)`` with split versions. Memory: the
tomogram, one version, one prediction and a complex accumulator, whatever K.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.inferers import Inferer

from cet_monai.transforms.fourier_masks import FFT_DIMS, measured_mask, shared_lowpass_mask, split_fourier_mask, split_scales, split_weights

from .mc_inferer import IdentitySampler, MCDropoutInferer
from .pool import VersionMoments

__all__ = ["FourierSplitInferer"]


class FourierSplitInferer(Inferer):
    """K whole-tomogram splits, each denoised by an :class:`MCDropoutInferer`, merged per frequency.

    Args:
        window_inferer: denoises one whole split version (its sampler should be the identity:
            the versions are made here).
        num_versions: K, the number of whole-tomogram splits.
        keep_prob, tilt_range_deg, tilt_axis, scaling, keep_dc, split_block_size, shared_lowpass: as in training
            (:class:`~cet_monai.transforms.FourierSamplePool` with ``kind="split"``).
        restrict: merge each prediction only on the coefficients its input did not see.
        seed: seeds the split masks.
    """

    def __init__(
        self,
        window_inferer: MCDropoutInferer,
        num_versions: int = 4,
        keep_prob: float = 0.5,
        tilt_range_deg: float | None = 60.0,
        tilt_axis: str | int = "Y",
        scaling: str = "energy",
        keep_dc: bool = True,
        split_block_size: int = 1,
        shared_lowpass: float = 0.0,
        restrict: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(window_inferer.sampler, IdentitySampler):
            raise ValueError("the window inferer of a FourierSplitInferer must use the IdentitySampler")
        self.window_inferer = window_inferer
        self.num_versions = int(num_versions)
        self.keep_prob = keep_prob
        self.tilt_range_deg = tilt_range_deg
        self.tilt_axis = tilt_axis
        self.scaling = scaling
        self.keep_dc = keep_dc
        self.split_block_size = split_block_size
        self.shared_lowpass = float(shared_lowpass)
        self.restrict = restrict
        self.seed = int(seed)
        self.config = {
            "num_versions": self.num_versions, "keep_prob": keep_prob, "tilt_range_deg": tilt_range_deg, "tilt_axis": tilt_axis,
            "scaling": scaling, "keep_dc": keep_dc, "split_block_size": split_block_size, "shared_lowpass": self.shared_lowpass, "restrict": restrict, "seed": self.seed,
        }

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args, **kwargs) -> torch.Tensor:
        """Denoise ``inputs`` (1, 1, Z, Y, X), the whole normalised tomogram (stitched on its device)."""
        if inputs.shape[0] != 1:
            raise ValueError("FourierSplitInferer denoises one tomogram at a time (batch size 1)")
        x = torch.as_tensor(inputs).float()
        shape = tuple(x.shape[-3:])
        spec = torch.fft.rfftn(x[0], dim=FFT_DIMS)  # (C, Z, Y, X//2+1)
        measured = measured_mask(shape, self.tilt_range_deg, self.tilt_axis, x.device)
        c_t = split_scales(self.keep_prob, self.scaling)[1]
        rng = np.random.RandomState(self.seed)
        shared = shared_lowpass_mask(shape, self.shared_lowpass, x.device)
        num = torch.zeros_like(spec)
        count = torch.zeros(spec.shape[-3:], device=x.device)
        plain = torch.zeros_like(spec)
        moments = VersionMoments()  # only for the spread over the K x T predictions
        for _ in range(self.num_versions):
            m = split_fourier_mask(rng, shape, self.keep_prob, self.split_block_size, x.device)
            w_in, _ = split_weights(m, measured, self.keep_prob, self.scaling, self.keep_dc, shared=shared)
            version = torch.fft.irfftn(spec * w_in, s=shape, dim=FFT_DIMS)[None]
            pred = self.window_inferer(version, network, *args, **kwargs)
            if isinstance(pred, dict):
                pred = moments.add(pred)
            p_spec = torch.fft.rfftn(pred[0].to(x.device).float(), dim=FFT_DIMS)
            plain += p_spec
            seen = m & measured if measured is not None else m.clone()
            if shared is not None:
                seen |= shared
            if self.keep_dc:
                seen[0, 0, 0] = True
            unseen = (~seen).float()
            num += p_spec * unseen
            count += unseen
            del version, pred, p_spec
        plain /= self.num_versions
        merged = torch.where(count > 0, num / count.clamp_min(1.0), plain) if self.restrict else plain
        scale = torch.full(merged.shape[-3:], 1.0 / c_t, device=x.device)
        if self.keep_dc:
            scale[0, 0, 0] = 1.0  # the mean went unscaled to both halves
        if shared is not None:  # seen by every version: the plain mean, unscaled
            merged = torch.where(shared, plain, merged)
            scale = torch.where(shared, torch.ones_like(scale), scale)
        out = torch.fft.irfftn(merged * scale, s=shape, dim=FFT_DIMS)[None]
        std = moments.std()
        return out if std is None else {"mean": out, "std": std}
