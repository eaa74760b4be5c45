"""The default denoiser against the best Gaussian filter, Topaz 3D and even/odd Noise2Noise.

For each simulated setting (reconstruction x SNR x seed) prints one row per method: PSNR gain over
the PSNR-best Gaussian filter (dB), SSIM (and the SSIM-best Gaussian's), the least-squares slope
of clean on the output WITHOUT any fit (intensity scale kept: 1.0), and seconds (fit + denoise).
Scores are ``cet_monai.metrics`` (PSNR/SSIM after a least-squares scale/offset fit, peak = data
range of the clean reconstruction). Then the mean and spread over seeds per setting.

Settings (``--settings``): ``wbp`` (weighted back-projection, the embedded default's
reconstruction), ``hann`` (Hann-apodised ramp: a SIRT-like roll-off of high frequencies),
``cosine-ctf`` (cosine-apodised ramp, CTF 3 um underfocus) and ``membranes`` (another phantom:
the real vesicle membrane geometry of ``../shared/data/real/vesicle_membrane_labels.mrc``, no
random sheet, more complexes); ``thickening`` (weighted back-projection of a lamella that
thickens along X: the noise standard deviation doubles from one end to the other, a strong case);
``mild-thickening`` (the same, 1.4x from one end to the other); ``binned`` (20 A voxels, as a
2x-binned tomogram: the membranes' 40 A bilayer spacing sits at Nyquist, so some signal reaches
the highest shells); ``wedge45`` (+-45 deg tilt series in 3 deg steps: a wider missing wedge).

    python benchmarks/single_tomogram.py --settings wbp --snr 0.05 --seeds 0 --methods recorrupted
    python benchmarks/single_tomogram.py --set iterations=800 --set alpha=0.5     # bundle overrides
    python benchmarks/single_tomogram.py --csv out.csv                            # the docs' table

Time is measured with ``--threads`` torch threads (default 2, both cores of the CI machine);
run nothing else meanwhile.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cet_monai.data import simulate_tomogram  # noqa: E402
from cet_monai.metrics import best_gaussian, psnr, ssim  # noqa: E402

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
SETTINGS = {
    "wbp": {},
    "hann": {"apodization": "hann"},
    "cosine-ctf": {"apodization": "cosine", "ctf": True},
    "thickening": {"noise_gradient": 2.0},
    "mild-thickening": {"noise_gradient": 1.4},
    "binned": {"voxel_size": 20.0},  # 20 A voxels: the membranes' bilayer spacing (40 A) sits at Nyquist
    "wedge45": {"tilt_range": 45.0, "tilt_step": 3.0},  # +-45 deg in 3 deg steps: a wider missing wedge
    "membranes": {"membrane_labels": str(REAL / "vesicle_membrane_labels.mrc"), "labels_voxel_size": 10.0, "n_complexes": 40},
}
METHODS = ("recorrupted", "fourier", "topaz", "n2n")


def slope(out: np.ndarray, clean: np.ndarray) -> float:
    """Least-squares slope of ``clean`` on ``out`` (1.0: the output is on the clean intensity scale)."""
    o = out.astype(np.float64).ravel() - out.mean()
    c = clean.astype(np.float64).ravel() - clean.mean()
    return float((o * c).sum() / max((o * o).sum(), 1e-30))


def summary(rows: list[dict]) -> str:
    """Markdown table: mean (min .. max) over seeds per setting, SNR and method."""
    lines = ["| setting | SNR | method | seeds | gain over best Gaussian, dB: mean (min .. max) | SSIM: mean (min .. max) | "
             "best-SSIM Gaussian | slope | seconds |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    order = {m: i for i, m in enumerate(METHODS)}
    keys = sorted({(r["setting"], r["snr"], r["method"]) for r in rows}, key=lambda k: (list(SETTINGS).index(k[0]), k[1], order[k[2]]))
    for setting, snr, method in keys:
        sel = [r for r in rows if (r["setting"], r["snr"], r["method"]) == (setting, snr, method)]
        g, s = np.array([r["gain_db"] for r in sel]), np.array([r["ssim"] for r in sel])
        gs = np.mean([r["gaussian_ssim"] for r in sel])
        sl = np.mean([r["slope"] for r in sel])
        t = np.mean([r["seconds"] for r in sel])
        lines.append(f"| {setting} | {snr:g} | {method} | {len(sel)} | {g.mean():+.2f} ({g.min():+.2f} .. {g.max():+.2f}) | "
                     f"{s.mean():.3f} ({s.min():.3f} .. {s.max():.3f}) | {gs:.3f} | {sl:.2f} | {t:.0f} |")
    return "\n".join(lines)


def run(method: str, sim, seed: int, overrides: dict):
    import denoisers as D  # noqa: E402  (benchmarks/denoisers.py: Topaz and the trained bundles)

    from cet_monai.workflows import denoise_volume

    t0 = time.perf_counter()
    if method == "topaz":
        out, _ = D.denoise("topaz", sim.noisy)
    elif method == "n2n":
        out = denoise_volume(sim.noisy, method="n2n", seed=seed, even=sim.even, odd=sim.odd, **overrides.get("n2n", {}))
    else:
        out = denoise_volume(sim.noisy, method=method, seed=seed, **overrides.get(method, {}))
    return np.asarray(out, np.float32), time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", nargs="+", default=["wbp"], choices=list(SETTINGS))
    p.add_argument("--snr", type=float, nargs="+", default=[0.05])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--shape", type=int, nargs=3, default=(64, 128, 128))
    p.add_argument("--methods", nargs="+", default=["recorrupted"], choices=METHODS)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="bundle override of the recorrupted method (VALUE as YAML); METHOD:KEY=VALUE for another method")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--csv", default=None, help="append the rows to this CSV file")
    p.add_argument("--summarize", nargs="+", default=None, metavar="CSV",
                   help="print the mean / spread table of earlier runs' CSV files and exit (runs nothing)")
    args = p.parse_args(argv)
    if args.summarize:
        rows = []
        for path in args.summarize:
            with open(path, newline="") as f:
                rows += [{k: (v if k in ("setting", "method") else float(v)) for k, v in r.items()} for r in csv.DictReader(f)]
        print(summary(rows))
        return 0
    torch.set_num_threads(args.threads)
    overrides: dict[str, dict] = {m: {} for m in METHODS}
    for item in args.overrides:
        key, value = item.split("=", 1)
        method, _, key = key.rpartition(":")
        overrides[method or "recorrupted"][key] = yaml.safe_load(value)
    rows = []
    print("| setting | SNR | seed | method | gain over best Gaussian (dB) | SSIM | best-SSIM Gaussian | slope | s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for setting in args.settings:
        for snr in args.snr:
            for seed in args.seeds:
                sim = simulate_tomogram(shape=tuple(args.shape), snr=snr, seed=seed, **SETTINGS[setting])
                gauss = best_gaussian(sim.noisy, sim.clean)
                for method in args.methods:
                    out, seconds = run(method, sim, seed, overrides)
                    row = {"setting": setting, "snr": snr, "seed": seed, "method": method,
                           "gain_db": psnr(out, sim.clean) - gauss["psnr"].value, "ssim": ssim(out, sim.clean),
                           "gaussian_psnr": gauss["psnr"].value, "gaussian_ssim": gauss["ssim"].value,
                           "slope": slope(out, sim.clean), "seconds": seconds}
                    rows.append(row)
                    if args.csv:  # row by row: a run stopped later keeps what it measured
                        new = not Path(args.csv).exists()
                        with open(args.csv, "a", newline="") as f:
                            w = csv.DictWriter(f, fieldnames=list(row))
                            if new:
                                w.writeheader()
                            w.writerow(row)
                    print(f"| {setting} | {snr} | {seed} | {method} | {row['gain_db']:+.2f} | {row['ssim']:.3f} | "
                          f"{row['gaussian_ssim']:.3f} | {row['slope']:.2f} | {seconds:.0f} |", flush=True)
    print()
    print(summary(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
