"""Losses for the self-supervised training modes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn.modules.loss import _Loss

__all__ = ["MaskedMSELoss", "NoiseWeightedMSELoss"]


class MaskedMSELoss(_Loss):
    """Mean squared error over the voxels the network did not see (Self2Self / blind-spot loss).

    ``forward(pred, label)``:

    * ``pred``: ``(B, C, *spatial)`` network output.
    * ``label``: ``(B, 2C, *spatial)`` = ``concatenate([target, loss_mask], dim=1)``, as produced
      by :class:`cet_monai.transforms.RandBernoulliMaskd`; ``loss_mask`` is 1 on hidden voxels
      and 0 on visible ones (any values in [0, 1] act as weights).

    ``reduction="mean"`` (default): ``sum(loss_mask * (pred - target)**2) / sum(loss_mask)``
    over the whole batch, i.e. normalised by the number of hidden voxels (times channels); when
    no voxel is hidden the loss is 0 (still attached to the graph). ``"sum"``: the numerator
    only. ``"none"``: the element-wise ``loss_mask * (pred - target)**2``, ``(B, C, *spatial)``.
    Visible voxels never contribute, whatever the prediction there.
    """

    def __init__(self, reduction: str = "mean") -> None:
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
        super().__init__(reduction=reduction)

    def forward(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if pred.ndim < 2 or label.ndim != pred.ndim:
            raise ValueError(f"pred and label need the same rank >= 2, got {tuple(pred.shape)} and {tuple(label.shape)}.")
        c = pred.shape[1]
        if label.shape[1] != 2 * c or label.shape[2:] != pred.shape[2:] or label.shape[0] != pred.shape[0]:
            raise ValueError(
                f"label must be (B, 2C, ...) = [target, loss mask] for pred (B, C, ...); "
                f"got pred {tuple(pred.shape)}, label {tuple(label.shape)}."
            )
        target = label[:, :c].to(pred.dtype)
        mask = label[:, c:].to(pred.dtype)
        err = mask * (pred - target) ** 2
        if self.reduction == "none":
            return err
        total = err.sum()
        if self.reduction == "sum":
            return total
        # When nothing is hidden the numerator is exactly 0, so dividing by a tiny positive
        # count gives 0 without a device-to-host sync.
        count = mask.sum().clamp_min(torch.finfo(total.dtype).tiny)
        return total / count


class NoiseWeightedMSELoss(_Loss):
    """Squared error summed over Fourier coefficients, each weighted by the noise power there to a power.

    ``forward(pred, target)``: ``(B, C, Z, Y, X)`` tensors of one shape. The error ``pred -
    target`` is Fourier transformed over the last three axes (orthonormal, so with every weight 1
    this is exactly the mean squared error, by Parseval) and coefficient ``k`` is weighted by

        w(k) = max(P(k), floor * mean(P)) ** exponent,   normalised to mean 1 over the grid,

    where ``P`` is the noise power spectrum (:class:`~cet_monai.noise_spectrum.NoiseSpectrum`,
    interpolated to the error's grid; for several spectra the mean of each divided by its own
    mean, so each tomogram's shape counts alike whatever its noise level). ``exponent > 0``
    weights the frequencies where the noise is strong, which the network must learn to suppress,
    above those where the signal lives; ``exponent = 0`` is the plain MSE. ``floor`` keeps the
    weights finite where ``P`` is nearly 0 (inside the missing wedge, at zero frequency).

    For a network that could represent any function, the minimiser is the same as the plain
    MSE's (the conditional mean of the target given the input: the weighting is a fixed, positive
    quadratic form of the error). What changes within a training budget is which errors the
    gradient fixes first: measured in ``docs/denoising.md`` (twelfth pass).

    Args:
        spectrum: one :class:`~cet_monai.noise_spectrum.NoiseSpectrum` or a sequence of them.
        exponent: the power of ``P`` in the weights (0: plain MSE).
        floor: the weights' floor, as a fraction of ``P``'s mean over the grid (> 0).

    The weights are computed once per spatial shape and device (float32, cached). ``forward``
    returns a scalar: ``sum_k w(k) |FFT(pred - target)(k)|^2 / numel`` (the error's mean over the
    batch and channels, like ``MSELoss(reduction="mean")``).
    """

    # Written here: MONAI's spectral loss (monai.losses.JukeboxLoss) compares the FFT magnitudes of
    # prediction and target (phase-blind, for generative models); this weights the complex error.
    def __init__(self, spectrum, exponent: float = 0.5, floor: float = 0.05) -> None:
        super().__init__()
        spectra = list(spectrum) if isinstance(spectrum, Sequence) else [spectrum]
        if not spectra or any(s is None for s in spectra):
            raise ValueError("NoiseWeightedMSELoss needs the noise spectrum (a NoiseSpectrum or a sequence of them)")
        if not float(floor) > 0:
            raise ValueError(f"floor must be > 0, got {floor}")
        self.spectra = spectra
        self.exponent = float(exponent)
        self.floor = float(floor)
        self._weights: dict[tuple, torch.Tensor] = {}

    def weights(self, shape: Sequence[int], device=None) -> torch.Tensor:
        """``w(k)`` on the rfft grid of ``shape`` (Z, Y, X), each column already counted as often as
        it stands for in the full spectrum (so a plain sum over the half spectrum is a sum over the
        full one); float32 on ``device``."""
        from cet_monai.noise_spectrum import rfft_weights

        shape = tuple(int(s) for s in shape)
        key = (shape, str(device))
        if key not in self._weights:
            columns = rfft_weights(shape[-1])[None, None, :]

            def grid_mean(values: np.ndarray) -> float:  # mean over the full grid, from the half spectrum
                return float((values * columns).sum() / (columns.sum() * values.shape[0] * values.shape[1]))

            grids = [s.on_grid(shape, rfft=True).astype(np.float64) for s in self.spectra]
            power = np.mean([p / max(grid_mean(p), 1e-30) for p in grids], axis=0)  # each spectrum by its shape
            weight = np.maximum(power, self.floor * grid_mean(power)) ** self.exponent
            weight = weight / grid_mean(weight)
            self._weights[key] = torch.from_numpy((weight * columns).astype(np.float32)).to(device)
        return self._weights[key]

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape or pred.ndim < 4:
            raise ValueError(f"pred and target need one shape (B, C, Z, Y, X), got {tuple(pred.shape)} and {tuple(target.shape)}")
        error = pred.float() - target.float()
        if hasattr(error, "as_tensor"):  # a MetaTensor: the loss is a plain tensor
            error = error.as_tensor()
        coefficients = torch.fft.rfftn(error, dim=(-3, -2, -1), norm="ortho")
        power = coefficients.real.square() + coefficients.imag.square()
        return (power * self.weights(error.shape[-3:], error.device)).sum() / error.numel()
