"""Quick-look figures of volumes: orthogonal central slices, written as image files.

Used by the simulator, training previews and the denoise command. Matplotlib runs with the
non-interactive Agg backend (no display needed); figures are written atomically.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["save_orthoslices", "orthoslices", "save_noise_spectrum_plot"]


def _to_numpy(a) -> np.ndarray:
    from cet_monai.io.utils import SlabwiseVolume

    if isinstance(a, SlabwiseVolume):  # a disk-backed volume: only the three slices are read
        return a
    if hasattr(a, "detach"):  # torch tensor / MONAI MetaTensor
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    while a.ndim > 3 and a.shape[0] == 1:  # (1, Z, Y, X) channel-first, batch of one
        a = a[0]
    if a.ndim != 3:
        raise ValueError(f"save_orthoslices needs 3D (Z, Y, X) volumes, got shape {a.shape}")
    return a


def _voxel_zyx(voxel_size) -> tuple[float, float, float]:
    if voxel_size is None:
        return (1.0, 1.0, 1.0)
    if np.ndim(voxel_size) == 0:
        v = float(voxel_size)
        return (v, v, v)
    vz, vy, vx = (float(v) for v in voxel_size)
    return (vz, vy, vx)


def orthoslices(volume, index=None) -> dict[str, np.ndarray]:
    """The three orthogonal slices through ``index`` (default: the centre) of a ``(Z, Y, X)``
    volume: ``XY`` (Y rows, X columns), ``XZ`` (Z rows, X columns), ``YZ`` (Z rows, Y columns)."""
    v = _to_numpy(volume)
    nz, ny, nx = v.shape
    z, y, x = index if index is not None else (nz // 2, ny // 2, nx // 2)
    return {"XY": v[z], "XZ": v[:, y, :], "YZ": v[:, :, x]}


def _is_label(a: np.ndarray) -> bool:
    return a.dtype == bool or np.issubdtype(a.dtype, np.integer)


def _stretch(panel: np.ndarray, lo_pct=1.0, hi_pct=99.0):
    finite = panel[np.isfinite(panel)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [lo_pct, hi_pct])
    if not hi > lo:
        lo, hi = float(finite.min()), float(finite.max())
        if not hi > lo:
            hi = lo + 1.0
    return float(lo), float(hi)


def _label_cmap(vol, ListedColormap, colormaps):
    """Colormap for a label map: 0 black, 1.. distinct colours (tab10/tab20); a continuous
    map for many labels. Returns ``(cmap, vmin, vmax)``."""
    lo, hi = int(min(0, vol.min())), int(max(1, vol.max()))
    n = hi - lo + 1
    if n <= 20:
        base = colormaps["tab10" if n <= 11 else "tab20"]
        colors = [(0.0, 0.0, 0.0, 1.0)] + [base(i % base.N) for i in range(n - 1)]
        return ListedColormap(colors), lo - 0.5, hi + 0.5
    return colormaps["nipy_spectral"], lo, hi


def save_orthoslices(path, volumes: Mapping[str, object], voxel_size=None, title: str | None = None,
                     dpi: int = 100, percentiles=(1.0, 99.0)) -> Path:
    """Save a figure of central orthogonal slices, one row per volume.

    Args:
        path: output image (``.png``, ``.jpg``, ``.pdf``, ``.svg``...; format from the suffix).
            Written to a temporary file next to it, then moved into place (``os.replace``).
        volumes: ``{name: (Z, Y, X) array}`` (numpy or torch; a leading channel of 1 is
            dropped), shown in order. All volumes should share a shape for the slices to
            match, but any shapes are drawn.
        voxel_size: angstrom, one number or ``(Z, Y, X)``; sets the aspect of the XZ and YZ
            panels (``None``: isotropic).
        title: figure title.
        percentiles: each grey-level panel is contrast-stretched to these percentiles of its
            own values. Integer or boolean volumes are label maps: drawn with a qualitative
            colormap over their value range, without stretching.

    Returns:
        ``path`` as a ``Path``.
    """
    import matplotlib
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    path = Path(path)
    if not volumes:
        raise ValueError("save_orthoslices needs at least one volume")
    vols = {str(k): _to_numpy(v) for k, v in volumes.items()}
    vz, vy, vx = _voxel_zyx(voxel_size)
    ref = next(iter(vols.values())).shape
    nz, ny, nx = ref
    # physical extents of the three panels (width, height)
    widths = [nx * vx, nx * vx, ny * vy]
    heights = [ny * vy, nz * vz, nz * vz]
    row_h = max(heights)
    panel_in = 3.2 / max(widths)  # inches per angstrom: the widest panel is 3.2 in
    fig_w = sum(widths) * panel_in + 0.5 + 0.08 * 2 * 3.2
    fig_h = len(vols) * (row_h * panel_in + 0.3) + (0.55 if title else 0.3)
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi)
    top = 1 - (0.55 if title else 0.3) / fig_h
    gs = fig.add_gridspec(len(vols), 3, width_ratios=widths, wspace=0.08,
                          hspace=0.3 / (row_h * panel_in), left=0.4 / fig_w,
                          right=1 - 0.1 / fig_w, top=top, bottom=0.1 / fig_h)
    for r, (name, vol) in enumerate(vols.items()):
        label = _is_label(vol)
        if label:
            lab_cmap, lab_lo, lab_hi = _label_cmap(vol, ListedColormap, matplotlib.colormaps)
        for c, (plane, panel) in enumerate(orthoslices(vol).items()):
            ax = fig.add_subplot(gs[r, c])
            pz, py, px = vol.shape
            if plane == "XY":
                extent, aspect = (0, px * vx, py * vy, 0), "equal"
            elif plane == "XZ":
                extent, aspect = (0, px * vx, pz * vz, 0), "equal"
            else:
                extent, aspect = (0, py * vy, pz * vz, 0), "equal"
            if label:
                ax.imshow(panel.astype(np.float32), cmap=lab_cmap, vmin=lab_lo, vmax=lab_hi,
                          interpolation="nearest", extent=extent, aspect=aspect)
            else:
                lo, hi = _stretch(np.asarray(panel, dtype=np.float32), *percentiles)
                ax.imshow(panel, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest",
                          extent=extent, aspect=aspect)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(plane, fontsize=8, pad=2)
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return _write_figure(fig, path, path.suffix.lstrip(".").lower() or "png", dpi)


def _write_figure(fig, path: Path, fmt: str, dpi: int) -> Path:
    """Save ``fig`` to a temporary file beside ``path``, then move it into place (never a partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        fig.savefig(tmp, format=fmt, dpi=dpi)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def save_noise_spectrum_plot(path, spectrum, reference=None, n_shells: int = 16) -> Path:
    """Plot the radial profile of an estimated noise spectrum (and of the true noise, if known).

    Args:
        path: PNG to write (atomically).
        spectrum: a :class:`~cet_monai.noise_spectrum.NoiseSpectrum`.
        reference: the true noise ``(Z, Y, X)`` in the same units (a simulation's noisy - clean,
            normalised), or ``None``: its periodogram is drawn beside the estimate, with their
            ratio per shell.
        n_shells: shells of ``|k|`` up to Nyquist.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cet_monai.noise_spectrum import periodogram, radial_profile

    path = Path(path)
    shape = reference.shape if reference is not None else spectrum.grid.shape
    k, est = radial_profile(spectrum.on_grid(shape, rfft=False), n_shells)
    ncols = 2 if reference is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5 * ncols, 3.6), squeeze=False)
    ax = axes[0, 0]
    ax.plot(k, est, marker="o", label="estimated from the tomogram")
    if reference is not None:
        _, true = radial_profile(periodogram(_to_numpy(reference)), n_shells)
        ax.plot(k, true, marker="s", label="true noise (reference)")
        ratio = axes[0, 1]
        ratio.plot(k, est / np.maximum(true, 1e-12), marker="o")
        ratio.axhline(1.0, color="k", lw=0.8)
        ratio.set_xlabel("|k| (cycles/voxel)")
        ratio.set_ylabel("estimated / true")
        ratio.set_title("per-shell error")
    edge = spectrum.info.get("signal_edge")
    if edge is not None and np.isfinite(edge):  # where the tomogram's measurable signal ends
        ax.axvline(float(edge), color="0.4", ls="--", lw=0.9, label=f"signal measurable up to {float(edge):.2f}")
    ax.set_yscale("log")
    ax.set_xlabel("|k| (cycles/voxel)")
    ax.set_ylabel("noise power per voxel")
    ax.set_title("noise power spectrum (shell means)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        return _write_figure(fig, path, "png", 110)
    finally:
        plt.close(fig)
