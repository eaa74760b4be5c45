"""Simulated cryo-electron tomograms with ground truth.

:func:`simulate_tomogram` images a :mod:`phantom <cet_monai.data.phantom>` the way a real
tomogram is made (default ``mode="tilt_series"``):

1. the phantom is generated on a grid padded in X by ``ceil(Z tan(max tilt)) + 8`` voxels
   each side, so that every ray reaching the reconstructed region crosses the whole specimen
   slab inside specimen;
2. it is projected (Joseph's projector) at every tilt about Y;
3. optionally each projection is multiplied by a CTF in 2D Fourier space (no correction);
4. independent Gaussian noise is added to every projection pixel, separately for the even
   and the odd half of the dose (each half: twice the full-dose noise variance);
5. each set is reconstructed by weighted back-projection (ramp filter along the detector X
   axis, plain Ram-Lak by default, voxel-driven linear interpolation) on the original,
   unpadded grid.

By linearity the clean projections and the two noise sets are reconstructed separately; the
noise is then scaled by one factor so that ``var(clean) / var(noisy - clean)`` is exactly
``snr`` over the volume, with ``noisy = (even + odd) / 2``. The noise therefore has a real
tomogram's structure (ramp-weighted, wedge-limited, correlated between neighbouring voxels).

``mode="fast"`` skips the tilt series: the clean volume is the phantom band-limited by the same
apodisation and the missing wedge in 3D Fourier space, the noise white noise shaped by
``sqrt(|k_xz|)`` (the ramp-weighted WBP noise spectrum), the wedge, the detector's frequency
disc and the interpolation's ``sinc``. Its neighbour correlations are close to the tilt
series' (see docs/simulation.md). Meant for unit tests.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import CetMonaiError, OutputExistsError
from . import tomography as tomo
from .phantom import Phantom, make_phantom

__all__ = [
    "SimulatedTomogram",
    "SimulationOptionError",
    "simulate_tomogram",
    "simulate_to_folder",
    "neighbour_correlation",
    "wedge_energy_ratio",
    "OUTPUT_FILES",
]

#: files written by :meth:`SimulatedTomogram.save`, by role
OUTPUT_FILES = {
    "noisy": "noisy.mrc",
    "clean": "clean.mrc",
    "phantom": "phantom.mrc",
    "labels": "labels.mrc",
    "even": "even.mrc",
    "odd": "odd.mrc",
    "preview": "orthoslices.png",
    "parameters": "simulation.json",
}


class SimulationOptionError(CetMonaiError, ValueError):
    """A simulation option that cannot be used (bad shape, SNR, tilt range, mode...)."""


@dataclass
class SimulatedTomogram:
    """A simulated tomogram and its ground truth, all ``(Z, Y, X)`` float32 except ``labels``.

    * ``noisy``: the tomogram (``(even + odd) / 2``);
    * ``clean``: the noise-free tilt series reconstructed the same way (same missing wedge,
      same reconstruction artefacts): the reference for denoising scores;
    * ``phantom``: the density before imaging (positive = more mass);
    * ``labels``: uint8 membrane map (1 on both leaflets and between them, 0 elsewhere);
    * ``even``, ``odd``: reconstructions from half the dose each, independent noise;
    * ``tilt_angles``: degrees; ``voxel_size``: angstrom (isotropic);
    * ``noise_sigma``: standard deviation of the full-dose noise per projection pixel, in the
      projections' units (density x voxel lengths); ``params``: the options used, JSON-able.
    """

    noisy: np.ndarray
    clean: np.ndarray
    phantom: np.ndarray
    labels: np.ndarray
    even: np.ndarray
    odd: np.ndarray
    tilt_angles: np.ndarray
    voxel_size: float
    snr: float
    mode: str = "tilt_series"
    noise_sigma: float = 0.0
    params: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.noisy.shape)

    @property
    def voxel_size_zyx(self) -> tuple[float, float, float]:
        v = float(self.voxel_size)
        return (v, v, v)

    @property
    def noise(self) -> np.ndarray:
        """``noisy - clean``."""
        return self.noisy - self.clean

    def measured_snr(self) -> float:
        """``var(clean) / var(noisy - clean)`` over the whole volume."""
        n = self.noise.astype(np.float64)
        return float(self.clean.astype(np.float64).var() / n.var()) if n.var() > 0 else math.inf

    def volumes(self) -> dict[str, np.ndarray]:
        return {"noisy": self.noisy, "clean": self.clean, "phantom": self.phantom,
                "labels": self.labels, "even": self.even, "odd": self.odd}

    def save(self, outdir, overwrite: bool = False, preview: bool = True) -> dict[str, Path]:
        """Write the volumes as MRC files (voxel size in the headers), a PNG of orthogonal
        slices (noisy, clean, labels) and ``simulation.json`` (the parameters) into ``outdir``
        (created if needed). Names: :data:`OUTPUT_FILES`.

        Raises :class:`~cet_monai.errors.OutputExistsError`, before writing anything, if any
        of these files exists and ``overwrite`` is false. Returns ``{role: path}``.
        """
        outdir = Path(outdir)
        roles = [r for r in OUTPUT_FILES if preview or r != "preview"]
        paths = {r: outdir / OUTPUT_FILES[r] for r in roles}
        _check_outputs(paths.values(), overwrite)
        outdir.mkdir(parents=True, exist_ok=True)
        for role, vol in self.volumes().items():
            _write_mrc(paths[role], vol, self.voxel_size_zyx, overwrite,
                       dtype="int8" if role == "labels" else "float32")
        if preview:
            from ..visualize import save_orthoslices

            save_orthoslices(
                paths["preview"],
                {"noisy": self.noisy, "clean": self.clean, "labels": self.labels},
                voxel_size=self.voxel_size_zyx,
                title=f"simulated tomogram ({self.mode}), SNR {self.snr:g}, "
                      f"{self.voxel_size:g} A voxels",
            )
        _write_json_atomic(paths["parameters"], self.params)
        return paths


# ----------------------------------------------------------------------------- helpers


def _check_outputs(paths, overwrite: bool) -> None:
    if overwrite:
        return
    existing = [str(p) for p in paths if Path(p).exists() or Path(p).is_symlink()]
    if existing:
        raise OutputExistsError(
            f"{existing[0]}: output file already exists"
            + (f" (and {len(existing) - 1} more)" if len(existing) > 1 else "")
            + " (--overwrite, or overwrite=True in Python, replaces them)"
        )


def _write_mrc(path: Path, array: np.ndarray, voxel_size_zyx, overwrite: bool, dtype: str):
    """Write with :func:`cet_monai.io.write_volume` when available, else ``mrcfile``
    (to a temporary file, then ``os.replace``)."""
    try:
        from ..io import write_volume  # type: ignore[attr-defined]
    except ImportError:
        write_volume = None
    if write_volume is not None:
        write_volume(path, array, voxel_size=voxel_size_zyx, overwrite=overwrite, dtype=dtype)
        return
    import mrcfile

    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: output file already exists (--overwrite, or overwrite=True in Python, replaces it)")
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp.mrc")
    try:
        with mrcfile.new(tmp, overwrite=True) as m:
            m.set_data(np.ascontiguousarray(array, dtype=np.dtype(dtype)))
            vz, vy, vx = voxel_size_zyx
            m.voxel_size = (vx, vy, vz)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def neighbour_correlation(noise: np.ndarray, axis: int) -> float:
    """Pearson correlation between each voxel and its neighbour along ``axis`` (0 Z, 1 Y, 2 X)."""
    a = np.asarray(noise, dtype=np.float64)
    n = a.shape[axis]
    x = np.take(a, np.arange(n - 1), axis=axis).ravel()
    y = np.take(a, np.arange(1, n), axis=axis).ravel()
    x = x - x.mean()
    y = y - y.mean()
    return float((x * y).sum() / math.sqrt((x * x).sum() * (y * y).sum()))


def wedge_energy_ratio(volume: np.ndarray, tilt_range=60.0, margin_deg: float = 5.0,
                       k_min: float = 0.1, k_max: float = 0.45) -> float:
    """Mean spectral power inside the missing wedge divided by the mean power in the sampled
    region, in the ``(k_x, k_z)`` annulus ``k_min <= |k_xz| <= k_max`` (cycles/voxel) and at
    least ``margin_deg`` from the wedge edges. A Hann window is applied first to keep the
    volume's borders from leaking power along the axes. ~0 for a perfect wedge-limited
    reconstruction, ~1 for a volume with no missing wedge."""
    a = np.asarray(volume, dtype=np.float64)
    a = a - a.mean()
    for ax, n in enumerate(a.shape):
        w = np.hanning(n + 2)[1:-1]
        s = [1] * 3
        s[ax] = n
        a = a * w.reshape(s)
    p = np.abs(np.fft.fftn(a)) ** 2
    kz = np.fft.fftfreq(a.shape[0])[:, None, None]
    kx = np.fft.fftfreq(a.shape[2])[None, None, :]
    kr = np.sqrt(kz ** 2 + kx ** 2)
    # angle of (kx, kz) from the kx axis, folded to (-90, 90]: sampled where it is a tilt angle
    phi = np.degrees(np.arctan2(kz, kx))
    phi = np.where(phi > 90, phi - 180, np.where(phi <= -90, phi + 180, phi))
    if np.ndim(tilt_range) == 0:
        lo, hi = -float(tilt_range), float(tilt_range)
    else:
        lo, hi = (float(t) for t in tilt_range)
    ring = (kr >= k_min) & (kr <= k_max)
    inside = ring & ((phi > hi + margin_deg) | (phi < lo - margin_deg))
    outside = ring & (phi < hi - margin_deg) & (phi > lo + margin_deg)
    inside = np.broadcast_to(inside, p.shape)
    outside = np.broadcast_to(outside, p.shape)
    return float(p[inside].mean() / p[outside].mean())


def _wedge_mask(shape, lo_deg: float, hi_deg: float) -> np.ndarray:
    """Sampled region of the tilt series on the rfftn grid ``(Z, Y, X//2+1)``."""
    kz = np.fft.fftfreq(shape[0])[:, None, None]
    kx = np.fft.rfftfreq(shape[2])[None, None, :]
    phi = np.degrees(np.arctan2(kz, kx))  # kx >= 0: (-90, 90]
    m = (phi >= lo_deg - 1e-9) & (phi <= hi_deg + 1e-9)
    m = m | ((kz == 0) & (kx == 0))
    return np.broadcast_to(m, (shape[0], shape[1], shape[2] // 2 + 1))


def _apodisation(kr: np.ndarray, name: str) -> np.ndarray:
    name = name.lower()
    if name == "shepp-logan":
        return np.sinc(kr)
    if name == "cosine":
        return np.cos(np.pi * np.clip(kr, 0, 0.5))
    if name == "hann":
        return 0.5 + 0.5 * np.cos(2 * np.pi * np.clip(kr, 0, 0.5))
    if name == "hamming":
        return 0.54 + 0.46 * np.cos(2 * np.pi * np.clip(kr, 0, 0.5))
    return np.ones_like(kr)


def _scale_noise(clean, noise_even, noise_odd, snr):
    """Scale two half-dose noise reconstructions so that the mean's SNR is ``snr``; returns
    ``(noisy, even, odd, scale)``."""
    clean = clean.astype(np.float32).astype(np.float64)  # the stored reference, exactly
    g = 0.5 * (noise_even.astype(np.float64) + noise_odd.astype(np.float64))
    var_c = clean.var()
    var_g = g.var()
    if math.isinf(snr) or var_g == 0:
        s = 0.0
    else:
        s = math.sqrt(var_c / (snr * var_g))
    even = (clean + s * noise_even).astype(np.float32)
    odd = (clean + s * noise_odd).astype(np.float32)
    noisy = ((even.astype(np.float64) + odd.astype(np.float64)) / 2).astype(np.float32)
    # float32 rounding of even/odd moves the SNR by ~1e-7 relative: correct the last bit by a
    # final rescale of the noise around the clean volume, keeping noisy = (even + odd) / 2
    if s > 0:
        n = noisy.astype(np.float64) - clean
        f = math.sqrt(var_c / (snr * n.var()))
        even = (clean + f * (even.astype(np.float64) - clean)).astype(np.float32)
        odd = (clean + f * (odd.astype(np.float64) - clean)).astype(np.float32)
        noisy = ((even.astype(np.float64) + odd.astype(np.float64)) / 2).astype(np.float32)
        s *= f
    return noisy, even, odd, s, clean.astype(np.float32)


def _validate(shape, voxel_size, snr, tilt_range, tilt_step, mode):
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise SimulationOptionError(f"shape must be three integers (Z, Y, X), got {shape!r}")
    if len(shape) != 3 or min(shape) < 8:
        raise SimulationOptionError(f"shape must be three integers >= 8 (Z, Y, X), got {shape!r}")
    if math.prod(shape) > 512 ** 3:
        raise SimulationOptionError(f"shape {shape} is too large to simulate (> 512^3 voxels)")
    if not (float(voxel_size) > 0 and math.isfinite(float(voxel_size))):
        raise SimulationOptionError(f"voxel_size must be > 0 angstrom, got {voxel_size!r}")
    if not (float(snr) > 0):
        raise SimulationOptionError(f"snr must be > 0 (inf: no noise), got {snr!r}")
    if mode not in ("tilt_series", "fast"):
        raise SimulationOptionError(f"mode must be 'tilt_series' or 'fast', got {mode!r}")
    try:
        angles = tomo.tilt_angles(tilt_range, tilt_step)
    except (ValueError, TypeError) as exc:
        raise SimulationOptionError(f"bad tilt series: {exc}") from None
    if len(angles) < 2:
        raise SimulationOptionError(f"the tilt series has {len(angles)} angle(s); at least 2 needed")
    return shape, angles


def _as_ctf(ctf):
    if ctf is None or ctf is False:
        return None
    if ctf is True:
        return tomo.CTFParams()
    if isinstance(ctf, tomo.CTFParams):
        return ctf
    if isinstance(ctf, dict):
        try:
            return tomo.CTFParams(**ctf)
        except TypeError as exc:
            raise SimulationOptionError(f"bad CTF parameters: {exc}") from None
    raise SimulationOptionError(f"ctf must be None, True, a CTFParams or a dict, got {ctf!r}")


# ------------------------------------------------------------------------------ public


def simulate_tomogram(shape=(64, 128, 128), voxel_size: float = 10.0, snr: float = 0.05,
                      tilt_range=60.0, tilt_step: float = 2.0, seed: int = 0, ctf=None,
                      membrane_labels=None, n_vesicles: int | None = None,
                      n_complexes: int | None = None, mode: str = "tilt_series", *,
                      labels_voxel_size: float | None = None, sheet: bool | None = None,
                      apodization: str = "ram-lak", noise_gradient: float = 1.0,
                      phantom_options: dict | None = None) -> SimulatedTomogram:
    """Simulate a cryo-ET tomogram with ground truth (see the module docstring).

    Args:
        shape: ``(Z, Y, X)`` voxels of the output; Z is the beam direction, Y the tilt axis.
        voxel_size: angstrom (also the detector pixel size).
        snr: ``var(clean) / var(noisy - clean)`` of the output volume (``math.inf``: no noise).
        tilt_range: maximum tilt in degrees (series ``-tilt_range..+tilt_range``), or a pair
            ``(min, max)``.
        tilt_step: degrees between tilts.
        seed: all randomness (phantom and noise) comes from ``numpy.random.default_rng(seed)``.
        ctf: ``None`` (no CTF), ``True`` (default :class:`~cet_monai.data.tomography.CTFParams`:
            3 um underfocus, 300 kV, Cs 2.7 mm, 7 % amplitude contrast), a ``CTFParams`` or a
            dict of its fields. In ``fast`` mode it is applied isotropically in 3D.
        membrane_labels: optional label map file (1 membrane, 2 lumen, anything else outside):
            its membrane geometry replaces the random sheet and vesicles (unless
            ``n_vesicles``/``sheet`` ask for them too).
        n_vesicles, n_complexes: counts with their centre in the output volume (defaults scale
            with the volume: 4 vesicles and ~24 complexes per 64x128x128 voxels of 10 A).
        mode: ``"tilt_series"`` (default, realistic) or ``"fast"`` (Fourier-space approximation).
        labels_voxel_size: voxel size (A) of ``membrane_labels``; default: ``voxel_size``.
        sheet: include a curved membrane sheet (default: yes unless ``membrane_labels``).
        apodization: ramp-filter window: ``ram-lak`` (default: the plain ramp, no window),
            ``shepp-logan`` (mild), ``cosine``, ``hann``, ``hamming``.
        noise_gradient: ratio of the noise standard deviation at the high-X end of the volume to
            that at the low-X end (a lamella that thickens along X: thicker ice, fewer electrons
            through, more noise per unit signal); ``1`` (default): the same noise everywhere.
            The profile is geometric along X, ``noise_gradient ** (x / X - 1/2)``, applied to
            each projection's noise per detector column in ``tilt_series`` mode and to the
            reconstructed noise in ``fast`` mode; ``snr`` stays the whole volume's.
        phantom_options: further keyword arguments of :func:`~cet_monai.data.phantom.make_phantom`.

    Returns:
        a :class:`SimulatedTomogram`.
    """
    t0 = time.perf_counter()
    shape, angles = _validate(shape, voxel_size, snr, tilt_range, tilt_step, mode)
    if not (isinstance(noise_gradient, numbers.Real) and math.isfinite(noise_gradient) and noise_gradient > 0):
        raise SimulationOptionError(f"noise_gradient must be a positive number, got {noise_gradient!r}")
    ctf_p = _as_ctf(ctf)
    voxel_size = float(voxel_size)
    snr = float(snr)
    nz, ny, nx = shape
    rng = np.random.default_rng(seed)
    max_tilt = float(np.max(np.abs(angles)))
    pad = tomo.lateral_padding(nz, max_tilt) if mode == "tilt_series" else 0
    popts = dict(phantom_options or {})
    ph: Phantom = make_phantom(shape, voxel_size, rng, n_vesicles=n_vesicles,
                               n_complexes=n_complexes, sheet=sheet,
                               membrane_labels=membrane_labels,
                               labels_voxel_size=labels_voxel_size, pad_x=pad, **popts)
    if mode == "tilt_series":
        clean, ne, no = _tilt_series(ph, angles, ctf_p, voxel_size, apodization, rng, noise_gradient)
    else:
        clean, ne, no = _fast(ph, angles, ctf_p, voxel_size, apodization, rng)
        if noise_gradient != 1:
            profile = _noise_profile(nx, 0, noise_gradient)
            ne, no = ne * profile, no * profile
    noisy, even, odd, s, clean = _scale_noise(clean, ne, no, snr)
    # noise_sigma: full-dose std per projection pixel (each half had s, i.e. variance 2 sigma^2)
    noise_sigma = s / math.sqrt(2.0) if mode == "tilt_series" else float("nan")
    params = dict(
        shape=list(shape), voxel_size=voxel_size, snr=snr, tilt_range=tilt_range,
        tilt_step=float(tilt_step), n_tilts=int(len(angles)), noise_gradient=float(noise_gradient), seed=seed if isinstance(
            seed, (int, np.integer)) else None, mode=mode, apodization=apodization,
        ctf=ctf_p.to_dict() if ctf_p else None,
        membrane_labels=str(membrane_labels) if membrane_labels is not None else None,
        labels_voxel_size=labels_voxel_size, lateral_padding_voxels=pad,
        noise_sigma_per_projection_pixel=noise_sigma if mode == "tilt_series" else None,
        counts={k: sum(1 for o in ph.objects if o["kind"] == k and o.get("in_output", True))
                for k in sorted({o["kind"] for o in ph.objects})},
        objects=ph.objects, seconds=round(time.perf_counter() - t0, 2),
        conventions="arrays (Z, Y, X); tilt axis Y; voxel size in angstrom; density positive",
    )
    return SimulatedTomogram(
        noisy=noisy, clean=clean, phantom=ph.crop(ph.density).copy(),
        labels=ph.crop(ph.labels).copy(), even=even, odd=odd,
        tilt_angles=angles.astype(np.float32), voxel_size=voxel_size, snr=snr, mode=mode,
        noise_sigma=noise_sigma, params=params,
    )


def _noise_profile(nx: int, pad: int, gradient: float) -> np.ndarray:
    """``gradient ** (x / nx - 1/2)`` for the ``nx + 2 pad`` columns (x from ``-pad``), float32:
    the noise standard deviation across a lamella that thickens along X."""
    x = np.arange(nx + 2 * pad, dtype=np.float64) - pad
    return (float(gradient) ** (x / nx - 0.5)).astype(np.float32)


def _tilt_series(ph: Phantom, angles, ctf_p, voxel_size, apodization, rng, noise_gradient: float = 1.0):
    nz, ny, nxp = ph.density.shape
    nx = nxp - 2 * ph.pad_x
    na = len(angles)
    pmat = tomo.projection_matrix(nz, nxp, angles, n_det=nxp)
    bmat = tomo.backprojection_matrix(nz, nx, angles, nxp, x_offset=ph.pad_x, grid_nx=nxp)
    proj = tomo.project(torch.from_numpy(ph.density), pmat, na)  # (A, Y, U)
    if ctf_p is not None:
        proj = tomo.apply_ctf(proj, ctf_p, voxel_size)
    noise = torch.from_numpy(rng.standard_normal((2, na, ny, nxp), dtype=np.float32))
    if noise_gradient != 1:
        noise = noise * torch.from_numpy(_noise_profile(nx, ph.pad_x, noise_gradient))
    stack = torch.cat([proj[None], noise], dim=0)
    del noise, proj
    rec = tomo.backproject(tomo.ramp_filter(stack, apodization), bmat, nz, nx).numpy()
    return rec[0].astype(np.float64), rec[1], rec[2]


def _fast(ph: Phantom, angles, ctf_p, voxel_size, apodization, rng):
    shape = ph.density.shape
    lo, hi = float(np.min(angles)), float(np.max(angles))
    wedge = _wedge_mask(shape, lo, hi)
    kz = np.fft.fftfreq(shape[0])[:, None, None]
    ky = np.fft.fftfreq(shape[1])[None, :, None]
    kx = np.fft.rfftfreq(shape[2])[None, None, :]
    kxz = np.sqrt(kz ** 2 + kx ** 2)
    # the detector samples |k_xz| <= 0.5 only (a disc, not the square's corners); linear
    # interpolation in the back-projection damps high frequencies (~ sinc)
    filt = wedge * (kxz <= 0.5) * np.sinc(kxz) * _apodisation(kxz, apodization)
    spec = np.fft.rfftn(ph.density.astype(np.float64))
    sig_filt = filt
    if ctf_p is not None:
        k = np.sqrt(kz ** 2 + ky ** 2 + kx ** 2) / voxel_size
        lam = tomo.electron_wavelength(ctf_p.voltage_kv)
        chi = (math.pi * lam * ctf_p.defocus_um * 1e4 * k ** 2
               - 0.5 * math.pi * ctf_p.cs_mm * 1e7 * lam ** 3 * k ** 4)
        c = np.sin(chi + math.asin(float(np.clip(ctf_p.amplitude_contrast, 0, 1))))
        if ctf_p.b_factor:
            c = c * np.exp(-ctf_p.b_factor * k ** 2 / 4)
        sig_filt = filt * c
    clean = np.fft.irfftn(spec * sig_filt, s=shape, axes=(0, 1, 2))
    nfilt = filt * np.sqrt(kxz)  # ramp-weighted noise: power ~ |k| (slice density ~ 1/|k|)
    halves = []
    for _ in range(2):
        w = rng.standard_normal(shape, dtype=np.float32)
        halves.append(np.fft.irfftn(np.fft.rfftn(w) * nfilt, s=shape, axes=(0, 1, 2))
                      .astype(np.float32))
    return clean, halves[0], halves[1]


def simulate_to_folder(outdir, overwrite: bool = False, **options) -> SimulatedTomogram:
    """Simulate (``options``: those of :func:`simulate_tomogram`) and :meth:`save
    <SimulatedTomogram.save>` into ``outdir``. Existing outputs are refused before the
    simulation starts unless ``overwrite``. Returns the simulation."""
    outdir = Path(outdir)
    _check_outputs([outdir / f for f in OUTPUT_FILES.values()], overwrite)
    sim = simulate_tomogram(**options)
    sim.save(outdir, overwrite=overwrite)
    return sim
