"""One model for several tomograms (``cet-monai denoise --shared-model``) against one model each.

Simulates ``--seeds`` tomograms of one setting (as ``single_tomogram.py``: the same
reconstruction and SNR, independent phantoms and noise: one "session"), writes them as MRC files
and runs the real command line on the folder: ``cet-monai denoise DIR -o OUT --shared-model``
(one training budget for all). Then, unless ``--no-own``, the same command without
``--shared-model`` (one model per tomogram, N budgets). Prints, per tomogram, the PSNR gain over
its PSNR-best Gaussian filter (dB) and SSIM of both, and the seconds of each command.

    python benchmarks/shared_model.py --setting wbp --snr 0.05 --seeds 0 1 2 --threads 1

Time is measured with ``--threads`` torch threads; run nothing else meanwhile for timings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from single_tomogram import SETTINGS  # noqa: E402

from cet_monai.data import simulate_tomogram  # noqa: E402
from cet_monai.io import read_volume, write_volume  # noqa: E402
from cet_monai.metrics import best_gaussian, psnr, ssim  # noqa: E402


def _denoise(folder: Path, out: Path, threads: int, extra: list[str]) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "cet_monai.cli", "denoise", str(folder), "-o", str(out), "--device", "cpu", *extra]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setting", default="wbp", choices=list(SETTINGS))
    p.add_argument("--snr", type=float, default=0.05)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--iterations", type=int, default=None, help="training iterations (default: the method's budget)")
    p.add_argument("--no-own", action="store_true", help="skip the one-model-per-tomogram run")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    extra = ["--iterations", str(args.iterations)] if args.iterations else []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "session"
        folder.mkdir()
        sims = {}
        for seed in args.seeds:
            sim = simulate_tomogram(shape=(64, 128, 128), snr=args.snr, seed=seed, **SETTINGS[args.setting])
            write_volume(folder / f"tomo_{seed}.mrc", sim.noisy.astype(np.float32), voxel_size=10.0)
            sims[seed] = sim
        runs = {"shared": ["--shared-model"]} if args.no_own else {"shared": ["--shared-model"], "own": []}
        seconds = {}
        for name, flags in runs.items():
            seconds[name] = _denoise(folder, Path(tmp) / name, args.threads, extra + flags)
        for seed, sim in sims.items():
            gauss = best_gaussian(sim.noisy, sim.clean)
            row = {"setting": args.setting, "snr": args.snr, "seed": seed}
            for name in runs:
                out = np.asarray(read_volume(Path(tmp) / name / f"tomo_{seed}_denoised.mrc")[0], np.float32)
                row[f"{name}_gain_db"] = round(float(psnr(out, sim.clean) - gauss["psnr"].value), 3)
                row[f"{name}_ssim"] = round(float(ssim(out, sim.clean)), 4)
            print(json.dumps(row), flush=True)
        print(json.dumps({"seconds": {k: round(v) for k, v in seconds.items()}, "tomograms": len(sims)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
