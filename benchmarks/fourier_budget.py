"""PSNR of the Fourier method against training iterations, for choosing the CPU budget.

Trains on the simulated default tomogram with the same pieces the bundle wires (patch sampler,
pairing transform, flips, DropoutUNet, Adam with cosine decay), and at each checkpoint denoises
the whole tomogram with the MC inferer and prints PSNR/SSIM against the clean reference, the
seconds spent, and the best Gaussian filter for comparison.

    python benchmarks/fourier_budget.py --features 16 32 64 64 --checkpoints 100 200 400
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from monai.transforms import Compose
from monai.utils import set_determinism

from cet_monai.engines import TomogramSource, collate_samples
from cet_monai.inferers import IdentitySampler, MCDropoutInferer
from cet_monai.inferers.samplers import BernoulliSampler, FourierSampler
from cet_monai.losses import MaskedMSELoss
from cet_monai.metrics import best_gaussian, psnr, ssim
from cet_monai.networks import DropoutUNet
from cet_monai.transforms.swap import RandSwapKeysd
from cet_monai.transforms import FourierSamplePool, RandBernoulliMaskd, RandFourierPaird, RandTomogramPatchd, RandWedgeFlipd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", choices=["fourier", "real", "n2n"], default="fourier")
    ap.add_argument("--sampling", default="split", choices=["split", "patch", "pool"])
    ap.add_argument("--pool-kind", default="seed", choices=["seed", "split"])
    ap.add_argument("--features", type=int, nargs="+", default=[16, 32, 64, 64])
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--margin", type=int, default=8)
    ap.add_argument("--patches", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--checkpoints", type=int, nargs="+", default=[100, 200, 300])
    ap.add_argument("--versions", type=int, nargs="+", default=[4])
    ap.add_argument("--passes", type=int, nargs="+", default=[1])
    ap.add_argument("--roi", type=int, default=32)
    ap.add_argument("--overlap", type=float, default=0.25)
    ap.add_argument("--shape", type=int, nargs=3, default=[64, 128, 128])
    ap.add_argument("--snr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    set_determinism(args.seed)
    from cet_monai.data import simulate_tomogram

    sim = simulate_tomogram(shape=args.shape, snr=args.snr, seed=args.seed)
    halves = (sim.even, sim.odd) if args.method == "n2n" else None
    src = TomogramSource(volume=sim.noisy, reference=sim.clean, halves=halves, validation_fraction=0.0)
    clean = sim.clean
    noisy = sim.noisy
    g = best_gaussian(noisy, clean)
    print(f"raw PSNR {psnr(noisy, clean):.2f} SSIM {ssim(noisy, clean):.3f}; best Gaussian PSNR {g['psnr'].value:.2f} "
          f"(sigma {g['psnr'].sigma}) SSIM {g['ssim'].value:.3f} (sigma {g['ssim'].sigma})", flush=True)
    if args.method == "fourier":
        margin = 0 if args.sampling == "pool" else args.margin
        pool = FourierSamplePool(src.training_region(), kind=args.pool_kind, seed=args.seed) if args.sampling == "pool" else None
        pairing = RandFourierPaird(keys="image", mode=args.sampling, num_samples=args.pairs, pool=pool)
        loss_fn = torch.nn.MSELoss()
    elif args.method == "real":
        margin = 0
        pairing = RandBernoulliMaskd(keys="image", num_samples=args.pairs)
        loss_fn = MaskedMSELoss()
    else:  # Noise2Noise between the even/odd halves (needs two half tomograms)
        margin = 0
        pairing = RandSwapKeysd(keys=["image", "label"])
        loss_fn = torch.nn.MSELoss()
    pipeline = Compose([
        RandTomogramPatchd(keys=["image", "label"] if args.method == "n2n" else "image", patch_size=args.patch, num_samples=args.patches, margin=margin),
        pairing,
        RandWedgeFlipd(keys=["image", "label"]),
    ], map_items=2)
    pipeline.set_random_state(args.seed)
    net = DropoutUNet(features=args.features, dropout=args.dropout)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    total = max(args.checkpoints)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=args.lr * 0.05)
    t_train = t_data = 0.0
    for it in range(1, total + 1):
        t0 = time.perf_counter()
        batch = collate_samples([pipeline(src.training_items(1)[0])])
        x, y = batch["image"].as_tensor(), batch["label"].as_tensor()
        t1 = time.perf_counter()
        net.train()
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        t2 = time.perf_counter()
        t_data += t1 - t0
        t_train += t2 - t1
        if it % 10 == 0:
            print(f"  it {it}: loss {loss.item():.4f}, data {t_data:.0f}s, train {t_train:.0f}s", flush=True)
        if it in args.checkpoints:
            for k in args.versions:
                for t in args.passes:
                    split = args.sampling == "split" or (args.sampling == "pool" and args.pool_kind == "split")
                    sampler = {"fourier": lambda: FourierSampler(k, masks="split" if split else "seed"),
                               "real": lambda: BernoulliSampler(k), "n2n": lambda: IdentitySampler()}[args.method]()
                    inf = MCDropoutInferer(roi_size=args.roi, sampler=sampler, passes=t, overlap=args.overlap, sw_batch_size=2)
                    t3 = time.perf_counter()
                    with torch.no_grad():
                        inputs = src.halves if args.method == "n2n" else [src.image]
                        out = np.mean([inf(v[None], net)[0, 0].numpy() for v in inputs], axis=0)
                    t4 = time.perf_counter()
                    print(f"it {it} loss {loss.item():.4f} K {k} T {t}: PSNR {psnr(out, clean):.2f} SSIM {ssim(out, clean):.3f} | "
                          f"data {t_data:.0f}s train {t_train:.0f}s infer {t4 - t3:.0f}s", flush=True)


if __name__ == "__main__":
    main()
