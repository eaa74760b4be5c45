"""Denoising quality of cet-monai against its peers, side by side in one run.

Simulated tomograms (``cet_monai.data.simulate_tomogram``, +-60 deg tilt series, so with the
missing wedge) at several SNRs, scored against their clean reconstruction:

* PSNR and SSIM after a least-squares fit of scale and offset (``cet_monai.metrics.quality``);
* Fourier shell correlation with the clean tomogram: resolution where it falls below 0.5 and
  0.143 (angstrom);
* seconds of training and of inference.

Methods (``benchmarks/denoisers.py``): raw; Gaussian filter at its best sigma (chosen with the
clean reference, separately for PSNR and SSIM); BM4D and Topaz-Denoise 3D (pretrained
unet-3d-10a) when installed (``pip install -e .[peers]``); our S2S and F2F (pool, patch, split
sampling); Noise2Noise on the even/odd halves with our network (the cryoCARE / DeepDeWedge
family's upper bound: those tools need the halves too).

Held-out Fourier check (for data without ground truth). The tomogram's Fourier coefficients are
split into complementary Hermitian-consistent halves ``m`` / ``1 - m``; a method sees only
``irfftn(2 F m)`` and its output is correlated, shell by shell, with the tomogram's own
coefficients on ``1 - m``, which the method never saw. The noise there is independent of the
input, so the expected correlation is ``corr(output, signal) * sqrt(SNR / (1 + SNR))`` per shell:
it only rises with recovered signal. It is run on one simulated SNR (to check it ranks the
methods as the true PSNR does) and on the real tomograms in ``../shared/data/real``.
A shift-invariant linear filter (raw, Gaussian) is diagonal in Fourier space and scores exactly
0: the check cannot rank linear filters.

    python benchmarks/quality.py --figures docs                       # the run in docs/benchmarks.md
    python benchmarks/quality.py --quick                              # one SNR, 32x64x64, 20 iterations
    python benchmarks/quality.py --snr 0.05 --methods raw gaussian f2f-split --no-real

Results: Markdown tables on stdout, ``quality.csv`` / ``quality.json`` / figures in ``--out``.
Each (data, method) result is cached in ``--out/cache`` (``--fresh`` recomputes).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import denoisers as D  # noqa: E402

REAL_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
REAL_FILES = ("13pf_MT.tif", "14pf_MT.tif")
HELDOUT_METHODS = ("raw", "gaussian", "bm4d", "topaz", "recorrupted", "f2f-split", "n2n")
REAL_METHODS = ("raw", "gaussian", "bm4d", "topaz", "recorrupted", "f2f-split")


# ----------------------------------------------------------------------------- held-out Fourier check
def heldout_mask(shape, seed: int = 0) -> np.ndarray:
    """Bool half-spectrum mask ``m`` (``(Z, Y, X//2+1)``, True = shown to the method), Bernoulli(0.5)
    per coefficient, Hermitian-consistent (``cet_monai.transforms.split_fourier_mask``); DC shown."""
    from cet_monai.transforms.fourier import split_fourier_mask

    m = split_fourier_mask(np.random.RandomState(seed), shape, 0.5).numpy().copy()
    m[0, 0, 0] = True
    return m


def heldout_input(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``irfftn(2 F m)`` with the DC coefficient kept as is: the half of ``x`` a method is given
    (the factor 2 restores the signal's amplitude)."""
    f = np.fft.rfftn(np.asarray(x, np.float64))
    g = 2.0 * f * m
    g[0, 0, 0] = f[0, 0, 0]
    return np.fft.irfftn(g, s=x.shape, axes=(0, 1, 2)).astype(np.float32)


def _shells(shape, n_shells):
    freqs = np.meshgrid(np.fft.fftfreq(shape[0]), np.fft.fftfreq(shape[1]), np.fft.rfftfreq(shape[2]), indexing="ij")
    radius = np.sqrt(sum(f * f for f in freqs))
    return np.minimum((radius / 0.5 * n_shells).astype(np.int64), n_shells)


def heldout_correlation(y: np.ndarray, x: np.ndarray, m: np.ndarray, voxel_size: float, n_shells: int | None = None):
    """Correlation of ``y`` with ``x`` on the held-out coefficients ``~m`` (DC excluded).

    Returns ``(frequency 1/A, per-shell correlation, overall correlation)``; shells as in
    :func:`cet_monai.metrics.fourier_shell_correlation` (spherical in cycles/voxel up to Nyquist).
    """
    shape = x.shape
    n_shells = n_shells or min(shape) // 2
    fy, fx = np.fft.rfftn(np.asarray(y, np.float64)), np.fft.rfftn(np.asarray(x, np.float64))
    held = ~m
    held[0, 0, 0] = False
    shell = _shells(shape, n_shells)
    keep = held & (shell < n_shells)
    s = shell[keep]
    cross = (fy * np.conj(fx)).real[keep]
    py, px = (np.abs(fy) ** 2)[keep], (np.abs(fx) ** 2)[keep]
    c = np.bincount(s, cross, minlength=n_shells)
    a, b = np.bincount(s, py, minlength=n_shells), np.bincount(s, px, minlength=n_shells)
    # an output with (numerically) nothing on the held-out coefficients (raw, any circulant filter)
    # scores 0: its correlation would be round-off divided by round-off
    total = float((np.abs(fy) ** 2).sum() - np.abs(fy[0, 0, 0]) ** 2)
    a = np.where(a > 1e-9 * total, a, np.inf)
    curve = c / np.sqrt(np.maximum(a * b, 1e-300))
    overall = float(cross.sum() / np.sqrt(py.sum() * px.sum())) if py.sum() > 1e-9 * total else 0.0
    freq = (np.arange(n_shells) + 0.5) / n_shells * 0.5 / voxel_size
    return freq, curve, overall


def spearman(a, b) -> float:
    """Spearman rank correlation of two equal-length sequences (ties get their mean rank)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


# ----------------------------------------------------------------------------- running and caching
def _cached(cache: Path | None, key: str, fresh: bool, fn):
    """``fn() -> (volume, info)``, stored as ``key.npy`` / ``key.json`` in ``cache``."""
    if cache is not None and not fresh and (cache / f"{key}.json").exists():
        info = json.loads((cache / f"{key}.json").read_text())
        vol = np.load(cache / f"{key}.npy") if (cache / f"{key}.npy").exists() else None
        return vol, info
    vol, info = fn()
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        if vol is not None:
            np.save(cache / f"{key}.npy", vol.astype(np.float32))
        (cache / f"{key}.json").write_text(json.dumps(info))
    return vol, info


def run_method(method, noisy, cache, key, fresh, **kwargs):
    """``(volume or None, info)``; ``info["status"]`` is ``ok``, ``not installed`` or ``failed: ...``."""

    def fn():
        try:
            vol, info = D.denoise(method, noisy, **kwargs)
            info["status"] = "ok"
            return vol, info
        except D.NotInstalled as e:
            return None, {"status": f"not installed ({e})"}

    return _cached(cache, key, fresh, fn)


def _fmt(v, spec):
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-" if v is None else str(v)
    return format(v, spec)


def markdown(rows, columns):
    """Markdown table of ``rows`` (dicts); ``columns`` = ``[(header, key, format spec)]``."""
    out = ["| " + " | ".join(h for h, _, _ in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        out.append("| " + " | ".join(_fmt(r.get(k), f) if f else str(r.get(k, "")) for _, k, f in columns) + " |")
    return "\n".join(out)


QUALITY_COLUMNS = [("SNR", "snr", ""), ("method", "method", ""), ("PSNR (dB)", "psnr", ".2f"), ("gain (dB)", "gain", "+.2f"),
                   ("SSIM", "ssim", ".3f"), ("FSC 0.5 (A)", "fsc05", ".1f"), ("FSC 0.143 (A)", "fsc0143", ".1f"),
                   ("train (s)", "train_s", ".0f"), ("infer (s)", "infer_s", ".1f"), ("total (s)", "total_s", ".0f"), ("notes", "notes", "")]
HELDOUT_COLUMNS = [("data", "data", ""), ("method", "method", ""), ("held-out corr", "heldout", ".4f"),
                   ("held-out corr with clean", "heldout_clean", ".4f"), ("PSNR of the half-input output (dB)", "psnr_half", ".2f"),
                   ("PSNR on full input (dB)", "psnr_full", ".2f"), ("total (s)", "total_s", ".0f"), ("notes", "notes", "")]


def evaluate_simulated(snr, args, cache, figures):
    """All methods on one simulated tomogram; returns (rows, volumes, sim)."""
    from cet_monai.data import simulate_tomogram
    from cet_monai.metrics import best_gaussian, fourier_shell_correlation, fsc_resolution, quality

    shape, vs = tuple(args.shape), 10.0
    sim = simulate_tomogram(shape=shape, voxel_size=vs, snr=snr, seed=args.seed)
    tag = f"sim{'x'.join(map(str, shape))}_snr{snr}_seed{args.seed}"
    raw_psnr = quality(sim.noisy, sim.clean)["psnr"]
    rows, vols = [], {"clean": sim.clean, "raw": sim.noisy}
    for method in args.methods:
        extra, notes = {}, ""
        if method == "s2s" and snr not in args.s2s_snr:
            rows.append({"data": tag, "snr": snr, "method": method, "notes": "not run at this SNR (--s2s-snr)"})
            continue
        if method == "gaussian":
            t0 = time.perf_counter()
            best = best_gaussian(sim.noisy, sim.clean)
            sweep_s = time.perf_counter() - t0
            extra["sigma"] = best["psnr"].sigma
            notes = f"sigma {best['psnr'].sigma:g} (PSNR) / {best['ssim'].sigma:g} (SSIM) vox, chosen with the clean reference"
        if method in D.TRAINED:
            extra.update(iterations=args.iterations, seed=args.seed, even=sim.even, odd=sim.odd)
            key = f"{tag}_{method}_it{args.iterations}"
        else:
            key = f"{tag}_{method}"
        vol, info = run_method(method, sim.noisy, cache, key, args.fresh, **extra)
        row = {"data": tag, "snr": snr, "method": method, "notes": notes}
        if info["status"] != "ok":
            row["notes"] = info["status"]
            rows.append(row)
            print(f"  {method}: {info['status']}", flush=True)
            continue
        q = quality(vol, sim.clean)
        if method == "gaussian":  # SSIM at its own best sigma
            q["ssim"] = best["ssim"].value
        f, c = fourier_shell_correlation(vol, sim.clean, voxel_size=vs)
        row.update(psnr=q["psnr"], gain=q["psnr"] - raw_psnr, ssim=q["ssim"], fsc05=fsc_resolution(f, c, 0.5),
                   fsc0143=fsc_resolution(f, c, 0.143), train_s=info["train_s"], infer_s=info["infer_s"],
                   total_s=info["train_s"] + info["infer_s"], fsc_curve=c.tolist(), fsc_freq=f.tolist())
        if method == "bm4d":
            row["notes"] = f"sigma_psd {info['sigma_psd']:.3f} (MAD, normalised units)"
        if method in D.TRAINED:
            row["notes"] = f"{args.iterations} iterations"
        if method == "gaussian":
            row["notes"] += f"; sweep of 11 sigmas {sweep_s:.0f} s"
        rows.append(row)
        vols[method] = vol
        print(f"  snr {snr} {method}: PSNR {q['psnr']:.2f} dB SSIM {q['ssim']:.3f} "
              f"({row['total_s']:.0f} s)", flush=True)
    if figures:
        from cet_monai.visualize import save_orthoslices

        save_orthoslices(Path(figures) / f"benchmark_slices_snr{snr}.png", vols, vs,
                         title=f"simulated {'x'.join(map(str, shape))}, SNR {snr}: central slices")
    return rows, vols, sim


def heldout_rows(name, x, voxel_size, methods, args, cache, sigma, clean=None, full_psnr=None, even=None, odd=None):
    """The held-out Fourier check of ``methods`` on tomogram ``x`` (clean optional: its ceiling row)."""
    from cet_monai.metrics import psnr

    m = heldout_mask(x.shape, args.seed)
    xin = heldout_input(x, m)
    extra_all = {}
    if even is not None:
        extra_all = {"even": heldout_input(even, m), "odd": heldout_input(odd, m)}
    rows, curves = [], {}
    if clean is not None:
        f, c, o = heldout_correlation(clean, x, m, voxel_size)
        rows.append({"data": name, "method": "clean (ceiling)", "heldout": o, "heldout_clean": 1.0,
                     "notes": "the clean tomogram itself: the most any method can score"})
        curves["clean (ceiling)"] = c
    for method in methods:
        extra = {}
        if method == "gaussian":
            extra["sigma"] = sigma
        if method in D.TRAINED:
            if method == "n2n" and even is None:
                continue
            extra.update(iterations=args.iterations, seed=args.seed, **(extra_all if method == "n2n" else {}))
        key = f"{name}_heldout_{method}" + (f"_it{args.iterations}" if method in D.TRAINED else "") + (f"_s{sigma:g}" if method == "gaussian" else "")
        vol, info = run_method(method, xin, cache, key, args.fresh, **extra)
        row = {"data": name, "method": method, "notes": ""}
        if info["status"] != "ok":
            row["notes"] = info["status"]
            rows.append(row)
            continue
        f, c, o = heldout_correlation(vol, x, m, voxel_size)
        curves[method] = c
        row.update(heldout=o, total_s=info["train_s"] + info["infer_s"])
        if method == "gaussian":
            row["notes"] = f"sigma {sigma:g} vox"
        if clean is not None:
            row["heldout_clean"] = heldout_correlation(vol, clean, m, voxel_size)[2]
            row["psnr_half"] = psnr(vol, clean)
        if full_psnr is not None:
            row["psnr_full"] = full_psnr.get(method)
        rows.append(row)
        print(f"  held-out {name} {method}: {o:.4f} ({row['total_s']:.0f} s)", flush=True)
    return rows, (f, curves)


def plot_curves(path, freq, curves, title, ylabel):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    for name, c in curves.items():
        ax.plot(freq, c, label=name)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("spatial frequency (1/A)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_psnr_time(path, rows):
    """One panel per SNR: PSNR against seconds (log) per method, raw as a dashed line."""
    from matplotlib.figure import Figure

    snrs = sorted({r["snr"] for r in rows})
    fig = Figure(figsize=(4.2 * len(snrs), 4.0))
    markers = dict(zip(D.METHODS, "o^sDv*PXh"))
    for i, snr in enumerate(snrs):
        ax = fig.add_subplot(1, len(snrs), i + 1)
        for r in rows:
            if r["snr"] != snr or r.get("psnr") is None:
                continue
            if r["method"] == "raw":
                ax.axhline(r["psnr"], color="grey", lw=0.8, ls="--")
                ax.annotate("raw", (0.02, r["psnr"]), xycoords=("axes fraction", "data"), fontsize=7, va="bottom")
                continue
            t = max(r["total_s"], 0.01)
            ax.scatter(t, r["psnr"], marker=markers.get(r["method"], "o"))
            ax.annotate(r["method"], (t, r["psnr"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("seconds (training + inference, 1 thread)")
        ax.set_ylabel("PSNR (dB) against clean")
        ax.set_title(f"SNR {snr}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} thread(s)), no GPU used"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(
        description="Denoising quality of cet-monai (S2S, F2F pool/patch/split) against raw, the best Gaussian filter, "
        "BM4D, Topaz-Denoise 3D and Noise2Noise on even/odd halves, on simulated tomograms at several SNRs "
        "(PSNR, SSIM, FSC against the clean tomogram) and on real tomograms (held-out Fourier check).",
        epilog="Example: python benchmarks/quality.py --figures docs. Peers that are not installed are reported as such.",
    )
    p.add_argument("--snr", type=float, nargs="*", default=[0.02, 0.05, 0.1], help="SNRs of the simulated tomograms (var(clean)/var(noise))")
    p.add_argument("--shape", type=int, nargs=3, default=[64, 128, 128], metavar=("Z", "Y", "X"), help="simulated tomogram shape (voxels of 10 A)")
    p.add_argument("--methods", nargs="+", default=list(D.METHODS), choices=D.METHODS, help="methods to run")
    p.add_argument("--iterations", type=int, default=100, help="training iterations of the trained methods (the bundles' F2F default)")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulation, of the held-out split and of training")
    p.add_argument("--s2s-snr", type=float, nargs="*", default=[0.02, 0.05, 0.1],
                   help="SNRs at which S2S runs (it is the slowest method: its bundle's inference, 8 versions x 2 passes, "
                   "took ~6 of its ~9 minutes per tomogram on one loaded core)")
    p.add_argument("--heldout-snr", type=float, nargs="*", default=[0.05], help="SNRs on which the held-out Fourier check is validated")
    p.add_argument("--heldout-methods", nargs="+", default=list(HELDOUT_METHODS), choices=D.METHODS,
                   help="methods run through the held-out check on the simulated tomograms")
    p.add_argument("--real", nargs="*", default=None, help=f"real tomograms for the held-out check (default: {', '.join(REAL_FILES)} in {REAL_DIR})")
    p.add_argument("--no-real", action="store_true", help="skip the real tomograms")
    p.add_argument("--real-methods", nargs="+", default=list(REAL_METHODS), choices=D.METHODS[:-1],
                   help="methods run on the real tomograms (raw first; n2n needs halves, which they lack)")
    p.add_argument("--real-sigma", type=float, default=1.75,
                   help="Gaussian sigma (voxels) on the real tomograms, which have no reference to choose it "
                   "(default: the best for PSNR on the simulated SNR 0.05 tomogram in our run)")
    p.add_argument("--threads", type=int, default=1, help="torch / OpenMP threads")
    p.add_argument("--out", default="out/benchmarks/quality", help="folder for quality.csv/.json, figures and the cache")
    p.add_argument("--figures", default=None, help="folder for the PNG figures (default: --out)")
    p.add_argument("--fresh", action="store_true", help="ignore cached results")
    p.add_argument("--quick", action="store_true", help="one SNR (0.05), 32x64x64, 20 iterations, no real data")
    args = p.parse_args(argv)
    if args.quick:
        args.snr, args.shape, args.iterations, args.no_real = [0.05], [32, 64, 64], 20, True
        args.heldout_snr, args.s2s_snr = [0.05], [0.05]
    D.set_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figures = Path(args.figures or out)
    figures.mkdir(parents=True, exist_ok=True)
    cache = out / "cache"
    t_start = time.perf_counter()
    print(f"machine: {machine()}", flush=True)

    rows, heldout, sigma_for_real = [], [], args.real_sigma
    for snr in args.snr:
        srows, vols, sim = evaluate_simulated(snr, args, cache, figures)
        rows += srows
        gauss = [r for r in srows if r["method"] == "gaussian" and r.get("psnr") is not None]
        if snr in args.heldout_snr:
            full = {r["method"]: r.get("psnr") for r in srows}
            sigma = float(gauss[0]["notes"].split()[1]) if gauss else 1.5
            methods = [m for m in args.heldout_methods if m in args.methods]
            hrows, (f, curves) = heldout_rows(srows[0]["data"], sim.noisy, 10.0, methods, args, cache, sigma,
                                             clean=sim.clean, full_psnr=full, even=sim.even, odd=sim.odd)
            heldout += hrows
            plot_curves(figures / f"benchmark_heldout_snr{snr}.png", f, curves,
                        f"held-out Fourier check, simulated SNR {snr}", "correlation on held-out coefficients")
    if rows:
        plot_psnr_time(figures / "benchmark_psnr_time.png", rows)
        for snr in args.snr:
            done = [r for r in rows if r["snr"] == snr and r.get("fsc_curve")]
            if done:
                plot_curves(figures / f"benchmark_fsc_snr{snr}.png", np.array(done[0]["fsc_freq"]),
                            {r["method"]: np.array(r["fsc_curve"]) for r in done},
                            f"FSC against the clean tomogram, simulated SNR {snr}", "FSC")

    real_rows = []
    if not args.no_real:
        from cet_monai.io import read_volume
        from cet_monai.visualize import save_orthoslices

        files = [Path(f) for f in args.real] if args.real else [REAL_DIR / f for f in REAL_FILES]
        for path in files:
            if not path.exists():
                print(f"  {path}: not found, skipped", flush=True)
                continue
            vol, header = read_volume(path)
            x = np.asarray(vol, np.float32)
            vs = float(header.voxel_size[0])
            name = path.stem
            methods = [m for m in args.real_methods if m in args.methods]
            vols = {"raw": x}
            for method in methods:
                if method == "raw":
                    continue
                extra = {"sigma": sigma_for_real} if method == "gaussian" else {}
                if method in D.TRAINED:
                    extra.update(iterations=args.iterations, seed=args.seed)
                key = f"{name}_{method}" + (f"_it{args.iterations}" if method in D.TRAINED else "") + (f"_s{sigma_for_real:g}" if method == "gaussian" else "")
                v, info = run_method(method, x, cache, key, args.fresh, **extra)
                if v is not None:
                    vols[method] = v
                print(f"  {name} {method}: {info['status']} "
                      f"({info.get('train_s', 0) + info.get('infer_s', 0):.0f} s)", flush=True)
            save_orthoslices(figures / f"benchmark_real_{name}.png", vols, vs, title=f"{path.name} (real, {vs / 10:.3f} nm voxels)")
            hrows, (f, curves) = heldout_rows(name, x, vs, methods, args, cache, sigma_for_real)
            real_rows += hrows
            plot_curves(figures / f"benchmark_heldout_{name}.png", f, curves, f"held-out Fourier check, {path.name}",
                        "correlation on held-out coefficients")

    # ---------------------------------------------------------------- tables
    print(f"\n## Quality on simulated tomograms {'x'.join(map(str, args.shape))} (10 A voxels, +-60 deg)\n")
    print(markdown(rows, QUALITY_COLUMNS))
    summary = {}
    if heldout:
        print("\n## Held-out Fourier check on simulated data (validation)\n")
        print(markdown(heldout, HELDOUT_COLUMNS))
        for data in sorted({r["data"] for r in heldout}):
            pts = [r for r in heldout if r["data"] == data and r.get("heldout") is not None and r["method"] not in ("raw", "gaussian", "clean (ceiling)")]
            if len(pts) >= 3:
                summary[data] = {
                    "spearman_heldout_vs_heldout_clean": spearman([r["heldout"] for r in pts], [r["heldout_clean"] for r in pts]),
                    "spearman_heldout_vs_psnr_half": spearman([r["heldout"] for r in pts], [r["psnr_half"] for r in pts]),
                    "spearman_heldout_vs_psnr_full": spearman([r["heldout"] for r in pts], [r["psnr_full"] for r in pts if r.get("psnr_full") is not None])
                    if all(r.get("psnr_full") is not None for r in pts) else None,
                    "methods": [r["method"] for r in pts],
                }
                s = summary[data]
                print(f"\nnon-linear methods {s['methods']}: Spearman rank correlation of the held-out score with the same "
                      f"correlation measured against the clean tomogram {s['spearman_heldout_vs_heldout_clean']:.2f}, with the PSNR of "
                      f"the same half-input outputs {s['spearman_heldout_vs_psnr_half']:.2f}, with the PSNR on the full input "
                      f"{_fmt(s['spearman_heldout_vs_psnr_full'], '.2f')}")
    if real_rows:
        print("\n## Real tomograms: held-out Fourier check (no ground truth)\n")
        print(markdown(real_rows, [c for c in HELDOUT_COLUMNS if c[1] in ("data", "method", "heldout", "total_s", "notes")]))
    print(f"\nwall time of this run: {time.perf_counter() - t_start:.0f} s (cached results count their original seconds above)")

    result = {"machine": machine(), "command": "python benchmarks/quality.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "args": {k: v for k, v in vars(args).items()}, "quality": rows, "heldout": heldout, "heldout_summary": summary,
              "real": real_rows}
    (out / "quality.json").write_text(json.dumps(result, indent=1, default=str))
    with open(out / "quality.csv", "w", newline="") as fh:
        keys = [k for _, k, _ in QUALITY_COLUMNS]
        w = csv.DictWriter(fh, keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    if heldout or real_rows:
        with open(out / "heldout.csv", "w", newline="") as fh:
            keys = [k for _, k, _ in HELDOUT_COLUMNS]
            w = csv.DictWriter(fh, keys, extrasaction="ignore")
            w.writeheader()
            w.writerows(heldout + real_rows)
    return result


if __name__ == "__main__":
    main()
