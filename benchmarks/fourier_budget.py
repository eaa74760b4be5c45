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


class SharedBallSplit:
    """Per-patch complementary split of the coefficients outside a shared low-frequency ball.

    Input and target both keep the ball (where tomographic noise is weakest and the signal
    strongest, so they share a coherent signal) and split the rest (independent noise).
    """

    def __init__(self, fraction: float, num_samples: int, margin: int, seed: int = 0):
        from cet_monai.transforms.fourier import lowpass_ball, measured_mask

        self.fraction, self.num_samples, self.margin = fraction, num_samples, margin
        self.rng = np.random.RandomState(seed)
        self._ball, self._measured = lowpass_ball, measured_mask

    def weights(self, shape, device="cpu"):
        from cet_monai.transforms.fourier import split_fourier_mask

        ball = self._ball(shape).ball(self.fraction, device)
        measured = self._measured(shape, 60.0, "Y", device)
        m = split_fourier_mask(self.rng, shape, 0.5, 1, device)
        rest = measured & ~ball
        w_in = ball.float() + (m & rest).float() * 2**0.5
        w_t = ball.float() + (~m & rest).float() * 2**0.5
        return w_in, w_t, ball, m & rest

    def __call__(self, d):
        x = torch.as_tensor(d["image"]).float()
        shape = tuple(x.shape[-3:])
        spec = torch.fft.rfftn(x, dim=(-3, -2, -1))
        c = self.margin
        out = []
        for _ in range(self.num_samples):
            w_in, w_t, _, _ = self.weights(shape)
            a = torch.fft.irfftn(spec * w_in, s=shape, dim=(-3, -2, -1))
            b = torch.fft.irfftn(spec * w_t, s=shape, dim=(-3, -2, -1))
            sl = (slice(None),) + tuple(slice(c, n - c) for n in shape)
            out.append({**d, "image": a[sl], "label": b[sl]})
        return out


class SharedBallSampler(IdentitySampler):
    def __init__(self, split: SharedBallSplit, k: int):
        self.split, self.num_versions = split, k

    def versions(self, windows, generator):
        shape = tuple(windows.shape[-3:])
        spec = torch.fft.rfftn(windows, dim=(-3, -2, -1))
        ins, seen = [], []
        for _ in range(self.num_versions):
            w_in, _, ball, m = self.split.weights(shape)
            ins.append(torch.fft.irfftn(spec * w_in, s=shape, dim=(-3, -2, -1)))
            seen.append(m)
        return torch.stack(ins), (torch.stack(seen), ball)

    def combine(self, predictions, aux):
        seen, ball = aux
        preds = predictions.mean(0)  # (K, B, C, ...)
        shape = tuple(preds.shape[-3:])
        spec = torch.fft.rfftn(preds, dim=(-3, -2, -1))
        unseen = (~seen).float()[:, None, None]
        num = (spec * unseen).sum(0)
        cnt = unseen.sum(0)
        merged = torch.where(cnt > 0, num / cnt.clamp_min(1), spec.mean(0)) / 2**0.5
        merged = torch.where(ball, spec.mean(0), merged)
        return torch.fft.irfftn(merged, s=shape, dim=(-3, -2, -1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", choices=["fourier", "real", "n2n"], default="fourier")
    ap.add_argument("--sampling", default="split", choices=["split", "patch", "pool"])
    ap.add_argument("--pool-kind", default="seed", choices=["seed", "split"])
    ap.add_argument("--shared-ball", type=float, default=0.0, help="split per patch outside a shared low-pass ball holding this fraction")
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
    pool = None
    if args.method == "fourier":
        margin = 0 if args.sampling == "pool" else args.margin
        pool = FourierSamplePool(src.training_region(), kind=args.pool_kind, seed=args.seed) if args.sampling == "pool" else None
        pairing = RandFourierPaird(keys="image", mode=args.sampling, num_samples=args.pairs, pool=pool)
        if args.shared_ball > 0:
            pairing = SharedBallSplit(args.shared_ball, args.pairs, margin, args.seed)
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
                    if args.shared_ball > 0:
                        sampler = SharedBallSampler(pairing, k)
                    inf = MCDropoutInferer(roi_size=args.roi, sampler=sampler, passes=t, overlap=args.overlap, sw_batch_size=2)
                    t3 = time.perf_counter()
                    with torch.no_grad():
                        inputs = src.halves if args.method == "n2n" else [src.image]
                        if pool is not None and args.pool_kind == "split":
                            # whole-tomogram splits: the input halves of the first K splits of the pool
                            inf.sampler = IdentitySampler()
                            inputs = [torch.from_numpy(pool.sample(2 * i)) for i in range(k)]
                        out = np.mean([inf(v[None], net)[0, 0].numpy() for v in inputs], axis=0)
                    t4 = time.perf_counter()
                    print(f"it {it} loss {loss.item():.4f} K {k} T {t}: PSNR {psnr(out, clean):.2f} SSIM {ssim(out, clean):.3f} | "
                          f"data {t_data:.0f}s train {t_train:.0f}s infer {t4 - t3:.0f}s", flush=True)


if __name__ == "__main__":
    main()
