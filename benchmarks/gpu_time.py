"""One-GPU time from a 512 x 512 x 200 tomogram to its denoised file, with the default method.

Writes a simulated-looking float32 MRC of (200, 512, 512) voxels (noise plus smooth blobs; the
content does not change the time), then runs the real command line with every default:

    cet-monai denoise tomo.mrc -o tomo_denoised.mrc --device cuda

and prints the wall time of the whole command (start-up, training, inference, writing) and the
GPU model. docs/benchmarks.md records the figure with the GPU it ran on.

    python benchmarks/gpu_time.py                 # needs a CUDA GPU
    python benchmarks/gpu_time.py --shape 100 512 512 --device cpu   # the same path on a CPU (slow)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from large_tomogram import write_tomogram  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=(200, 512, 512), metavar=("Z", "Y", "X"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA GPU here: the figure is 'not measured' (run with --device cpu for the CPU path)")
    z, y, x = args.shape
    if y != x:
        sys.exit("square slices only (Y == X)")
    gpu = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU"
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tomo, out = os.path.join(tmp, "tomo.mrc"), os.path.join(tmp, "tomo_denoised.mrc")
        write_tomogram(tomo, z, yx=y)
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "cet_monai.cli", "denoise", tomo, "-o", out, "--device", args.device])
        seconds = time.perf_counter() - t0
        if done.returncode != 0:
            sys.exit(f"cet-monai denoise failed (exit {done.returncode})")
    print(f"{z}x{y}x{x} float32 tomogram -> denoised file, default method, {gpu}: {seconds:.0f} s "
          f"({seconds / 60:.1f} min, start-up, training, inference and writing included)")


if __name__ == "__main__":
    main()
