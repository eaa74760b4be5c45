"""Has the network learnt the tomogram's own noise? Score it on the same clean tomogram with fresh noise.

Trains one method on a simulated tomogram ``y = x + n`` (``--method recorrupted``: the default,
recorrupted pairs; ``--method n2n``: even/odd Noise2Noise with the same network, budget and flips),
then denoises ``y`` and ``--fresh`` tomograms ``x + n'`` whose noise ``n'`` is a fresh
reconstruction of fresh projection noise of the same tilt series (same tilts, filter, wedge and
level; for ``n2n`` the fresh half tomograms ``x + n'_even``, ``x + n'_odd``). Recorrupted pairs
put the tomogram's own ``n`` in every input and target (``y + z``, ``y - z``): a network that
memorised ``n`` would keep some of it in its output on ``y`` but not on ``x + n'``, so it would
score better on the fresh tomograms. One JSON row per tomogram: gain over that tomogram's
PSNR-best Gaussian filter (dB), PSNR, SSIM. Measured in ``docs/denoising.md`` (ninth pass).

    python benchmarks/fresh_noise.py --setting hann --method recorrupted
    python benchmarks/fresh_noise.py --setting hann --method n2n
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np
import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from recorrupted_variants import noise_halves_recorded  # noqa: E402
from single_tomogram import SETTINGS, slope  # noqa: E402

from cet_monai.data import simulate_tomogram  # noqa: E402
from cet_monai.metrics import best_gaussian, psnr, ssim  # noqa: E402
from cet_monai.workflows import denoise_with_network, train  # noqa: E402

# even/odd Noise2Noise with the default's network, arithmetic, budget and flips (docs/benchmarks.md)
N2N = {"iterations": 1600, "epoch_length": 50, "patches_per_item": 4, "pairs_per_patch": 1, "learning_rate": 0.002,
       "network_def#dropout": 0.0, "network_def#cpu_bfloat16": True, "early_stop_patience": 0, "network_def#norm": "batch",
       "versions": 8, "flip_versions": True}


def fresh_noise_tomograms(args):
    """Simulate the tomogram; also reconstruct ``args.fresh`` fresh noise realisations of its tilt
    series. Returns the simulation and a list of fresh ``(even, odd, full)`` tomograms of its clean one."""
    with noise_halves_recorded(args.fresh, 20_000) as noise_halves:
        sim = simulate_tomogram(shape=(64, 128, 128), snr=args.snr, seed=args.seed, **SETTINGS[args.setting])
    s = sim.params["noise_sigma_per_projection_pixel"] * np.sqrt(2.0)  # the halves' noise scale (simulate._scale_noise)
    clean = sim.clean.astype(np.float64)
    fresh = []
    for ne, no in noise_halves:
        even, odd = (clean + s * ne).astype(np.float32), (clean + s * no).astype(np.float32)
        fresh.append((even, odd, ((even.astype(np.float64) + odd) / 2).astype(np.float32)))
    return sim, fresh


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setting", default="hann", choices=list(SETTINGS))
    p.add_argument("--snr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", default="recorrupted", choices=("recorrupted", "n2n"))
    p.add_argument("--fresh", type=int, default=2, help="fresh noise realisations to score on")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="bundle override (VALUE as YAML)")
    p.add_argument("--train-seed", type=int, default=None,
                   help="seed of the training (pairs, patches, network initialisation); default --seed: another value "
                        "trains the same tomogram again, which shows how much one training run moves the scores")
    p.add_argument("--no-clip", action="store_true",
                   help="normalise without clipping (the normaliser clips at the tomogram's 0.5 / 99.5 %% percentiles: 1 %% "
                        "of a noise-dominated tomogram's voxels, and 6 %% of a half's, which holds twice its noise): a probe")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = {**(N2N if args.method == "n2n" else {}), **{k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.overrides)}}
    if args.no_clip:
        import functools

        from cet_monai.engines import data as _data

        _data.TomogramNormalizer = functools.partial(_data.TomogramNormalizer, clip=False)
    sim, fresh = fresh_noise_tomograms(args)
    train_seed = args.seed if args.train_seed is None else args.train_seed
    with tempfile.TemporaryDirectory() as tmp:
        if args.method == "n2n":
            wf = train("fourier", output_dir=tmp, extra_configs=("halves.yaml",), halves=[sim.even, sim.odd], volume=sim.noisy,
                       seed=train_seed, progress=False, **overrides)
        else:
            wf = train("recorrupted", output_dir=tmp, volume=sim.noisy, seed=train_seed, progress=False, **overrides)
    network = wf.parser.get_parsed_content("network").eval()
    source = wf.parser.get_parsed_content("source")
    inferer = wf.parser.get_parsed_content("inferer")
    norm = source.normalizer

    def denoise(noisy, even, odd):
        if args.method == "n2n":  # cryoCARE's estimate: the mean of the network on both halves
            est = np.mean([denoise_with_network(network, torch.as_tensor(norm.transform(h))[None], inferer) for h in (even, odd)], axis=0)
        else:
            est = denoise_with_network(network, torch.as_tensor(norm.transform(noisy))[None], inferer)
        return norm.inverse(np.asarray(est, np.float32))

    for name, (even, odd, noisy) in [("own noise", (sim.even, sim.odd, sim.noisy))] + [(f"fresh noise {i}", f) for i, f in enumerate(fresh)]:
        out = denoise(noisy, even, odd)
        gauss = best_gaussian(noisy, sim.clean)
        print(json.dumps({"setting": args.setting, "snr": args.snr, "seed": args.seed, "train_seed": train_seed, "method": args.method, "tomogram": name,
                          "clipped": not args.no_clip,
                          "gain_db": round(float(psnr(out, sim.clean) - gauss["psnr"].value), 3),
                          "psnr": round(float(psnr(out, sim.clean)), 3), "ssim": round(float(ssim(out, sim.clean)), 4),
                          "slope": round(float(slope(out, sim.clean)), 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
