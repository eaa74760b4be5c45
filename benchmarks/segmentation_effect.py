"""Does denoising help membrane segmentation? Test Dice against the number of training patches.

Trains the membrane segmentation network (cet_monai.segmentation) on N in {2, 8, 32} training
patches of simulated tomograms prepared in each way -- raw; Gaussian with an oracle sigma and with
a sigma chosen from the estimated noise spectrum; the recorrupted-pairs default denoiser;
real-space Bernoulli masks (Self2Self); the Fourier-space Bernoulli pool; Noise2Noise on even/odd
halves -- and scores Dice and surface Dice on a held-out simulated tomogram, whole and per 32^3
block, over several seeds, for a network trained on each input and for the raw-trained network
applied to each input. See cet_monai/segmentation/experiment.py for the protocol and
docs/segmentation.md for results.

    python benchmarks/segmentation_effect.py --setting crowded_low_dose --out runs/seg_crowded
    python benchmarks/segmentation_effect.py --setting real_vesicle --out runs/seg_vesicle
    python benchmarks/segmentation_effect.py --size full --setting crowded_low_dose --out runs/seg_full   # GPU
    python benchmarks/segmentation_effect.py --export runs/seg_crowded runs/seg_vesicle --out docs/segmentation_results.csv

Prints the Markdown tables; writes runs.csv, inputs.csv, summary.csv, summary.md,
dice_vs_patches.png, example_seed*_*.png and experiment.json into --out. Rerunning with the same
settings resumes (finished trainings are kept); other settings in the same folder are refused
unless --overwrite.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import yaml


def parse_args(argv=None):
    from cet_monai.segmentation.experiment import PROTOCOLS, experiment_settings
    from cet_monai.segmentation.inputs import ALL_KINDS
    from cet_monai.segmentation.scenes import SIMULATION_SETTINGS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=["reduced", "full", "tiny"], default="reduced",
                   help="reduced: 2 CPU cores (hours for the whole grid); full: a GPU; tiny: smoke test")
    p.add_argument("--out", default="runs/segmentation_effect", help="output folder (default: %(default)s)")
    p.add_argument("--kinds", nargs="+", choices=list(ALL_KINDS), default=None,
                   help=f"input kinds (default: all of {' '.join(ALL_KINDS)}; denoisers only if cet_monai.workflows imports)")
    p.add_argument("--setting", choices=sorted(SIMULATION_SETTINGS), default=None,
                   help="simulated imaging and specimen (default: standard): " + "; ".join(
                       f"{k}: {v.description}" for k, v in SIMULATION_SETTINGS.items()))
    p.add_argument("--protocols", nargs="+", choices=list(PROTOCOLS), default=None,
                   help="denoised: train and test on each input; raw_trained: the raw-trained network applied to "
                        "each input (default: both)")
    p.add_argument("--n-patches", nargs="+", type=int, default=None, help="numbers of training patches (default: 2 8 32)")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="experiment seeds (default: 0 1 2; full: 0-4)")
    p.add_argument("--iterations", type=int, default=None, help="training iterations per segmentation model")
    p.add_argument("--denoise-iterations", type=int, default=None, help="iterations of each denoiser training")
    p.add_argument("--denoise-set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="further denoiser bundle overrides, VALUE read as YAML (e.g. network_def#dropout=0.3 "
                        "versions=4); the reduced size sets iterations=100 network_def#features=[8,16,32,64]")
    p.add_argument("--snr", type=float, default=None, help="SNR of the simulated tomograms (default: the setting's)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: 1 for reduced/tiny, which is fastest on a shared 2-core "
                        "machine; unchanged for full)")
    p.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                   help="instead of running: combine experiment folders run in parallel (e.g. one process per "
                        "--kinds) into --out and write its tables and plot")
    p.add_argument("--export", nargs="+", default=None, metavar="DIR",
                   help="instead of running: write the rows of these experiment folders (e.g. one per --setting) "
                        "to --out as one CSV (docs/segmentation_results.csv) and their per-block Dice beside it "
                        "(*_blocks.csv)")
    p.add_argument("--overwrite", action="store_true", help="discard results in --out made with other settings")
    args = p.parse_args(argv)
    denoise_set = {}
    for item in args.denoise_set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            p.error(f"--denoise-set takes KEY=VALUE, got {item!r}")
        denoise_set[key] = yaml.safe_load(value)
    return args, experiment_settings(args.size, kinds=args.kinds, n_patches=args.n_patches, seeds=args.seeds,
                                     iterations=args.iterations, denoise_iterations=args.denoise_iterations,
                                     snr=args.snr, denoise_set=denoise_set, setting=args.setting,
                                     protocols=args.protocols)


def main(argv=None) -> int:
    from cet_monai.errors import CetMonaiError
    from cet_monai.segmentation.experiment import run_experiment

    args, settings = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    def log(msg):
        print(time.strftime("%H:%M:%S"), msg, flush=True)

    try:
        if args.export:
            from pathlib import Path

            from cet_monai.segmentation.experiment import export_results

            out = Path(args.out)
            counts = export_results(args.export, out, out.with_name(out.stem + "_blocks.csv"))
            print(f"wrote {counts['rows']} rows to {out} and {counts['blocks']} block rows beside it")
            return 0
        if args.merge:
            from cet_monai.segmentation.experiment import merge_experiments

            result = merge_experiments(args.merge, args.out, overwrite=args.overwrite)
            print(result["tables"])
            print(f"(merged {len(args.merge)} folders into {args.out})")
            return 0
        threads = args.threads if args.threads is not None else (None if args.size == "full" else 1)
        result = run_experiment(settings, args.out, device=args.device, overwrite=args.overwrite, log=log, threads=threads)
    except CetMonaiError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print()
    print(result["tables"])
    print(f"({result['seconds'] / 60:.1f} min this session; results in {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
