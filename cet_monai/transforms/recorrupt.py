"""Recorrupted pairs: Noise2Noise from one tomogram, given its noise power spectrum.

A tomogram ``y = x + n`` has noise ``n`` with power spectrum ``P(k)``
(:func:`cet_monai.noise_spectrum.estimate_noise_spectrum`). Draw ``z`` with the same spectrum
(white noise, FFT, times ``sqrt(P)``, inverse FFT) and form the pair

    input  = y + a z,        target = y - z / a.

For Gaussian noise with the right spectrum the input's noise ``n + a z`` and the target's
``n - z / a`` are uncorrelated at every frequency (``E[(n + a z)(n - z/a)] = P - P = 0``): the
same signal with independent noise, so the plain MSE loss trains the network towards
``E[x | y + a z]`` (Recorrupted-to-Recorrupted, Pang et al. CVPR 2021; Noisier2Noise, Moran et
al. CVPR 2020). Inference averages ``f(y + a z_j)`` over a few draws ``z_j``
(:class:`cet_monai.inferers.RecorruptedSampler`).

The noise is drawn per patch (or per inference window) on the patch WITH its margin and the
margin is cropped away, so the periodic wrap-around of the FFT never reaches the used voxels and
memory stays bounded by the patch, whatever the tomogram's size.

With ``local_level`` the drawn noise is scaled, patch by patch, to the noise the patch itself
holds where noise dominates (:func:`cet_monai.noise_spectrum.local_noise_level`): one spectrum
shape for the tomogram, its strength measured locally (a lamella's thickness, and so its noise,
varies across it; a global spectrum is too weak in the noisier parts, where input and target
noise are then correlated and the network learns to keep some of it).

With ``equalize_level`` (and ``local_level``) the patch is divided by the square root of that
level instead, and the noise drawn at the spectrum's own strength: the pair is the one above
divided by ``sqrt(level)``, so the network sees noise of one strength in every patch, wherever it
lies on the lamella, and the inference multiplies each window's estimate back
(:class:`cet_monai.inferers.RecorruptedSampler` with ``equalize_level``).

With ``target_lowpass`` the target's Fourier coefficients above that frequency (cycles/voxel) are
removed, on the patch with its margin, before the crop (:func:`radial_lowpass`): where one noisy
tomogram holds no measurable signal the target is noise only, which adds to the gradient's noise
and teaches the network nothing it could not learn from a zero target; the network then learns to
output nothing there. Training only: the input and the inference are unchanged.
"""

from __future__ import annotations

import functools
import zlib
from copy import deepcopy
from typing import Callable, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform, Transform
from monai.transforms.traits import MultiSampleTrait
from monai.utils import TransformBackends

from cet_monai.noise_spectrum import NOISE_SPECTRUM_KEY, NoiseSpectrum, local_noise_level

from ._utils import get_meta_value, pair_items, spatial_tuple, to_tensor, wrap_like
from .patches import TOMOGRAM_INDEX_KEY

__all__ = ["colored_noise", "radial_lowpass", "NoiseBank", "RandRecorruptedPair", "RandRecorruptedPaird", "SelectNoiseSpectrumd"]


def colored_noise(white: torch.Tensor, spectrum: NoiseSpectrum) -> torch.Tensor:
    """Noise with power spectrum ``spectrum`` from white noise ``white`` (``(..., Z, Y, X)``, unit
    variance): ``irfftn(rfftn(white) * sqrt(P))`` on the last three axes, on ``white``'s device."""
    shape = tuple(white.shape[-3:])
    amplitude = spectrum.amplitude(shape, white.device)
    return torch.fft.irfftn(torch.fft.rfftn(white.float(), dim=(-3, -2, -1)) * amplitude, s=shape, dim=(-3, -2, -1))


class NoiseBank:
    """A few noise volumes drawn once on a spectrum's own grid; any patch's noise is cut from one.

    Drawing each patch's noise on the patch's own small grid (the spectrum interpolated to it)
    makes it periodic over the patch and loses what the spectrum has at finer frequency steps
    than the patch's (the missing wedge's sharp edges, the ramp's cusp at zero): its covariance
    is wrong at lags beyond half the patch. Cut from a volume drawn on the spectrum's own grid
    (the tomogram's, up to :data:`~cet_monai.noise_spectrum.FINE_SIZE` voxels per axis), the noise
    has the spectrum's full covariance up to lags of the grid minus the patch, whatever the
    tomogram's size: memory is ``size`` volumes of that grid (at most 8 MiB each, float32),
    never the tomogram's.

    Args:
        volumes: ``(B, Z, Y, X)`` float32 tensor, the bank's noise (see :meth:`draw`).

    :meth:`cut` takes ``(n, z, y, x)`` crops at given places, wrapping around the (periodic)
    grid; a crop larger than the grid along an axis is refused (the caller draws on its own
    grid instead, see :meth:`holds`).
    """

    def __init__(self, volumes: torch.Tensor) -> None:
        if volumes.ndim != 4:
            raise ValueError(f"NoiseBank expects (B, Z, Y, X) volumes, got shape {tuple(volumes.shape)}")
        self.volumes = volumes

    @classmethod
    def draw(cls, spectrum: NoiseSpectrum, size: int, white: Callable[[tuple], torch.Tensor], device=None) -> "NoiseBank":
        """``size`` volumes on the spectrum's grid (``spectrum.grid.shape``), each ``white(grid)``
        (unit-variance white noise, float32) coloured with ``spectrum`` (:func:`colored_noise`) one
        at a time into the bank, so no more than one volume's white noise is held besides it."""
        grid = tuple(int(n) for n in spectrum.grid.shape)
        volumes = torch.empty((int(size), *grid), dtype=torch.float32, device=device)
        for i in range(int(size)):
            volumes[i] = colored_noise(white(grid).to(device), spectrum)
        return cls(volumes)

    @property
    def size(self) -> int:
        return int(self.volumes.shape[0])

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.volumes.shape[1:])

    def holds(self, shape: Sequence[int]) -> bool:
        """Whether a crop of ``shape`` (Z, Y, X) fits in one period of the grid."""
        return all(int(s) <= n for s, n in zip(shape, self.grid))

    def cut(self, shape: Sequence[int], index: Sequence[int], start: np.ndarray) -> torch.Tensor:
        """``(n, *shape)`` noise: crop ``i`` from volume ``index[i]`` starting at ``start[i]`` (``(n, 3)``
        voxels, taken modulo the grid), on the bank's device."""
        shape = tuple(int(s) for s in shape)
        if not self.holds(shape):
            raise ValueError(f"NoiseBank: a crop of {shape} does not fit the bank's grid {self.grid}")
        out = []
        for i, st in zip(index, np.asarray(start).reshape(-1, 3)):
            idx = [torch.from_numpy((int(s0) + np.arange(s)) % n).to(self.volumes.device) for s0, s, n in zip(st, shape, self.grid)]
            v = self.volumes[int(i)].index_select(0, idx[0]).index_select(1, idx[1]).index_select(2, idx[2])
            out.append(v)
        return torch.stack(out)


@functools.lru_cache(maxsize=8)
def _lowpass_mask(shape: tuple, cutoff: float, rolloff: float) -> torch.Tensor:
    """The raised-cosine mask of :func:`radial_lowpass` on the rfft grid of ``shape`` (CPU, cached:
    every training pair of one patch size uses the same one)."""
    fz, fy, fx = torch.fft.fftfreq(shape[0]), torch.fft.fftfreq(shape[1]), torch.fft.rfftfreq(shape[2])
    k = torch.sqrt(fz[:, None, None] ** 2 + fy[None, :, None] ** 2 + fx[None, None, :] ** 2)
    ramp = torch.clamp((cutoff + rolloff - k) / max(rolloff, 1e-12), 0.0, 1.0)
    return 0.5 - 0.5 * torch.cos(torch.pi * ramp)


def radial_lowpass(x: torch.Tensor, cutoff: float, rolloff: float = 0.05) -> torch.Tensor:
    """``x`` low-pass filtered over its last three axes: Fourier coefficients with ``|k| <= cutoff``
    (cycles/voxel, each axis's frequencies normalised by its own length) kept, those above
    ``cutoff + rolloff`` removed, a raised cosine between (a hard edge would ring over the whole
    patch). Periodic, as any FFT filter: apply it on a patch with a margin and crop the margin.

    ``x``: ``(..., Z, Y, X)`` float tensor, any device; returns the same shape and dtype.
    """
    # written here: MONAI's k-space utilities (monai.apps.reconstruction) are 2D MRI masks, and
    # its spatial filters (GaussianSmooth, ...) are real-space kernels with no sharp cut-off
    shape = tuple(x.shape[-3:])
    mask = _lowpass_mask(shape, float(cutoff), float(rolloff)).to(x.device)
    spectrum = torch.fft.rfftn(x.float(), dim=(-3, -2, -1)) * mask
    return torch.fft.irfftn(spectrum, s=shape, dim=(-3, -2, -1)).to(x.dtype)


def _crop(x: torch.Tensor, margin: Sequence[int]) -> torch.Tensor:
    if not any(margin):
        return x
    return x[(..., *[slice(m, x.shape[x.ndim - 3 + i] - m) for i, m in enumerate(margin)])]


class RandRecorruptedPair(RandomizableTransform, MultiSampleTrait):
    """``num_samples`` recorrupted (input, target) pairs of one patch (see the module docstring).

    Args:
        spectrum: the tomogram's :class:`~cet_monai.noise_spectrum.NoiseSpectrum`, in the units
            of the patches (normally the normalised tomogram); may also be passed per call.
        alpha: ``a``: input ``y + a z``, target ``y - z / a``.
        num_samples: pairs per call (M), each with its own noise draw.
        margin: voxels cropped from each side of every spatial axis after the noise is added
            (int or 3 ints); ``None``: read ``patch_margin`` from the image's metadata, else 0.
        prob: probability that the transform applies; when it does not, the pair is ``(x, x)``
            cropped (no information, as MONAI's ``prob`` means).
        dtype: output dtype.
        local_level: scale the noise to the patch's own noise level (module docstring; the
            level is measured on the patch with its margin, averaged over channels).
        equalize_level: with ``local_level``: divide the patch by the square root of its level
            instead of scaling the noise (module docstring); the pair's noise then has the
            spectrum's strength in every patch.
        noise_bank: ``0`` (default): each pair's noise drawn on the patch's own grid (with its
            margin); ``B > 0``: cut at a random place from one of ``B`` volumes drawn once per
            spectrum on the spectrum's own grid (:class:`NoiseBank`: the spectrum's fine
            structure and long-range covariance kept, memory bounded by ``B`` grids); a patch
            larger than that grid is drawn on its own grid.
        target_lowpass: ``None`` (default) or a frequency in cycles/voxel: the target's
            coefficients above it are removed (:func:`radial_lowpass`, raised-cosine roll-off
            ``target_rolloff`` wide), on the patch with its margin before the crop (module docstring).
        target_rolloff: width of that roll-off (cycles/voxel).

    Input: ``img`` ``(C, Z', Y', X')`` (numpy or torch, any device). Output: a list of M
    ``(input, target)`` tuples of ``(C, Z'-2m, Y'-2m, X'-2m)`` torch tensors on the input's
    device (MetaTensors with the input's metadata, affine moved by the margin, when metadata is
    tracked). The white noise (or the bank's volumes and the places cut from them) is drawn
    from ``self.R``, so ``set_random_state`` makes the pairs reproducible; the FFTs run on the
    input's device.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        spectrum: NoiseSpectrum | None = None,
        alpha: float = 1.0,
        num_samples: int = 2,
        margin: int | Sequence[int] | None = None,
        prob: float = 1.0,
        dtype: torch.dtype = torch.float32,
        local_level: bool = False,
        noise_bank: int = 0,
        equalize_level: bool = False,
        target_lowpass: float | None = None,
        target_rolloff: float = 0.05,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        if target_lowpass is not None and not float(target_lowpass) > 0:
            raise ValueError(f"target_lowpass must be a frequency > 0 (cycles/voxel) or None, got {target_lowpass}")
        if not float(target_rolloff) >= 0:
            raise ValueError(f"target_rolloff must be >= 0, got {target_rolloff}")
        if equalize_level and not local_level:
            raise ValueError("equalize_level divides each patch by its local noise level: it needs local_level=True")
        if int(noise_bank) < 0:
            raise ValueError(f"noise_bank must be >= 0, got {noise_bank}")
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.spectrum = spectrum
        self.alpha = float(alpha)
        self.num_samples = int(num_samples)
        self.margin = None if margin is None else spatial_tuple(margin, "margin")
        self.dtype = dtype
        self.local_level = bool(local_level)
        self.equalize_level = bool(equalize_level)
        self.noise_bank = int(noise_bank)
        self.target_lowpass = None if target_lowpass is None else float(target_lowpass)
        self.target_rolloff = float(target_rolloff)
        self._white: np.ndarray | None = None
        self._cuts: np.ndarray | None = None
        self._banks: dict[int, tuple[NoiseSpectrum, NoiseBank]] = {}
        self._bank_seed: int | None = None

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        """Seed ``self.R`` (MONAI's ``Randomizable``); the noise banks are drawn again from the new stream."""
        super().set_random_state(seed, state)
        self._banks = {}
        self._bank_seed = None
        return self

    def state_dict(self) -> dict:
        """What a resumed run needs besides ``self.R``: the seed the noise banks are drawn with (-1: not
        drawn yet), so a run resumed from a checkpoint cuts its pairs from the very same banks."""
        return {"bank_seed": torch.tensor(-1 if self._bank_seed is None else self._bank_seed, dtype=torch.int64)}

    def load_state_dict(self, state: Mapping) -> None:
        seed = int(state["bank_seed"]) if "bank_seed" in state else -1  # checkpoints from before banks had seeds: none
        seed = None if seed < 0 else seed
        if seed != self._bank_seed:
            self._banks = {}
        self._bank_seed = seed

    def randomize(self, data=None) -> None:
        """Decide whether to apply (``prob``) and, given an image (or a spatial shape), draw the
        ``(M, Z', Y', X')`` white noise of its pairs from ``self.R`` (with a bank: the volume and
        place each pair's noise is cut from, as ``(M, 4)`` fractions of the bank and its grid)."""
        super().randomize(None)
        self._white = self._cuts = None
        if data is None or not self._do_transform:
            return
        if self.noise_bank:
            self._cuts = self.R.random_sample((self.num_samples, 4))
            return
        shape = tuple(data.shape[-3:]) if hasattr(data, "shape") else tuple(int(s) for s in data)
        self._white = self.R.standard_normal((self.num_samples, *shape)).astype(np.float32)

    def bank(self, spectrum: NoiseSpectrum, device=None) -> NoiseBank:
        """The :class:`NoiseBank` of ``spectrum``, drawn the first time it is asked for with its own
        generator: seeded by one number drawn from ``self.R`` the first time any bank is needed (kept
        in :meth:`state_dict`) and the spectrum's values, so each spectrum's bank is the same
        whatever order the spectra come in, and a resumed run draws the same banks again."""
        entry = self._banks.get(id(spectrum))
        if entry is None or entry[0] is not spectrum:
            if self._bank_seed is None:
                self._bank_seed = int(self.R.randint(0, 2**31 - 1))
            rng = np.random.RandomState((self._bank_seed + zlib.crc32(np.ascontiguousarray(spectrum.grid).tobytes())) % 2**32)
            bank = NoiseBank.draw(spectrum, self.noise_bank, lambda grid: torch.from_numpy(rng.standard_normal(grid).astype(np.float32)), device)
            entry = self._banks[id(spectrum)] = (spectrum, bank)
        return entry[1]

    def _noise(self, shape: tuple[int, int, int], spectrum: NoiseSpectrum, device) -> torch.Tensor:
        """``(M, *shape)`` noise with ``spectrum``: cut from the bank, or drawn on the patch's grid."""
        if self.noise_bank:
            bank = self.bank(spectrum, device)
            if bank.holds(shape):
                index = np.minimum((self._cuts[:, 0] * bank.size).astype(int), bank.size - 1)
                start = (self._cuts[:, 1:] * np.asarray(bank.grid)).astype(int)
                return bank.cut(shape, index, start)
            if self._white is None:  # the patch is larger than the bank's grid: its own draw
                self._white = self.R.standard_normal((self.num_samples, *shape)).astype(np.float32)
        return colored_noise(torch.from_numpy(self._white).to(device), spectrum)

    def _margin(self, img, margin) -> tuple[int, int, int]:
        if margin is None:
            margin = self.margin
        if margin is None:
            margin = get_meta_value(img, "patch_margin")
        if margin is None:
            return (0, 0, 0)
        if isinstance(margin, torch.Tensor):
            margin = margin.detach().cpu().numpy()
        arr = np.asarray(margin).reshape(-1)
        return tuple(int(v) for v in (arr if arr.size == 3 else np.repeat(arr[:1], 3)))

    def __call__(self, img, margin=None, spectrum: NoiseSpectrum | None = None, randomize: bool = True) -> list[tuple]:
        x, _ = to_tensor(img)
        if x.ndim != 4:
            raise ValueError(f"RandRecorruptedPair expects (C, Z, Y, X), got shape {tuple(x.shape)}")
        margin = self._margin(img, margin)
        if any(2 * m >= s for m, s in zip(margin, x.shape[1:])):
            raise ValueError(f"margin {margin} leaves nothing of spatial shape {tuple(x.shape[1:])}")
        spectrum = spectrum or self.spectrum
        if randomize:
            self.randomize(x)
        x = x.float()
        if not self._do_transform:
            c = wrap_like(_crop(x, margin).to(self.dtype), img, crop_start=margin)
            return [(c, c.clone()) for _ in range(self.num_samples)]
        if spectrum is None:
            raise ValueError("RandRecorruptedPair needs the noise spectrum (constructor or call argument)")
        z = self._noise(tuple(x.shape[1:]), spectrum, x.device)  # (M, Z', Y', X')
        if self.local_level:
            level = local_noise_level(x, spectrum).mean()
            if self.equalize_level:
                x = x / level.sqrt()
            else:
                z = z * level.sqrt()
        pairs = []
        for j in range(self.num_samples):
            zj = z[j][None]  # the same noise in every channel
            inp = _crop(x + self.alpha * zj, margin).to(self.dtype)
            tgt = x - zj / self.alpha
            if self.target_lowpass is not None:
                tgt = radial_lowpass(tgt, self.target_lowpass, self.target_rolloff)
            tgt = _crop(tgt, margin).to(self.dtype)
            pairs.append((wrap_like(inp, img, crop_start=margin), wrap_like(tgt, img, crop_start=margin)))
        return pairs


class RandRecorruptedPaird(RandomizableTransform, MapTransform, MultiSampleTrait):
    """Dictionary version of :class:`RandRecorruptedPair` (MONAI ``num_samples`` convention).

    Consumes ``d[key]`` (one key), a patch ``(C, Z', Y', X')`` with its margin (read from
    ``d["patch_margin"]`` or the image's metadata, as :class:`RandTomogramPatchd` writes it,
    unless ``margin`` is given). The spectrum is the constructor's, else ``d[spectrum_key]``.
    Returns a list of M dicts, copies of ``d`` with ``d[key]`` = input and ``d[label_key]`` =
    target, both cropped to ``(C, Z'-2m, Y'-2m, X'-2m)``, so a standard ``SupervisedTrainer``
    trains on them with ``MSELoss``.
    """

    backend = RandRecorruptedPair.backend

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str = "label",
        spectrum: NoiseSpectrum | None = None,
        spectrum_key: str = NOISE_SPECTRUM_KEY,
        alpha: float = 1.0,
        num_samples: int = 2,
        margin: int | Sequence[int] | None = None,
        prob: float = 1.0,
        dtype: torch.dtype = torch.float32,
        local_level: bool = False,
        noise_bank: int = 0,
        equalize_level: bool = False,
        target_lowpass: float | None = None,
        target_rolloff: float = 0.05,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if len(self.keys) != 1:
            raise ValueError(f"RandRecorruptedPaird takes exactly one key, got {self.keys}")
        self.label_key = label_key
        self.spectrum_key = spectrum_key
        self.pairer = RandRecorruptedPair(spectrum=spectrum, alpha=alpha, num_samples=num_samples, margin=margin, prob=1.0, dtype=dtype,
                                          local_level=local_level, noise_bank=noise_bank, equalize_level=equalize_level,
                                          target_lowpass=target_lowpass, target_rolloff=target_rolloff)

    @property
    def num_samples(self) -> int:
        return self.pairer.num_samples

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.pairer.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, object]) -> list[dict]:  # type: ignore[override]
        d = dict(data)
        self.randomize(None)
        keys = list(self.key_iterator(d))
        if not keys:
            return [deepcopy(d) for _ in range(self.num_samples)]
        key = keys[0]
        margin = self.pairer.margin if self.pairer.margin is not None else d.get("patch_margin")
        spectrum = self.pairer.spectrum or d.get(self.spectrum_key)
        if self._do_transform:
            pairs = self.pairer(d[key], margin=margin, spectrum=spectrum)
        else:  # MONAI's prob: the identity pair
            self.pairer._do_transform = False
            pairs = self.pairer(d[key], margin=margin, spectrum=spectrum, randomize=False)
        return pair_items(d, key, self.label_key, pairs, drop=(self.spectrum_key,))


class SelectNoiseSpectrumd(Transform):
    """Give an item of one of several tomograms that tomogram's own noise spectrum.

    Sets ``d[spectrum_key] = spectra[d[index_key]]`` (the same object, not a copy: a spectrum
    holds up to 16 MiB and its cached amplitudes), for :class:`RandRecorruptedPaird` built
    without a spectrum of its own, which reads it there and drops it from the pairs. Placed
    after the patching (which copies everything an item holds into every patch).

    Args:
        spectra: one :class:`~cet_monai.noise_spectrum.NoiseSpectrum` per tomogram, in the order
            of the data source's tomograms.
        index_key: item key of the tomogram's index (as :class:`~cet_monai.engines.TomogramCollection` writes it).
        spectrum_key: where the spectrum goes.
    """

    def __init__(self, spectra: Sequence[NoiseSpectrum], index_key: str = TOMOGRAM_INDEX_KEY,
                 spectrum_key: str = NOISE_SPECTRUM_KEY) -> None:
        self.spectra = list(spectra)
        self.index_key = index_key
        self.spectrum_key = spectrum_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        if self.index_key not in d:
            raise KeyError(f"SelectNoiseSpectrumd: the item has no {self.index_key!r} (which tomogram it comes from)")
        d[self.spectrum_key] = self.spectra[int(d[self.index_key])]
        return d
