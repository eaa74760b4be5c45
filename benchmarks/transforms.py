"""Throughput of the pairing transforms and memory of the Fourier sample pool.

Run: ``python benchmarks/transforms.py [--quick] [--threads N] [--pool-kind seed|split]``

Prints:

* pairs (input/target samples) per second for 96^3 patches: real-space Bernoulli masks,
  Fourier ``patch`` and ``split`` modes (on 96^3 + 2 * 16 margin = 128^3 patches), and
  ``pool`` mode (reads from a pool built on the tomogram below), M = 6 pairs per call;
* the pool's build time and peak memory for a 512 x 512 x 200 tomogram (``--quick``:
  256 x 256 x 100 and S = 12) against the naive approach (S float32 tomograms in RAM).
  Peak memory is MEASURED as the rise of the process's peak resident set size (Linux
  ``VmHWM``, reset through ``/proc/self/clear_refs`` right before the build, the tomogram
  already in RAM); the naive figure is COMPUTED analytically as ``S * 4 * Z * Y * X`` bytes (it
  would not fit this machine), which is a lower bound for the naive approach (it also needs
  the spectrum).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from cet_monai.transforms import (  # noqa: E402
    FourierSamplePool,
    RandBernoulliMaskd,
    RandFourierPaird,
    RandTomogramPatchd,
)

MIB = 2**20


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rate(fn, calls: int, pairs_per_call: int) -> tuple[float, float]:
    fn()  # warm-up (caches, FFT plans)
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    dt = time.perf_counter() - t0
    return calls * pairs_per_call / dt, dt / calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller tomogram, fewer pool samples and calls")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: faster than 2 on a shared 2-core machine)"
    )
    ap.add_argument("--pool-kind", choices=["seed", "split"], default="seed", help="kind of pool to build (default seed)")
    ap.add_argument("--pool-samples", type=int, default=None, help="pool size S (default 40; 12 with --quick)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    shape = (100, 256, 256) if args.quick else (200, 512, 512)
    s_pool = args.pool_samples or (12 if args.quick else 40)
    calls = 3 if args.quick else 8
    m = 6
    patch, margin = 96, 16
    print(f"torch {torch.__version__}, {args.threads} threads, device cpu; M = {m} pairs per call")

    # warm up (page in FFT/numpy code, so that code pages are not counted as pool memory)
    FourierSamplePool(np.zeros((1, 16, 16, 16), np.float32), num_samples=2, storage="ram")
    rng = np.random.RandomState(0)
    tomo = rng.standard_normal((1,) + shape).astype(np.float32)
    base_rss = _status("VmRSS")

    # ---------------------------------------------------------------- pool memory
    can_reset = _reset_peak()
    t0 = time.perf_counter()
    pool = FourierSamplePool(tomo, num_samples=s_pool, kind=args.pool_kind, seed=0, storage="memmap")
    build_s = time.perf_counter() - t0
    peak_rise = _status("VmHWM") - base_rss
    naive = s_pool * 4 * int(np.prod(shape))
    print(
        f"\n{args.pool_kind} pool: tomogram {shape[0]}x{shape[1]}x{shape[2]} (Z,Y,X) = {tomo.nbytes / MIB:.0f} MiB "
        f"float32, S = {s_pool}"
    )
    print(f"  build time           {build_s:8.1f} s ({build_s / s_pool:.2f} s per sample)")
    print(f"  storage              {pool.nbytes / MIB:8.0f} MiB float16 memmap on disk ({pool.path})")
    if can_reset:
        print(f"  peak RSS rise        {peak_rise / MIB:8.0f} MiB (measured, VmHWM over the RSS with the tomogram loaded)")
    else:
        print("  peak RSS rise        (could not reset VmHWM; not measured)")
    print(f"  naive (S x float32)  {naive / MIB:8.0f} MiB (computed)")
    if can_reset:
        print(f"  ratio measured/naive {peak_rise / naive:8.3f}   (storage='ram' would add S x float16 = 0.5 of naive)")

    # ---------------------------------------------------------------- throughput
    print(f"\nthroughput, {patch}^3 patches (per-patch Fourier modes read {patch + 2 * margin}^3 with margin {margin}):")
    sampler = RandTomogramPatchd("image", patch_size=patch, num_samples=1, margin=margin).set_random_state(1)
    sampler0 = RandTomogramPatchd("image", patch_size=patch, num_samples=1).set_random_state(1)
    item_margin = sampler({"image": tomo})[0]
    item = sampler0({"image": tomo})[0]

    tests = [
        ("real-space Bernoulli", RandBernoulliMaskd("image", num_samples=m).set_random_state(0), item),
        ("fourier patch (seed masks)", RandFourierPaird("image", mode="patch", num_samples=m).set_random_state(0), item_margin),
        ("fourier split (per patch)", RandFourierPaird("image", mode="split", num_samples=m).set_random_state(0), item_margin),
        (f"fourier pool ({args.pool_kind} pool)", RandFourierPaird("image", mode="pool", pool=pool, num_samples=m).set_random_state(0), None),
    ]
    for name, t, it in tests:
        if it is None:  # pool mode: a new position every call (sampler included in the timing)
            def fn(t=t):
                return t(sampler0({"image": tomo})[0])
        else:
            def fn(t=t, it=it):
                return t(it)
        rate, per_call = _rate(fn, calls, m)
        print(f"  {name:28s} {rate:8.1f} pairs/s  ({per_call * 1000:7.1f} ms per call of {m})")
    rate, per_call = _rate(lambda: sampler({"image": tomo}), calls, 1)
    print(f"  {'patch sampling (128^3 read)':28s} {rate:8.1f} patches/s")
    pool.close()


if __name__ == "__main__":
    main()
