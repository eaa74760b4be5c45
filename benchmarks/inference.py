"""Inference speed and memory of the MC-dropout sliding-window inferer.

1. Voxels per second of :class:`cet_monai.inferers.MCDropoutInferer` (windows x versions x
   passes stacked into network batches) against a naive loop that calls the network once per
   window, version and pass, for the ``small`` and ``large`` presets.
2. Peak resident memory of denoising a large synthetic tomogram memory-mapped from an MRC file
   (normalised window by window), against the size of the tomogram itself.

    python benchmarks/inference.py                 # both parts, CPU-sized defaults
    python benchmarks/inference.py --quick         # a smaller run
    python benchmarks/inference.py --large 200 512 512 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch


def _naive(volume, net, sampler, passes, roi, overlap, seed=0):
    """The plain loop: one network call per window, version and pass (dropout sampled per call)."""
    from monai.inferers import sliding_window_inference

    from cet_monai.inferers import mc_dropout

    gen = torch.Generator().manual_seed(seed)

    def per_window(window):
        outs = []
        versions, aux = sampler.versions(window, gen)
        for t in range(max(passes, 1)):
            preds = torch.stack([net(versions[k]) for k in range(versions.shape[0])])
            outs.append(preds)
        return sampler.combine(torch.stack(outs), aux)

    with mc_dropout(net), torch.no_grad():
        return sliding_window_inference(volume, roi, 1, per_window, overlap=overlap, mode="gaussian")


def speed(preset: str, shape, versions: int, passes: int, device: str, repeats: int = 1) -> dict:
    from cet_monai.inferers import MCDropoutInferer
    from cet_monai.inferers.samplers import FourierSampler
    from cet_monai.networks import network_from_preset

    torch.manual_seed(0)
    net = network_from_preset(preset).to(device).eval()
    roi = (32, 32, 32) if preset == "small" else (64, 64, 64)
    volume = torch.randn((1, 1, *shape), device=device)
    sampler = FourierSampler(versions, masks="split")
    inferer = MCDropoutInferer(roi, sampler=sampler, passes=passes, sw_batch_size=4, overlap=0.25, max_batch=16)
    n = int(np.prod(shape))
    inferer(volume, net)  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        inferer(volume, net)
    batched = n * repeats / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    _naive(volume, net, sampler, passes, roi, 0.25)
    naive = n / (time.perf_counter() - t0)
    return {"preset": preset, "shape": list(shape), "K": versions, "T": passes, "batched_voxels_per_s": batched,
            "naive_voxels_per_s": naive, "speedup": batched / naive}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _memory_child(path: str, device: str) -> None:
    """Run in a fresh process: denoise the memory-mapped MRC and report the peak RSS."""
    from cet_monai.inferers import MCDropoutInferer
    from cet_monai.io import read_volume
    from cet_monai.networks import DropoutUNet
    from cet_monai.normalize import TomogramNormalizer

    # ru_maxrss survives exec (it would report the parent's peak): reset the kernel's high-water mark
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kib("VmRSS")
    raw, _ = read_volume(path, mmap=True)
    norm = TomogramNormalizer().fit(raw)
    net = DropoutUNet(features=(4, 8), dropout=0.3).to(device)
    inferer = MCDropoutInferer((32, 32, 32), passes=1, sw_batch_size=8, overlap=0.25, window_transform=norm.transform,
                               sw_device=device, device="cpu")
    t0 = time.perf_counter()
    out = inferer(torch.from_numpy(np.asarray(raw)).unsqueeze(0).unsqueeze(0), net)
    seconds = time.perf_counter() - t0
    peak = _status_kib("VmHWM")
    print(json.dumps({"peak_rss_mib": peak / 1024, "rss_before_mib": before / 1024, "seconds": seconds,
                      "output_shape": list(out.shape)}))


def memory(shape, device: str) -> dict:
    from cet_monai.io import write_volume

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "large.mrc")
        rng = np.random.default_rng(0)
        vol = np.empty(shape, np.float32)
        for z in range(shape[0]):  # written plane by plane: the benchmark itself stays small
            vol[z] = rng.standard_normal(shape[1:], dtype=np.float32)
        write_volume(path, vol)
        del vol
        res = subprocess.run([sys.executable, __file__, "--memory-child", path, "--device", device],
                             capture_output=True, text=True, check=True)
        out = json.loads(res.stdout.strip().splitlines()[-1])
    out["tomogram_mib"] = float(np.prod(shape)) * 4 / 2**20
    out["shape"] = list(shape)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller volumes")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--large", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"))
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_flush_denormal(True)
    if args.memory_child:
        _memory_child(args.memory_child, args.device)
        return
    small_shape = (32, 64, 64) if args.quick else (64, 96, 96)
    seed_shape = (64, 64, 64) if args.quick else (64, 128, 128)
    print(f"device: {args.device}, torch threads: {torch.get_num_threads()}")
    print("| preset | volume | K x T | batched voxels/s | naive voxels/s | speed-up |")
    print("| --- | --- | --- | --- | --- | --- |")
    for preset, shape in (("small", small_shape), ("large", seed_shape)):
        r = speed(preset, shape, versions=2, passes=2, device=args.device)
        print(f"| {preset} | {'x'.join(map(str, shape))} | 2 x 2 | {r['batched_voxels_per_s']:.0f} | "
              f"{r['naive_voxels_per_s']:.0f} | {r['speedup']:.2f} |", flush=True)
    large = tuple(args.large) if args.large else ((64, 256, 256) if args.quick else (128, 512, 512))
    m = memory(large, args.device)
    print(f"\nlarge tomogram {'x'.join(map(str, large))} ({m['tomogram_mib']:.0f} MiB float32, memory-mapped): "
          f"peak RSS {m['peak_rss_mib']:.0f} MiB ({m['rss_before_mib']:.0f} MiB of it libraries before any data); "
          f"increase {(m['peak_rss_mib'] - m['rss_before_mib']):.0f} MiB = "
          f"{(m['peak_rss_mib'] - m['rss_before_mib']) / m['tomogram_mib']:.2f} x the tomogram, "
          f"{m['seconds']:.0f} s with a 4/8-channel network")


if __name__ == "__main__":
    main()
