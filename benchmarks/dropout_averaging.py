"""Does Monte-Carlo dropout averaging help? PSNR / SSIM against T (passes) and K (versions).

Trains a method once through its bundle (``--set`` overrides, e.g. a dropout > 0) on the
simulated default tomogram, then denoises the whole tomogram with every K x T of the grid and
prints PSNR / SSIM against the clean reconstruction (after the usual scale/offset fit), the
slope of clean on the output without a fit (1.0: intensity scale kept), the inference seconds,
and the best Gaussian filter for reference. The last column is the gain over the fewest-passes
entry of the same K, so "within 0.1 dB of the plateau" can be read off.

    python benchmarks/dropout_averaging.py --method fourier --set network_def#dropout=0.3
    python benchmarks/dropout_averaging.py --method real --passes 1 2 4 --versions 1 4 8
    python benchmarks/dropout_averaging.py --set sampling=pool --vary pool_inference=whole,windows

``--vary KEY=V1,V2``: the same trained network inferred with each value of one method setting
(``dataclasses.replace`` of the trained method: pool_inference, or margin, the context around each
window that per-window masks are drawn on).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time

import numpy as np
import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cet_monai.data import simulate_tomogram  # noqa: E402
from cet_monai.metrics import best_gaussian, psnr, ssim  # noqa: E402
from cet_monai.workflows import denoise_with_network, train  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="fourier", choices=["fourier", "real", "recorrupted"])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="bundle override (VALUE as YAML), e.g. network_def#dropout=0.3")
    p.add_argument("--vary", default=None, metavar="KEY=V1,V2", help="infer with each value of one method setting")
    p.add_argument("--versions", type=int, nargs="+", default=[1, 2, 4, 8], help="K values")
    p.add_argument("--passes", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="T values")
    p.add_argument("--snr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shape", type=int, nargs=3, default=(64, 128, 128))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.overrides)}
    sim = simulate_tomogram(shape=tuple(args.shape), snr=args.snr, seed=args.seed)
    gauss = best_gaussian(sim.noisy, sim.clean)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        wf = train(args.method, output_dir=tmp, volume=sim.noisy.astype(np.float32), seed=args.seed, progress=False, **overrides)
        train_s = time.perf_counter() - t0
        network = wf.parser.get_parsed_content("network")
        source = wf.parser.get_parsed_content("source")
        method = wf.parser.get_parsed_content("method")
    print(f"{args.method} {overrides}: trained in {train_s:.0f} s; best Gaussian PSNR {gauss['psnr'].value:.2f} dB "
          f"(sigma {gauss['psnr'].sigma}), SSIM {gauss['ssim'].value:.3f} (sigma {gauss['ssim'].sigma})")
    key, values = (args.vary.split("=", 1)[0], [yaml.safe_load(v) for v in args.vary.split("=", 1)[1].split(",")]) if args.vary else (None, [None])
    print(f"| {key or 'method'} | K | T | PSNR (dB) | SSIM | slope | s | PSNR gain over the fewest T |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    clean = sim.clean.astype(np.float64)
    for value in values:
        variant = method if key is None else dataclasses.replace(method, **{key: value})
        for k in args.versions:
            first = None
            for t in args.passes:
                inferer = variant.inferer(versions=k, passes=t, seed=args.seed)
                t1 = time.perf_counter()
                out = source.normalizer.inverse(denoise_with_network(network, source.image, inferer))
                seconds = time.perf_counter() - t1
                db = psnr(out, sim.clean)
                first = db if first is None else first
                o = out.astype(np.float64) - out.mean()
                slope = float((o * (clean - clean.mean())).sum() / (o * o).sum())
                print(f"| {value if key else args.method} | {k} | {t} | {db:.2f} | {ssim(out, sim.clean):.3f} | {slope:.2f} | {seconds:.0f} | {db - first:+.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
