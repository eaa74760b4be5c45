"""Imaging a phantom as an electron tomogram: tilt series, CTF, weighted back-projection.

Geometry (see :mod:`cet_monai` for the conventions): volumes are ``(Z, Y, X)``, the tilt axis
is Y, so every Y row is an independent 2D problem in the Z-X plane and all operators below act
on ``(Z, X)`` planes with Y carried along as a batch dimension. A projection at tilt ``theta``
is a ``(Y, U)`` image whose detector coordinate is

    u - cu = (x - cx) * cos(theta) + (z - cz) * sin(theta)

(voxel units, ``c*`` the centres of the grids), i.e. the ray direction is
``(-sin(theta), cos(theta))`` in ``(x, z)``; at ``theta = 0`` the beam runs along Z.

* :func:`projection_matrix` is Joseph's ray-driven projector (linear interpolation between
  the two voxels a ray crosses in every row -- or column beyond 45 deg -- weighted by the
  path length), stored as a sparse matrix shared by all Y rows.
* :func:`backprojection_matrix` is the voxel-driven back-projector (linear interpolation on
  the detector), again a sparse matrix.
* :func:`ramp_filter` is the Ram-Lak filter built from its spatial kernel (so the DC term is
  right), with an optional apodisation window, applied along the detector axis.
* :func:`apply_ctf` multiplies each projection by a contrast transfer function in 2D
  Fourier space (no phase flipping or other correction afterwards).

Everything is linear, so a reconstruction of (signal + noise) is the sum of the
reconstructions of each: :mod:`cet_monai.data.simulate` relies on that to hit an exact SNR.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch

__all__ = [
    "CTFParams",
    "tilt_angles",
    "projection_matrix",
    "backprojection_matrix",
    "project",
    "ramp_filter",
    "backproject",
    "ctf_2d",
    "apply_ctf",
    "electron_wavelength",
    "lateral_padding",
]


def tilt_angles(tilt_range=60.0, tilt_step=2.0) -> np.ndarray:
    """Tilt angles in degrees: ``-tilt_range..+tilt_range`` in ``tilt_step`` steps.

    ``tilt_range`` may be a pair ``(min, max)`` for an asymmetric series. The end points are
    included when they fall on the step grid (within 1e-6 deg).
    """
    if np.ndim(tilt_range) == 0:
        lo, hi = -float(tilt_range), float(tilt_range)
    else:
        lo, hi = (float(v) for v in tilt_range)
    step = float(tilt_step)
    if not (step > 0):
        raise ValueError(f"tilt_step must be > 0, got {tilt_step!r}")
    if not (-90.0 < lo <= hi < 90.0):
        raise ValueError(f"tilt range must lie inside (-90, 90) degrees, got {tilt_range!r}")
    n = int(math.floor((hi - lo) / step + 1e-6)) + 1
    angles = lo + step * np.arange(n)
    # centre a symmetric series exactly on 0 when the grid allows it
    return angles.astype(np.float64)


def angle_weights(angles_deg: np.ndarray) -> np.ndarray:
    """Angular quadrature weights (radians) for the back-projection sum: the spacing around
    each angle (half-spacing at the two ends counts as a full one, as in the usual discrete
    WBP), so that a uniformly sampled +-90 series reproduces the density scale."""
    a = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    if a.size == 1:
        return np.array([math.pi])
    g = np.gradient(a)
    return np.abs(g)


def lateral_padding(nz: int, max_tilt_deg: float, extra: int = 8) -> int:
    """Voxels to add on each side of X so that every ray reaching the reconstructed region
    crosses the whole slab thickness inside the projected volume."""
    return int(math.ceil(nz * math.tan(math.radians(min(abs(max_tilt_deg), 89.0))))) + extra


def _csr(rows, cols, vals, shape) -> torch.Tensor:
    """A torch CSR matrix from COO triplets (duplicates summed); scipy does the O(nnz) sort."""
    from scipy import sparse

    m = sparse.csr_matrix(
        (np.asarray(vals, dtype=np.float32), (np.asarray(rows, dtype=np.int64),
                                              np.asarray(cols, dtype=np.int64))), shape=shape)
    m.sum_duplicates()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(
            torch.from_numpy(m.indptr.astype(np.int64)), torch.from_numpy(m.indices.astype(np.int64)),
            torch.from_numpy(m.data.astype(np.float32)), size=shape, check_invariants=False,
        )


def projection_matrix(nz: int, nx: int, angles_deg, n_det: int | None = None) -> torch.Tensor:
    """Sparse ``(n_angles * n_det, nz * nx)`` matrix of Joseph's projector on a ``(nz, nx)``
    plane; row ``a * n_det + u`` is the line integral (in voxel lengths) along the ray of
    detector pixel ``u`` at angle ``a``. ``n_det`` defaults to ``nx``."""
    n_det = nx if n_det is None else int(n_det)
    cz, cx, cu = (nz - 1) / 2.0, (nx - 1) / 2.0, (n_det - 1) / 2.0
    rows, cols, vals = [], [], []
    u = np.arange(n_det, dtype=np.float64) - cu
    for ia, th in enumerate(np.deg2rad(np.asarray(angles_deg, dtype=np.float64))):
        c, s = math.cos(th), math.sin(th)
        if abs(c) >= abs(s):  # step through Z rows, interpolate along X
            z = np.arange(nz, dtype=np.float64)
            x = cx + (u[:, None] - (z[None, :] - cz) * s) / c  # (U, Z)
            w = 1.0 / abs(c)
            i0 = np.floor(x).astype(np.int64)
            f = x - i0
            uu = np.broadcast_to(np.arange(n_det)[:, None], x.shape)
            zz = np.broadcast_to(np.arange(nz)[None, :], x.shape)
            for di, wt in ((0, 1.0 - f), (1, f)):
                ii = i0 + di
                ok = (ii >= 0) & (ii < nx) & (wt > 0)
                rows.append(ia * n_det + uu[ok])
                cols.append(zz[ok] * nx + ii[ok])
                vals.append(w * wt[ok])
        else:  # step through X columns, interpolate along Z
            xg = np.arange(nx, dtype=np.float64)
            z = cz + (u[:, None] - (xg[None, :] - cx) * c) / s  # (U, X)
            w = 1.0 / abs(s)
            i0 = np.floor(z).astype(np.int64)
            f = z - i0
            uu = np.broadcast_to(np.arange(n_det)[:, None], z.shape)
            xx = np.broadcast_to(np.arange(nx)[None, :], z.shape)
            for di, wt in ((0, 1.0 - f), (1, f)):
                ii = i0 + di
                ok = (ii >= 0) & (ii < nz) & (wt > 0)
                rows.append(ia * n_det + uu[ok])
                cols.append(ii[ok] * nx + xx[ok])
                vals.append(w * wt[ok])
    n_a = len(np.atleast_1d(angles_deg))
    return _csr(np.concatenate(rows), np.concatenate(cols), np.concatenate(vals),
                (n_a * n_det, nz * nx))


def backprojection_matrix(nz: int, nx: int, angles_deg, n_det: int, x_offset: float = 0.0,
                          grid_nx: int | None = None, weights=None) -> torch.Tensor:
    """Sparse ``(nz * nx, n_angles * n_det)`` voxel-driven back-projector with linear
    interpolation on the detector.

    The output plane is ``nz x nx`` voxels; it sits at columns ``x_offset .. x_offset + nx``
    of a (possibly wider) grid of ``grid_nx`` columns whose centre defines the rotation
    centre (the projections were taken of that wider grid). ``weights`` (per angle,
    radians) multiply each angle's contribution; default: :func:`angle_weights`.
    """
    angles_deg = np.atleast_1d(np.asarray(angles_deg, dtype=np.float64))
    grid_nx = nx if grid_nx is None else int(grid_nx)
    w_a = angle_weights(angles_deg) if weights is None else np.asarray(weights, np.float64)
    cz, cx, cu = (nz - 1) / 2.0, (grid_nx - 1) / 2.0, (n_det - 1) / 2.0
    z = np.arange(nz, dtype=np.float64)[:, None] - cz
    x = np.arange(nx, dtype=np.float64)[None, :] + x_offset - cx
    vox = (np.arange(nz)[:, None] * nx + np.arange(nx)[None, :]).ravel()
    rows, cols, vals = [], [], []
    for ia, th in enumerate(np.deg2rad(angles_deg)):
        u = (x * math.cos(th) + z * math.sin(th) + cu).ravel()
        i0 = np.floor(u).astype(np.int64)
        f = u - i0
        for di, wt in ((0, 1.0 - f), (1, f)):
            ii = i0 + di
            ok = (ii >= 0) & (ii < n_det) & (wt > 0)
            rows.append(vox[ok])
            cols.append(ia * n_det + ii[ok])
            vals.append(w_a[ia] * wt[ok])
    return _csr(np.concatenate(rows), np.concatenate(cols), np.concatenate(vals),
                (nz * nx, len(angles_deg) * n_det))


def project(volume: torch.Tensor, pmat: torch.Tensor, n_angles: int) -> torch.Tensor:
    """Project ``(Z, Y, X)`` (or ``(C, Z, Y, X)``) with a :func:`projection_matrix`; returns
    ``(n_angles, Y, U)`` (or ``(C, n_angles, Y, U)``)."""
    squeeze = volume.ndim == 3
    v = volume[None] if squeeze else volume
    c, nz, ny, nx = v.shape
    flat = v.permute(1, 3, 2, 0).reshape(nz * nx, ny * c)  # (Z*X, Y*C)
    p = (pmat @ flat).reshape(n_angles, -1, ny, c).permute(3, 0, 2, 1)  # (C, A, Y, U)
    p = p.contiguous()
    return p[0] if squeeze else p


_APODISATIONS = ("none", "ram-lak", "shepp-logan", "cosine", "hann", "hamming")


def ramp_filter(projections: torch.Tensor, apodization: str = "ram-lak") -> torch.Tensor:
    """Ramp-filter projections ``(..., U)`` along the last (detector X) axis.

    The filter is the FFT of the discrete Ram-Lak kernel (h[0] = 1/4, h[odd n] = -1/(pi n)^2),
    zero-padded to at least twice the detector width so the convolution is not circular, then
    multiplied by an apodisation window of the frequency ``f`` (cycles/pixel, Nyquist 0.5):
    ``shepp-logan`` (sinc, mild: 0.64 at Nyquist), ``cosine``, ``hann``, ``hamming`` or
    ``none``/``ram-lak``.
    """
    apod = apodization.lower()
    if apod not in _APODISATIONS:
        raise ValueError(f"apodization must be one of {_APODISATIONS}, got {apodization!r}")
    n = projections.shape[-1]
    size = 1 << int(math.ceil(math.log2(max(64, 2 * n))))
    k = torch.arange(size, dtype=torch.float64)
    k = torch.minimum(k, size - k)
    h = torch.zeros(size, dtype=torch.float64)
    h[0] = 0.25
    odd = (k % 2) == 1
    h[odd] = -1.0 / (math.pi * k[odd]) ** 2
    filt = torch.fft.rfft(h).real  # >= 0, ~|f|
    f = torch.fft.rfftfreq(size, dtype=torch.float64)  # 0 .. 0.5
    if apod == "shepp-logan":
        filt = filt * torch.sinc(f)  # sin(pi f)/(pi f): 2/pi at Nyquist
    elif apod == "cosine":
        filt = filt * torch.cos(math.pi * f)
    elif apod == "hann":
        filt = filt * (0.5 + 0.5 * torch.cos(2 * math.pi * f))
    elif apod == "hamming":
        filt = filt * (0.54 + 0.46 * torch.cos(2 * math.pi * f))
    spec = torch.fft.rfft(projections, n=size, dim=-1)
    out = torch.fft.irfft(spec * filt.to(spec.real.dtype), n=size, dim=-1)[..., :n]
    return out.contiguous()


def backproject(filtered: torch.Tensor, bmat: torch.Tensor, nz: int, nx: int) -> torch.Tensor:
    """Back-project filtered projections ``(A, Y, U)`` or ``(C, A, Y, U)`` with a
    :func:`backprojection_matrix`; returns ``(Z, Y, X)`` or ``(C, Z, Y, X)``."""
    squeeze = filtered.ndim == 3
    p = filtered[None] if squeeze else filtered
    c, na, ny, nu = p.shape
    flat = p.permute(1, 3, 2, 0).reshape(na * nu, ny * c)  # (A*U, Y*C)
    v = (bmat @ flat).reshape(nz, nx, ny, c).permute(3, 0, 2, 1).contiguous()
    return v[0] if squeeze else v


# ----------------------------------------------------------------------------------- CTF


@dataclass
class CTFParams:
    """Contrast transfer function of the microscope.

    ``defocus_um`` is the underfocus in micrometres (positive = underfocus), ``voltage_kv``
    the acceleration voltage, ``cs_mm`` the spherical aberration, ``amplitude_contrast`` the
    fraction of amplitude contrast, ``b_factor`` an envelope ``exp(-B k^2 / 4)`` in A^2
    (0 = none), ``pixel_size`` in angstrom (``None``: the simulation's voxel size).
    The sign is chosen so that low frequencies keep the density's sign (dense = positive,
    as in a contrast-inverted tomogram); no phase flipping is applied afterwards.
    """

    defocus_um: float = 3.0
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.07
    b_factor: float = 0.0
    pixel_size: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def electron_wavelength(voltage_kv: float) -> float:
    """Relativistic electron wavelength in angstrom."""
    v = voltage_kv * 1e3
    return 12.2643247 / math.sqrt(v * (1.0 + 0.978466e-6 * v))


def ctf_2d(params: CTFParams, ny: int, nx: int, pixel_size: float) -> torch.Tensor:
    """The CTF on the ``(ny, nx)`` FFT grid (full in Y, half ``rfft`` grid in X), float64."""
    px = params.pixel_size if params.pixel_size is not None else pixel_size
    lam = electron_wavelength(params.voltage_kv)
    dz = params.defocus_um * 1e4  # A
    cs = params.cs_mm * 1e7  # A
    ky = torch.fft.fftfreq(ny, d=px, dtype=torch.float64)
    kx = torch.fft.rfftfreq(nx, d=px, dtype=torch.float64)
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    chi = math.pi * lam * dz * k2 - 0.5 * math.pi * cs * lam ** 3 * k2 ** 2
    a = float(np.clip(params.amplitude_contrast, 0.0, 1.0))
    ctf = torch.sin(chi + math.asin(a))
    if params.b_factor:
        ctf = ctf * torch.exp(-params.b_factor * k2 / 4.0)
    return ctf


def apply_ctf(projections: torch.Tensor, params: CTFParams, pixel_size: float,
              pad: int = 16) -> torch.Tensor:
    """Multiply every projection ``(..., Y, U)`` by the CTF in 2D Fourier space.

    The images are reflect-padded by ``pad`` pixels (limited by their size) before the FFT so
    that the CTF's delocalisation does not wrap around the edges.
    """
    ny, nx = projections.shape[-2:]
    py, px = min(pad, ny - 1), min(pad, nx - 1)
    lead = projections.shape[:-2]
    p = projections.reshape(-1, 1, ny, nx)
    if py > 0 or px > 0:
        p = torch.nn.functional.pad(p, (px, px, py, py), mode="reflect")
    h, w = p.shape[-2:]
    ctf = ctf_2d(params, h, w, pixel_size).to(p.dtype)
    out = torch.fft.irfft2(torch.fft.rfft2(p) * ctf, s=(h, w))
    out = out[..., py:py + ny, px:px + nx]
    return out.reshape(*lead, ny, nx).contiguous()
