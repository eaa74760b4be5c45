"""Input versions for :class:`~cet_monai.inferers.MCDropoutInferer`, one class per method.

* :class:`BernoulliSampler` (real space, Self2Self): ``K`` copies ``b_k * x`` with Bernoulli
  masks; estimate ``z = 1/(K*T) sum f_t(b_k * x)``.
* :class:`RecorruptedSampler` (recorrupted pairs): ``K`` copies ``x + a z_k`` with noise ``z_k``
  of the tomogram's noise spectrum, drawn per window on the window plus a margin; estimate = the
  mean of the ``K*T`` predictions.
* :class:`FourierSampler` (Fourier space): ``K`` Fourier versions of each window, made in the
  window's own spectrum (memory stays bounded by the window batch).

  - ``masks="bernoulli"``: Bernoulli-block masks with a kept low-frequency ball and sign flips;
    estimate = the mean of the ``K*T`` predictions, its spectrum divided by the masks' expected
    weight ``E[w](k)`` (so it keeps the input's intensity scale).
  - ``masks="split"``: the input half of a complementary split. With ``restrict=True``
    (default) each prediction is used only on the frequencies its input did not see, and each
    frequency is averaged over the versions that did not see it
    (:func:`~cet_monai.transforms.combine_split_predictions`); the result is divided by the
    target scale of the split, so it is on the input's intensity scale.

The mask helpers are the transforms' own (:func:`~cet_monai.transforms.bernoulli_versions`,
:func:`~cet_monai.transforms.fourier_versions`), so training and inference draw the same kind of
masks with the same parameters.
"""

from __future__ import annotations

import numpy as np
import torch

from cet_monai.transforms import bernoulli_versions, combine_split_predictions, fourier_versions

from .mc_inferer import WindowSampler

__all__ = ["BernoulliSampler", "FourierSampler", "RecorruptedSampler"]


class BernoulliSampler(WindowSampler):
    """Real-space Bernoulli-masked copies ``b_n * x`` of each window (keep probability ``keep_prob``).

    Self2Self's estimate ``z = 1/N sum_n f_theta_n(b_n * x)``: every sample ``n`` goes through its
    own thinned network ``theta_n`` (``one_network_per_version``), the same ``theta_n`` in every
    window; with ``K`` versions and ``T`` passes the inferer draws ``N = K * T`` samples.
    """

    one_network_per_version = True

    def __init__(self, num_versions: int = 4, keep_prob: float = 0.5, block_scale: int = 8, block_mask_prob: float = 0.0):
        self.config = {"num_versions": int(num_versions), "keep_prob": keep_prob, "block_scale": block_scale, "block_mask_prob": block_mask_prob}
        self.num_versions = int(num_versions)
        self.keep_prob = keep_prob
        self.block_scale = block_scale
        self.block_mask_prob = block_mask_prob

    def versions(self, windows, generator, count=None):
        n = self.num_versions if count is None else int(count)
        v = bernoulli_versions(windows, n, self.keep_prob, self.block_scale, self.block_mask_prob, generator)
        return v.inputs, None


class FourierSampler(WindowSampler):
    """``K`` Fourier versions of each window; see the module docstring.

    Args:
        num_versions: K.
        masks: ``"split"`` (complementary split, input half) or ``"bernoulli"`` (Bernoulli-block masks with a kept low-frequency ball and sign flips).
        restrict: split only: combine each prediction on the frequencies its input did not see.
        context: voxels of the tomogram around each window that the masks are drawn on (then
            cropped: :attr:`WindowSampler.context`); the training margin, so inference sees the
            block size and the edges training saw.
        mask_options: keyword arguments of :func:`~cet_monai.transforms.fourier_versions`
            (``keep_prob``, ``tilt_range_deg``, ``scaling``, ...), as used in training.
    """

    def __init__(self, num_versions: int = 4, masks: str = "split", restrict: bool = True, context: int = 0, **mask_options):
        if masks == "seed":
            raise ValueError("FourierSampler masks 'seed' was renamed 'bernoulli' (Bernoulli-block masks)")
        if masks not in ("split", "bernoulli"):
            raise ValueError(f"masks must be 'split' or 'bernoulli', got {masks!r}")
        self.context = int(context)
        self.config = {"num_versions": int(num_versions), "masks": masks, "restrict": restrict, "context": self.context, **mask_options}
        self.num_versions = int(num_versions)
        self.masks = masks
        self.restrict = restrict
        self.mask_options = mask_options
        self._expected_weight: dict = {}

    def versions(self, windows, generator, count=None):
        v = fourier_versions(windows, self.num_versions, mode=self.masks, generator=generator, **self.mask_options)
        return v.inputs, v

    def combine(self, predictions: torch.Tensor, aux) -> torch.Tensor:
        if self.masks == "bernoulli":
            return self._unattenuated(predictions.mean(dim=(0, 1)))
        mean_over_passes = predictions.mean(dim=0)  # (K, B, C, Z, Y, X)
        if self.restrict:
            return combine_split_predictions(
                mean_over_passes, aux.input_masks, aux.target_scale, keep_dc=self.mask_options.get("keep_dc", True),
                shared_mask=aux.shared_mask,
            )
        return mean_over_passes.mean(dim=0) / aux.target_scale

    def _unattenuated(self, mean: torch.Tensor) -> torch.Tensor:
        """Divide the mean prediction's spectrum by the masks' expected weight ``E[w](k)``.

        A network trained to predict a Bernoulli-masked target learns ``E[target | input]``,
        whose spectrum is ``E[w](k)`` (0.3-0.8 by frequency for the default masks, the sign flips
        included) times the estimate of the tomogram's: without this the output is a
        frequency-dependent attenuation of the input's intensity scale.
        """
        from cet_monai.transforms.fourier_masks import FFT_DIMS, expected_bernoulli_mask

        shape = tuple(mean.shape[-3:])
        key = (shape, str(mean.device))
        if key not in self._expected_weight:  # once per window shape, not per batch of windows
            options = {k: self.mask_options[k] for k in ("keep_prob", "flip_prob", "lowpass_fraction") if k in self.mask_options}
            self._expected_weight[key] = expected_bernoulli_mask(shape, **options).to(device=mean.device, dtype=torch.float32)
        spec = torch.fft.rfftn(mean.float(), dim=FFT_DIMS) / self._expected_weight[key]
        return torch.fft.irfftn(spec, s=shape, dim=FFT_DIMS).to(mean.dtype)


class RecorruptedSampler(WindowSampler):
    """``K`` recorrupted copies ``x + a z_k`` of each window (:mod:`cet_monai.transforms.recorrupt`).

    Args:
        spectrum: the :class:`~cet_monai.noise_spectrum.NoiseSpectrum` the network was trained
            with (or its ``state_dict()``, as a checkpoint stores it).
        num_versions: K, noise draws per window.
        alpha: ``a`` of training.
        margin: voxels added on each side of the window where the noise is drawn (then cropped),
            so the FFT's periodic wrap-around does not correlate the noise across window edges.
        local_level: scale each window's noise to the window's own noise level, as in training
            (:func:`~cet_monai.noise_spectrum.local_noise_level`, measured on the window).
        equalize_level: with ``local_level``, as in training
            (:class:`~cet_monai.transforms.RandRecorruptedPair`): each window divided by the square
            root of its level (the noise drawn at the spectrum's strength) and the network's
            predictions multiplied back (:meth:`restore`).
        noise_bank: ``0``: each window's noise drawn on the window's grid (with the margin);
            ``B > 0``: cut at random places from ``B`` volumes drawn once on the spectrum's own
            grid (:class:`~cet_monai.transforms.NoiseBank`, as training cuts them; drawn from
            the inferer's generator at the first window).
    """

    def __init__(self, spectrum, num_versions: int = 8, alpha: float = 1.0, margin: int = 8, local_level: bool = False,
                 noise_bank: int = 0, equalize_level: bool = False):
        from cet_monai.noise_spectrum import NoiseSpectrum

        if int(num_versions) < 1:
            raise ValueError(f"num_versions must be >= 1, got {num_versions}")
        if equalize_level and not local_level:
            raise ValueError("equalize_level divides each window by its local noise level: it needs local_level=True")
        self.spectrum = spectrum if isinstance(spectrum, NoiseSpectrum) else NoiseSpectrum.from_state_dict(spectrum)
        self.num_versions = int(num_versions)
        self.alpha = float(alpha)
        self.margin = int(margin)
        self.local_level = bool(local_level)
        self.equalize_level = bool(equalize_level)
        if int(noise_bank) < 0:
            raise ValueError(f"noise_bank must be >= 0, got {noise_bank}")
        self.noise_bank = int(noise_bank)
        self._bank = None
        self.config = {"spectrum": self.spectrum.state_dict(), "num_versions": self.num_versions, "alpha": self.alpha, "margin": self.margin,
                       "local_level": self.local_level, **({"noise_bank": self.noise_bank} if self.noise_bank else {}),
                       **({"equalize_level": True} if self.equalize_level else {})}

    def _noise(self, shape: tuple, generator, device) -> torch.Tensor:
        """Noise of ``shape`` (``(..., Z, Y, X)``) with the spectrum, on ``device``."""
        from cet_monai.transforms import NoiseBank, colored_noise

        spatial = tuple(int(n) for n in shape[-3:])
        if self.noise_bank:
            if self._bank is None:
                self._bank = NoiseBank.draw(self.spectrum, self.noise_bank,
                                            lambda grid: torch.randn(grid, generator=generator, device=generator.device), device)
            if self._bank.holds(spatial):
                n = int(np.prod(shape[:-3]))
                index = torch.randint(self._bank.size, (n,), generator=generator, device=generator.device).cpu().numpy()
                start = torch.stack([torch.randint(g, (n,), generator=generator, device=generator.device) for g in self._bank.grid], -1)
                return self._bank.cut(spatial, index, start.cpu().numpy()).to(device).reshape(shape)
        white = torch.randn(shape, generator=generator, device=generator.device).to(device)
        return colored_noise(white, self.spectrum)

    def versions(self, windows, generator, count=None):
        k, m = self.num_versions, self.margin
        shape = (k,) + tuple(windows.shape[:2]) + tuple(s + 2 * m for s in windows.shape[2:])
        z = self._noise(shape, generator, windows.device)
        if m:
            z = z[..., m:-m, m:-m, m:-m]
        if self.local_level:
            from cet_monai.noise_spectrum import local_noise_level

            level = local_noise_level(windows, self.spectrum).mean(dim=1)  # (B,): channels averaged
            scale = level.sqrt().to(z.dtype)[:, None, None, None, None]
            if self.equalize_level:
                return (windows / scale).unsqueeze(0) + self.alpha * z, scale
            z = z * scale[None]
        return windows.unsqueeze(0) + self.alpha * z, None

    def restore(self, predictions, aux):
        """With ``equalize_level``: ``predictions`` (T, K, B, C, Z, Y, X) of the divided windows
        times each window's ``sqrt(level)`` (``aux``), back on the tomogram's scale."""
        return predictions if aux is None else predictions * aux.to(predictions.dtype)
