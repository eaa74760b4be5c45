"""Peak memory and time of `cet-monai denoise` on large tomograms, and how they grow with size.

For each size a float32 MRC tomogram of (Z, 512, 512) voxels is written (plane by plane: this
script itself stays small), then the real command line runs on it in a fresh process:

    cet-monai denoise big.mrc -o big_denoised.mrc --iterations N ...

Its peak resident memory is the kernel's ``ru_maxrss`` of that process (it counts the pages of
memory-mapped files it touched, so the figure includes what mmap reads and writes cost), read by
a small wrapper process that does nothing else. The growth exponents are the slopes of
log(peak memory above the libraries' baseline) and log(seconds) against log(voxels), fitted
over the sizes. The target (issue "Scale"): a 1 GiB tomogram with peak RSS <= 2.5 GiB.

    python benchmarks/large_tomogram.py                       # 0.125, 0.25, 0.5 and 1 GiB
    python benchmarks/large_tomogram.py --gib 1 --iterations 50
    python benchmarks/large_tomogram.py --quick               # 32 and 64 MiB, a smoke run

Training and inference budgets are cut (``--iterations``, one noise draw per window, a narrow
network) because memory, not quality, is measured here; the data are noise with a few blobs
(content does not change memory). The CSV ``--csv`` keeps one row per size.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

WRAPPER = (
    "import resource, subprocess, sys, time\n"
    "t0 = time.perf_counter()\n"
    "rc = subprocess.run(sys.argv[1:]).returncode\n"
    "print('RESULT', rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t0)\n"
)


def write_tomogram(path: str, z: int, yx: int = 512, seed: int = 0) -> None:
    """A (z, yx, yx) float32 MRC of noise plus smooth blobs, written plane by plane."""
    import mrcfile

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:yx, :yx]
    centres = rng.uniform(0, yx, size=(24, 2))
    with mrcfile.new_mmap(path, shape=(z, yx, yx), mrc_mode=2, overwrite=True) as mrc:
        mrc.voxel_size = 10.0
        for k in range(z):
            plane = rng.standard_normal((yx, yx), dtype=np.float32)
            for cy, cx in centres[(k // 16) % 3 :: 3]:
                plane += 0.5 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 12.0**2)).astype(np.float32)
            mrc.data[k] = plane
            if k % 64 == 63:
                mrc.flush()


def baseline_kib() -> int:
    """Peak RSS of a process that imports what the command imports and does nothing else."""
    code = "import torch, monai, ignite, cet_monai.cli, cet_monai.workflows, cet_monai.engines"
    out = subprocess.run([sys.executable, "-c", WRAPPER, sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.split("RESULT")[1].split()[1])


def run(path: str, out: str, args) -> tuple[int, int, float]:
    cmd = [sys.executable, "-m", "cet_monai.cli", "denoise", path, "-o", out, "--overwrite", "--no-resume",
           "--iterations", str(args.iterations), "--versions", "1", "--set", f"epoch_length={args.iterations}",
           "--set", "network_def#features=[8,16]", "--device", args.device, "--set", "progress=false"]
    res = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True)
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT")]
    if not line:
        raise RuntimeError(res.stderr[-3000:])
    rc, kib, seconds = line[-1].split()[1:]
    if int(rc) != 0:
        raise RuntimeError(f"cet-monai denoise exited {rc}:\n{res.stderr[-3000:]}")
    return int(rc), int(kib), float(seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", type=float, nargs="+", default=[0.125, 0.25, 0.5, 1.0], help="tomogram sizes (GiB of float32)")
    ap.add_argument("--quick", action="store_true", help="32 and 64 MiB only")
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--device", default="cuda" if __import__("torch").cuda.is_available() else "cpu")
    ap.add_argument("--workdir", default=None, help="where the tomograms go (default: a temporary folder; needs ~2.2x the largest)")
    ap.add_argument("--csv", default=None)
    args = ap.parse_args()
    sizes = [1 / 32, 1 / 16] if args.quick else args.gib
    base = baseline_kib()
    print(f"libraries alone (import torch, monai, cet_monai): peak RSS {base / 1024:.0f} MiB")
    print("| tomogram | GiB | peak RSS (GiB) | above libraries (GiB) | x tomogram | seconds | target |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for gib in sizes:
            z = max(32, int(round(gib * 2**30 / 4 / 512 / 512)))
            path, out = os.path.join(tmp, f"t{z}.mrc"), os.path.join(tmp, f"t{z}_denoised.mrc")
            write_tomogram(path, z)
            _, kib, seconds = run(path, out, args)
            size = z * 512 * 512 * 4 / 2**30
            peak, above = kib / 2**20, (kib - base) / 2**20
            target = "met" if peak <= 2.5 else "MISSED"
            target = target if abs(size - 1.0) < 1e-6 else ""
            print(f"| {z}x512x512 | {size:.3f} | {peak:.2f} | {above:.2f} | {above / size:.2f} | {seconds:.0f} | {target} |", flush=True)
            rows.append({"z": z, "voxels": z * 512 * 512, "gib": size, "peak_rss_gib": peak, "above_libraries_gib": above, "seconds": seconds})
            for p in (path, out):
                if os.path.exists(p):
                    os.remove(p)
    if len(rows) >= 2:
        v = np.log([r["voxels"] for r in rows])
        mem = np.polyfit(v, np.log([max(r["above_libraries_gib"], 1e-3) for r in rows]), 1)[0]
        sec = np.polyfit(v, np.log([r["seconds"] for r in rows]), 1)[0]
        print(f"\ngrowth exponents over {len(rows)} sizes: memory above the libraries ~ voxels^{mem:.2f}, time ~ voxels^{sec:.2f}")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
