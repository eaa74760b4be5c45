"""The ``cet-monai`` command: denoise cryo-electron tomograms from a single tomogram.

Exit status: 0 success; 2 bad input or options (one line on stderr names the file and the
problem); 1 an unexpected error (with its traceback); 130 interrupted (Ctrl-C); 143 terminated
(SIGTERM, e.g. a batch job's time limit). After 130 or 143 the same command resumes.
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import os
import sys
import textwrap
import time
from pathlib import Path

from cet_monai import __version__
from cet_monai.errors import CetMonaiError, OptionError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


class Terminated(BaseException):
    """Raised by the SIGTERM handler; a BaseException so nothing on the way catches it as an error
    (MONAI's checkpoint saver still writes its checkpoint on the way out)."""

DESCRIPTION = """\
Self-supervised denoising of cryo-electron tomograms from ONE noisy tomogram: no clean
ground truth, no second exposure, no even/odd halves. The tomogram's noise power spectrum is
estimated from the tomogram itself; a small 3D U-Net is fitted to pairs (y + z, y - z) made
with noise z of that spectrum, whose noises are independent at every frequency (Noise2Noise
from one tomogram, "recorrupted pairs"), and the whole tomogram is denoised by sliding windows
averaged over several noise draws. The Fourier-space (complementary split, Bernoulli masks and
pools) and real-space Bernoulli (Self2Self with dropout) methods are options.

Start here:
  cet-monai demo                        simulate a tomogram with ground truth, denoise it, and
                                        print PSNR/SSIM against raw and the best Gaussian filter
  cet-monai denoise tomo.mrc -o tomo_denoised.mrc
                                        fit and denoise your own tomogram
  cet-monai COMMAND --help              the manual of each command
"""

EPILOG = """\
Volumes are read and written as MRC (.mrc .rec .map .st .mrcs), NIfTI (.nii .nii.gz) or ImageJ
TIFF; the output keeps the input's voxel size and origin. Existing files are never replaced
without --overwrite. Everything runs on the GPU when there is one (CUDA), else on the CPU.
"""


def _formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32, width=100)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _add_training_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("method and budget")
    g.add_argument("--method", choices=["recorrupted", "fourier", "real"], default="recorrupted",
                   help="recorrupted: Noise2Noise from recorrupted pairs with the noise spectrum estimated "
                        "from the tomogram (default); fourier: Noise2Noise from Fourier-masked copies of the "
                        "tomogram; real: Self2Self with real-space Bernoulli masks and dropout")
    g.add_argument("--sampling", choices=["split", "patch", "pool"], default=None,
                   help="fourier method only: split = complementary masks over the measured coefficients "
                        "(its default); patch = Bernoulli blocks with a kept low-frequency ball and sign "
                        "flips, per patch; pool = a pool of such masked whole-tomogram copies")
    g.add_argument("--preset", choices=["small", "large"], default=None,
                   help="network size instead of the method's own default (bundles/<method>/configs/train.yaml): "
                        "small = 8-64 channels, 3 down-samplings, no dropout (CPU minutes); large = 48 channels "
                        "at 6 levels, decoder dropout 0.3, 64-voxel patches (GPUs)")
    g.add_argument("--iterations", type=int, default=None, metavar="N",
                   help="training iterations (default: the method's budget, 1600 for recorrupted); a whole "
                        "number of epochs (50 iterations for recorrupted), or fewer than one epoch. Smooth "
                        "(SIRT-like) reconstructions gain from more: 2400 gave +0.5 dB there (docs/denoising.md)")
    g.add_argument("--patch-size", type=int, default=None, metavar="VOXELS",
                   help="training patch edge in voxels, a multiple of the network's divisor (8 for the default "
                        "and small networks, 32 for large), at most the tomogram's smallest edge")
    g.add_argument("--versions", type=_positive_int, default=None, metavar="K",
                   help="input versions per window at inference (default: the bundle's; recorrupted: 8 noise "
                        "draws, draw k flipped along Z/Y/X by pattern k mod 8 and back, flip_versions)")
    g.add_argument("--passes", type=_non_negative_int, default=None, metavar="T",
                   help="dropout passes per version at inference; 0 turns dropout off")
    g.add_argument("--tilt-range", type=float, default=None, metavar="DEG",
                   help="maximum tilt angle of the tilt series (default 60); sets the missing wedge "
                        "that split masks leave out")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="ID=VALUE",
                   help="any bundle config id, e.g. --set learning_rate=0.0005 --set network_def#dropout=0.5 "
                        "(repeatable; VALUE is read as YAML)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cet-monai", description=DESCRIPTION, epilog=EPILOG, formatter_class=_formatter)
    parser.add_argument("--version", action="version", version=f"cet-monai {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step (INFO level)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", formatter_class=_formatter, help="simulate, denoise and score a tomogram (no data needed)",
                       description=textwrap.dedent("""\
        Simulate a realistic tomogram with ground truth (lipid vesicles and a membrane sheet,
        macromolecular complexes, a +-60 deg tilt series with noise on every projection,
        weighted back-projection; 64x128x128 voxels of 10 A, SNR 0.05), denoise it (by default
        with recorrupted pairs and the estimated noise spectrum), and print PSNR and SSIM of the raw tomogram, the
        best Gaussian filter (sigma chosen separately for each metric) and the denoised one
        against the clean reconstruction. Writes the volumes, a figure of orthogonal slices and
        a Markdown report into the output folder. Training takes 1600 iterations of the small
        network, in bfloat16 on CPUs that compute it natively (measured: fit + denoise in 149 s
        on 2 quiet cores of an AMD EPYC; 1200 iterations took 180-202 s on 2 of an Intel Xeon);
        measured quality and times are in docs/denoising.md and docs/benchmarks.md."""))
    p.add_argument("-o", "--output", default="demo_output", help="output folder (default demo_output)")
    p.add_argument("--overwrite", action="store_true", help="replace files from an earlier demo in the folder")
    p.add_argument("--shape", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"), help="simulated volume size")
    p.add_argument("--snr", type=float, default=0.05, help="simulated SNR in the reconstruction (default 0.05)")
    _add_training_options(p)

    p = sub.add_parser("simulate", formatter_class=_formatter, help="write a simulated tomogram with ground truth",
                       description=textwrap.dedent("""\
        Write a simulated cryo-ET tomogram and its ground truth into OUTDIR: noisy.mrc, clean.mrc
        (the noise-free tilt series reconstructed the same way), labels.mrc (1 = membrane),
        even.mrc and odd.mrc (half-dose halves; noisy is their mean), phantom.mrc,
        simulation.json and orthoslices.png."""))
    p.add_argument("outdir", help="output folder")
    p.add_argument("--shape", type=int, nargs=3, default=(64, 128, 128), metavar=("Z", "Y", "X"), help="voxels (default 64 128 128)")
    p.add_argument("--voxel-size", type=float, default=10.0, help="angstrom (default 10)")
    p.add_argument("--snr", type=float, default=0.05, help="var(clean)/var(noise) of the reconstruction (default 0.05)")
    p.add_argument("--tilt-range", type=float, default=60.0, help="maximum tilt in degrees (default 60)")
    p.add_argument("--tilt-step", type=float, default=2.0, help="degrees between tilts (default 2)")
    p.add_argument("--ctf", action="store_true", help="apply a CTF (3 um underfocus, 300 kV) to the projections")
    p.add_argument("--membrane-labels", default=None, metavar="PATH",
                   help="take membrane geometry from a label map (1 membrane, 2 lumen)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files in OUTDIR")

    p = sub.add_parser("denoise", formatter_class=_formatter, help="fit the model on a tomogram and denoise it",
                       description=textwrap.dedent("""\
        Fit the self-supervised denoiser on each INPUT tomogram and write the denoised tomogram
        with the input's header, a PNG of orthogonal slices (raw vs denoised), the training
        checkpoints and logs. Interrupted runs resume where they stopped when run again with the
        same output.

        Many tomograms (a folder, or several files, -o FOLDER): each gets its own model (one
        for all with --shared-model, below). A tomogram whose output is complete from an
        earlier run with the same input and settings (a completed.json record in its work
        folder) is skipped; any other existing output is refused unless --overwrite. A
        tomogram that fails is reported and the batch goes on; the exit code is then 1. The
        summary (input, output, status, seconds, quality check, error) is printed and written
        to FOLDER/denoise_summary.tsv.

        Before any work the memory and disk each run needs are printed, and outputs that cannot
        fit on their disk are refused. Above 64 M voxels the normalised copy that training
        patches are read from is a disk-backed file and the tomogram is denoised in Z slabs with
        the result on disk (scratch space in $TMPDIR, 8 bytes per voxel), so memory stays about
        that of one slab: a tomogram larger than RAM runs (1.5 GiB peak for 1 GiB, 1.7 for 2 GiB).

        Several processes: --nproc N shares the tomograms among N processes on this machine
        (one GPU each when there are GPUs; the CPU cores split otherwise). On a cluster, start
        the same command under torchrun instead, one process per GPU:
          torchrun --nnodes 2 --nproc_per_node 4 -m cet_monai.cli denoise DIR -o OUT
        (see docs/scale.md for a SLURM script).

        One model for all (--shared-model): for many tomograms of one microscope and session
        (same detector, dose, voxel size and reconstruction), fit ONE model on all of them and
        denoise each with it:
          cet-monai denoise DIR -o OUT --shared-model [--nproc N]
        Each tomogram is normalised with its own statistics, keeps its own held-out region, and
        (default method) has its own noise spectrum, estimated from it for training and again
        when it is denoised; training takes the tomograms in turn. It saves the fits: N
        tomograms cost one training budget (--iterations, the same default) plus N inferences,
        instead of N budgets. It costs memory: a process holds all the tomograms it trains on
        at once (4 bytes per voxel each, on disk above 64 M voxels; said before any work). With --nproc N or torchrun the
        model is trained data parallel (DistributedDataParallel): each process reads and draws
        patches from its share of the tomograms only, then denoises those. The model, its
        checkpoints and logs go to OUT/shared_model_run/ (or --work-dir); a rerun resumes it,
        skips complete outputs, and refuses a folder fitted on another set of tomograms or
        other settings. Measured on three simulated tomograms (docs/scale.md): one shared budget
        gave 0.6 dB less than one model each (still 3 dB above the best Gaussian filter) in 41 %
        of the time; with many tomograms consider a larger --iterations."""))
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="tomogram file(s) or folder(s) of them")
    p.add_argument("-o", "--output", required=True,
                   help="output file (one input) or folder (several inputs: <name>_denoised.<ext> in it)")
    p.add_argument("--work-dir", default=None,
                   help="checkpoints and logs (default: the output path minus its suffix, plus _run/; with "
                        "--shared-model OUTPUT/shared_model_run/; a folder holding another tomogram's or other "
                        "settings' checkpoints is refused)")
    p.add_argument("--save-std", action="store_true", help="also write the per-voxel standard deviation over the passes")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--no-resume", action="store_true",
                   help="start training afresh even if checkpoints exist (they are moved to a superseded_* subfolder)")
    p.add_argument("--nproc", type=_positive_int, default=1, metavar="N",
                   help="processes sharing the tomograms, one model per tomogram (default 1; torchrun: leave out); "
                        "with --shared-model, processes training the one model together")
    p.add_argument("--shared-model", action="store_true",
                   help="fit ONE model on all the inputs (two or more, e.g. one session's tomograms) and denoise each "
                        "with it: one training budget instead of one per tomogram; each tomogram normalised and "
                        "(default method) paired with noise of its own spectrum; not with --method fourier "
                        "--sampling pool (see above)")
    p.add_argument("--ignore-memory-estimate", action="store_true",
                   help="run even when the estimated peak memory (said before any work) exceeds the memory available "
                        "(MemAvailable, or a cgroup's limit); by default such a run is refused")
    _add_training_options(p)

    p = sub.add_parser("predict", formatter_class=_formatter, help="denoise with an already trained checkpoint",
                       description="Denoise INPUT tomogram(s) with a checkpoint written by `denoise` or by a bundle's training.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="tomogram file(s) or folder(s)")
    p.add_argument("--checkpoint", required=True, help="checkpoint_final_iteration=N.pt (or model_best.pt) of a training run")
    p.add_argument("-o", "--output", required=True, help="output file (one input) or folder")
    p.add_argument("--versions", type=_positive_int, default=None, metavar="K", help="input versions per window (default: as trained)")
    p.add_argument("--passes", type=_non_negative_int, default=None, metavar="T", help="dropout passes (default: as trained)")
    p.add_argument("--save-std", action="store_true", help="also write the per-voxel standard deviation")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--device", default=None, help="cuda, cpu (default: cuda if available)")

    p = sub.add_parser("segment", formatter_class=_formatter, help="segment membranes with a trained segmentation model",
                       description=textwrap.dedent("""\
        Segment the membranes of INPUT with a checkpoint of the membrane_segmentation bundle
        (python -m monai.bundle run training --config_file bundles/membrane_segmentation/configs/train.yaml).
        Writes a label volume (1 = membrane) with the input's header, by sliding windows with
        Gaussian blending; optionally the membrane probability."""))
    p.add_argument("input", help="tomogram file (raw or denoised)")
    p.add_argument("-o", "--output", required=True, help="label volume to write (e.g. tomo_membranes.mrc)")
    p.add_argument("--checkpoint", required=True, help="checkpoint of the membrane_segmentation bundle")
    p.add_argument("--probability", default=None, metavar="PATH", help="also write the membrane probability (float32)")
    p.add_argument("--threshold", type=float, default=0.5, help="probability above which a voxel is membrane (default 0.5)")
    p.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap (default 0.5)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--device", default=None, help="cuda, cpu (default: cuda if available)")
    return parser


# --------------------------------------------------------------------------- helpers


def _expand_inputs(items) -> list[str]:
    from cet_monai.io import SUPPORTED_SUFFIXES

    paths: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.iterdir() if f.is_file() and any(str(f).lower().endswith(s) for s in SUPPORTED_SUFFIXES))
            if not found:
                raise CetMonaiError(f"{p}: folder holds no tomogram ({', '.join(SUPPORTED_SUFFIXES)})")
            paths.extend(found)
        else:
            paths.append(str(p))
    return paths


def _parse_overrides(items) -> dict:
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise CetMonaiError(f"--set {item!r}: expected ID=VALUE")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def _training_overrides(args) -> dict:
    from cet_monai.networks import PRESETS

    o: dict = {}
    for flag, value in (("--sampling", args.sampling), ("--tilt-range", args.tilt_range)):
        if value is not None and args.method != "fourier":
            raise CetMonaiError(f"{flag} applies to --method fourier only")
    if args.sampling is not None:
        o["sampling"] = args.sampling
    if args.preset is not None:
        preset = PRESETS[args.preset]
        o["network_def#features"] = list(preset["features"])
        o["network_def#dropout"] = preset["dropout"]
        if args.preset == "large" and args.patch_size is None:
            o["patch_size"] = [64, 64, 64]
    for key, value in (("iterations", args.iterations), ("versions", args.versions), ("passes", args.passes), ("tilt_range", args.tilt_range)):
        if value is not None:
            o[key] = value
    if args.patch_size is not None:
        o["patch_size"] = [args.patch_size] * 3
    if args.device:
        o["device"] = f"$torch.device('{args.device}')"
    o["seed"] = args.seed
    o.update(_parse_overrides(args.overrides))
    return o


def _bundle_defaults(method: str) -> dict:
    """:func:`cet_monai.workflows.bundle_defaults` (read once per method)."""
    from cet_monai.workflows import bundle_defaults

    return bundle_defaults(method)


def _check_iterations(method: str, overrides: dict) -> None:
    """:func:`cet_monai.workflows.check_iterations` with the command-line option's name."""
    from cet_monai.workflows import check_iterations

    check_iterations(method, overrides, option="--iterations")


def _check_save_std(method: str, overrides: dict) -> None:
    """Refuse --save-std before any training when K x T = 1 (the bundle's defaults or the options)."""
    from cet_monai.methods import check_std_predictions

    defaults = _bundle_defaults(method)
    check_std_predictions(overrides.get("versions", defaults.get("versions", 1)), overrides.get("passes", defaults.get("passes", 1)))


def _preflight(args, overrides: dict, shapes: dict) -> None:
    """Everything about the options that can be known before training: ``--set`` ids, the
    device, the patch against the network and each tomogram ``shapes[path] = (Z, Y, X)``."""
    from cet_monai.engines import check_config_keys, check_device, check_patch
    from cet_monai.networks import DropoutUNet
    from cet_monai.workflows import METHODS, method_from_settings

    defaults = _bundle_defaults(args.method)
    check_config_keys(list(_parse_overrides(args.overrides)), defaults, f"bundles/{METHODS[args.method]}/configs/train.yaml + bundles/denoising/configs/train.yaml")
    method = method_from_settings(args.method, overrides)  # the method's own checks of its settings, before any tomogram is read
    if getattr(args, "shared_model", False):
        method.check_several_tomograms()
    check_device(args.device)
    patch = overrides.get("patch_size", defaults.get("patch_size"))
    features = overrides.get("network_def#features", defaults.get("network_def", {}).get("features"))
    if not isinstance(patch, list) or not isinstance(features, list):
        return  # an expression: the bundle itself decides
    divisor = DropoutUNet(spatial_dims=3, in_channels=1, out_channels=1, features=features).divisor
    fraction = overrides.get("source#validation_fraction", defaults.get("source", {}).get("validation_fraction", 0.0))
    for path, (z, y, x) in shapes.items():
        check_patch(patch, divisor, (z, y - int(round(y * float(fraction))), x), str(path))


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- commands


def cmd_simulate(args) -> int:
    from cet_monai.data import simulate_to_folder

    t0 = time.perf_counter()
    sim = simulate_to_folder(
        args.outdir, overwrite=args.overwrite, shape=tuple(args.shape), voxel_size=args.voxel_size, snr=args.snr,
        tilt_range=args.tilt_range, tilt_step=args.tilt_step, ctf=True if args.ctf else None,
        membrane_labels=args.membrane_labels, seed=args.seed,
    )
    _say(f"simulated {sim.shape} voxels of {sim.voxel_size} A, SNR {sim.measured_snr():.4f}, "
         f"{len(sim.tilt_angles)} tilts, in {time.perf_counter() - t0:.1f} s -> {args.outdir}/")
    return EXIT_OK


def _denoise_plan(args):
    """Check everything that can be checked before hours of work and decide what to do: returns
    ``(todo, skipped, overrides, settings)`` (:class:`~cet_monai.engines.batch.BatchItem` lists)."""
    from cet_monai.engines import SaveTomogramd, check_writable_folder, volume_stem, work_dir_for
    from cet_monai.engines.batch import BatchItem, output_settings, plan_batch, shared_model_settings
    from cet_monai.io import read_volume

    inputs = _expand_inputs(args.inputs)
    if args.shared_model:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if len(inputs) < 2:
            raise OptionError(f"--shared-model fits one model on several tomograms, and 1 was given: leave it out to fit {inputs[0]} on its own")
        if world > len(inputs):
            raise OptionError(f"--shared-model in {world} processes needs at least one tomogram per process and {len(inputs)} were "
                              f"given: run at most {len(inputs)} processes")
    shapes, unreadable = {}, []
    for path in inputs:  # every input is checked before any long work starts, all reported at once
        try:
            shapes[path] = tuple(read_volume(path, mmap=True, validate=True)[0].shape)
        except (CetMonaiError, OSError, ValueError) as error:
            unreadable.append(f"{path}: {error}")
    if unreadable:
        raise CetMonaiError(f"{len(unreadable)} of {len(inputs)} input(s) cannot be used (nothing was started):\n  "
                            + "\n  ".join(unreadable))
    saver = SaveTomogramd(keys="pred", output=args.output, overwrite=args.overwrite)
    overrides = _training_overrides(args)
    _check_iterations(args.method, overrides)
    if args.save_std:
        _check_save_std(args.method, overrides)

    def work_dir(path, out_path) -> Path:
        if args.shared_model:  # the model's folder; each output's completion record in a subfolder of it
            return _shared_model_dir(args) / Path(volume_stem(out_path)).name
        if args.work_dir:
            return Path(args.work_dir) / Path(volume_stem(path)).name if len(inputs) > 1 else Path(args.work_dir)
        return Path(work_dir_for(out_path))

    saver.check(inputs, only=[])  # several inputs need an output folder
    items = [BatchItem(p, str(saver.output_path(p)), str(work_dir(p, saver.output_path(p)))) for p in inputs]
    settings = output_settings(args.method, overrides, args.save_std)
    if args.shared_model:
        settings = shared_model_settings(settings, inputs)
    todo, skipped = plan_batch(items, settings, overwrite=args.overwrite)
    saver.check(inputs, only=[i.input for i in todo])
    fitted = inputs if args.shared_model and todo else [i.input for i in todo]  # a shared model is fitted on every input
    _preflight(args, overrides, {p: shapes[p] for p in fitted})
    for item in todo:
        check_writable_folder(Path(item.output).parent, "output")
        check_writable_folder(item.work_dir, "checkpoints")
    _check_resources(args, todo, shapes)
    return todo, skipped, overrides, settings


def _check_resources(args, todo, shapes) -> None:
    """Say what the runs will need; refuse what cannot fit on disk (before any work)."""
    from cet_monai.engines.resources import RunEstimate, check_resources, estimate_run, estimate_shared_training

    runs = [(i.input, i.output, estimate_run(shapes[i.input], save_std=args.save_std)) for i in todo]
    fit = []
    if getattr(args, "shared_model", False) and todo:
        world = max(int(os.environ.get("WORLD_SIZE", "1")), min(args.nproc, len(shapes)))
        estimate = RunEstimate(estimate_shared_training(list(shapes.values()), world), 0, 0, 1)
        fit = [(f"fitting one model on {len(shapes)} tomograms", str(_shared_model_dir(args) / "checkpoint.pt"), estimate)]
        _say(f"fitting one model on {len(shapes)} tomograms needs {estimate.describe()}"
             + (f" in the process with the largest share (of {world})" if world > 1 else "") + "; then each is denoised on its own:")
    check_resources(runs + fit, say=_say, refuse_memory=not getattr(args, "ignore_memory_estimate", False))
    if runs and (len(runs) <= 3 or args.verbose):
        for path, _, est in runs:
            _say(f"{path}: {'x'.join(map(str, shapes[path]))} voxels; {est.describe()}")
    elif runs:
        path, _, est = max(runs, key=lambda r: r[2].memory)
        _say(f"{len(runs)} tomograms; the largest, {path}, needs {est.describe()}")


def _held_out_score(workflow) -> str:
    """The run's best held-out score as the summary's quality column reads it (``""`` for a
    bundle without validation)."""
    source = workflow.parser.get_parsed_content("source")
    try:
        best = float(workflow.parser.get_parsed_content("validate#evaluator").state.best_metric)
    except Exception:  # noqa: BLE001 - a bundle without validation: no score to report
        best = float("nan")
    return "" if best == -1 or not math.isfinite(best) else (
        f"held-out PSNR {best:.2f} dB" if source.has_reference else f"held-out loss {-best:.4g}")


def _process_overrides(args, overrides: dict, rank: int, world: int, local_rank: int) -> dict:
    """``overrides`` for this process of ``world``: its own GPU (``cuda:<local rank>``) unless
    ``--device`` says otherwise, and progress bars on rank 0 only."""
    import torch

    overrides = dict(overrides)
    if world > 1:
        if not args.device and torch.cuda.is_available():
            overrides["device"] = f"$torch.device('cuda:{local_rank % torch.cuda.device_count()}')"
        if rank > 0:
            overrides["progress"] = False  # one set of progress bars: rank 0's
    return overrides


def _denoise_with(item, args, checkpoint, overrides: dict, settings: dict, rank: int, started: float, input_std: float, validation: str):
    """Denoise ``item`` with ``checkpoint``, record its output complete and check it; returns its
    :class:`~cet_monai.engines.batch.BatchResult` (``started``: when the item's work began)."""
    from cet_monai.engines.batch import BatchResult, output_check, write_completion
    from cet_monai.workflows import predict

    infer = {k: v for k, v in overrides.items() if k in ("versions", "passes", "seed", "device", "progress")}
    predict([item.input], checkpoint, item.output, method=args.method, overwrite=args.overwrite, save_std=args.save_std, **infer)
    gc.collect()  # the inference's copy of the tomogram goes before the output is checked
    write_completion(item, settings)
    return BatchResult(item.input, item.output, "denoised", rank, time.perf_counter() - started, output_check(item.output, input_std, validation))


def _denoise_item(item, args, overrides: dict, settings: dict, rank: int, label: str):
    """Fit, denoise and record one tomogram; returns its :class:`~cet_monai.engines.batch.BatchResult`."""
    from cet_monai.engines import latest_checkpoint
    from cet_monai.workflows import train

    t0 = time.perf_counter()
    _say(f"{label} {item.input}: training ({args.method}) -> checkpoints in {item.work_dir}/")
    workflow = train(args.method, tomogram=item.input, output_dir=item.work_dir, resume=not args.no_resume, **overrides)
    validation = _held_out_score(workflow)
    input_std = float(workflow.parser.get_parsed_content("source").normalizer.std)
    del workflow
    gc.collect()  # the training's copy of the tomogram goes before inference makes its own
    ckpt = latest_checkpoint(item.work_dir)
    _say(f"{label} trained in {time.perf_counter() - t0:.0f} s; denoising the whole tomogram")
    return _denoise_with(item, args, ckpt, overrides, settings, rank, t0, input_std, validation)


def _each_tomogram(items, run, rank: int, world: int, propagate: bool = False) -> list:
    """``run(item, label)`` for each of this process's ``items``, collecting their results. A
    failure is reported (its traceback in the item's work folder) and the next item started;
    with ``propagate`` (a single tomogram) its error is raised instead (one line, exit 2)."""
    import traceback

    from cet_monai.engines.batch import BatchResult

    results = []
    for i, item in enumerate(items, 1):
        label = f"{'rank %d ' % rank if world > 1 else ''}[{i}/{len(items)}]"
        t0 = time.perf_counter()
        try:
            results.append(run(item, label))
        except Exception as error:  # noqa: BLE001 - reported in the summary; the batch goes on
            if propagate:
                raise
            message = str(_user_error(error) or error) or type(error).__name__
            log = Path(item.work_dir) / "error.log"
            try:
                log.parent.mkdir(parents=True, exist_ok=True)
                log.write_text(traceback.format_exc())
                message += f" (traceback in {log})"
            except OSError:
                pass
            _say(f"{label} {item.input}: FAILED: {message}; going on with the next tomogram")
            results.append(BatchResult(item.input, item.output, "failed", rank, time.perf_counter() - t0, error=message))
    return results


def _denoise_share(args, todo, overrides: dict, settings: dict, rank: int = 0, world: int = 1, local_rank: int = 0):
    """Fit and denoise this rank's share of ``todo``, one model per tomogram. In a batch a
    failure is reported and the next tomogram started; a single tomogram's error propagates
    (one line, exit 2)."""
    from cet_monai.engines.batch import share

    overrides = _process_overrides(args, overrides, rank, world, local_rank)
    return _each_tomogram(share(todo, rank, world), lambda item, label: _denoise_item(item, args, overrides, settings, rank, label),
                          rank, world, propagate=len(todo) == 1 and world == 1)


#: the work folder of ``--shared-model`` in the output folder (checkpoints, logs, completion records)
SHARED_MODEL_DIR = "shared_model_run"


def _shared_model_dir(args) -> Path:
    """Where ``--shared-model`` fits its model: ``--work-dir``, else ``OUTPUT/shared_model_run/``."""
    return Path(args.work_dir) if args.work_dir else Path(args.output) / SHARED_MODEL_DIR


def _denoise_shared(args, todo, overrides: dict, settings: dict, rank: int = 0, world: int = 1, local_rank: int = 0):
    """``--shared-model``: fit ONE model on all the inputs (data parallel with
    ``multi_gpu_train.yaml`` over ``world`` processes, each drawing from its share of the
    tomograms), then denoise this process's tomograms among ``todo`` with it. A failure of the
    fit propagates (no output can be made without it); a tomogram that fails to denoise is
    reported and the next one started."""
    from cet_monai.engines import latest_checkpoint
    from cet_monai.workflows import train

    if not todo:
        return []  # every output is complete: nothing to fit
    inputs = _expand_inputs(args.inputs)
    overrides = _process_overrides(args, overrides, rank, world, local_rank)
    model_dir = _shared_model_dir(args)
    who = f"rank {rank}: " if world > 1 else ""
    _say(f"{who}fitting one model ({args.method}) on {len(inputs)} tomograms"
         + (f" in {world} processes" if world > 1 else "") + f" -> checkpoints in {model_dir}/")
    t0 = time.perf_counter()
    workflow = train(args.method, tomogram=inputs, output_dir=model_dir, resume=not args.no_resume,
                     extra_configs=("multi_gpu_train.yaml",) if world > 1 else (), **overrides)
    validation = _held_out_score(workflow)
    source = workflow.parser.get_parsed_content("source")
    input_std = {str(s.path): float(s.normalizer.std) for s in source.sources}
    names = ", ".join(source.names)
    del workflow, source
    gc.collect()  # the training's copies of the tomograms go before inference makes its own
    _say(f"{who}fitted in {time.perf_counter() - t0:.0f} s, drawing patches from {names}; denoising those")
    ckpt = latest_checkpoint(str(model_dir))
    mine = [item for item in todo if item.input in input_std]  # this process's tomograms (its share of the fit)
    return _each_tomogram(mine, lambda item, label: _denoise_with(item, args, ckpt, overrides, settings, rank, time.perf_counter(),
                                                                  input_std[item.input], validation), rank, world)


def _finish_batch(args, results, skipped, quiet: bool = False) -> int:
    """Report (summary table on stderr and, for an output folder, ``denoise_summary.tsv`` in it)
    and choose the exit code: 1 if any tomogram failed. ``quiet``: write the table only (the
    ``--nproc`` parent prints it)."""
    from cet_monai.engines.batch import SUMMARY_NAME, BatchResult, format_summary, write_summary

    done = {r.input: r for r in results}
    done.update({i.input: BatchResult(i.input, i.output, "skipped", quality="complete output from an earlier run") for i in skipped})
    ordered = [done[k] for k in _expand_inputs(args.inputs) if k in done]
    if Path(args.output).is_dir() and len(ordered) > 1:
        table = write_summary(Path(args.output) / SUMMARY_NAME, ordered)
        if not quiet:
            _say(format_summary(ordered))
            _say(f"summary table: {table}")
    failed = [r for r in ordered if r.status == "failed"]
    if quiet:
        return EXIT_ERROR if failed else EXIT_OK
    for r in ordered:
        if r.status == "skipped" and len(ordered) == 1:
            _say(f"{r.input}: {r.output} is a complete output of this input with these settings: skipped "
                 "(--overwrite to denoise it again)")
        if r.status != "failed":
            print(r.output)
    if failed:
        _say(f"{len(failed)} of {len(ordered)} tomogram(s) failed: {', '.join(r.input for r in failed)}")
    return EXIT_ERROR if failed else EXIT_OK


#: set by ``--nproc`` for the processes it starts: they leave the final report to it
_LAUNCHED_ENV = "CET_MONAI_LAUNCHED"


def _rank_barrier() -> None:
    """Wait until every rank has made its plan (so no rank sees another's fresh output as
    foreign). A short-lived gloo group: the ranks' trainings must not see a process group, or
    MONAI's metrics and Ignite's handlers would synchronise the independent models' values."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    try:
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _merge_rank_results(args, results, skipped, rank: int, world: int) -> int:
    """Each rank writes its rows to a part file; the last rank to finish (ranks may finish hours
    apart, so no collective call waits for them) merges the parts into the summary."""
    import json
    from dataclasses import asdict

    from cet_monai.engines.batch import BatchResult

    folder = Path(args.output) if Path(args.output).is_dir() else Path(args.output).parent
    run_id = "".join(c for c in os.environ.get("TORCHELASTIC_RUN_ID", "run") if c.isalnum() or c in "-_")
    part = folder / f".denoise_summary.{run_id}.rank{rank}.json"
    tmp = part.with_name(part.name + ".tmp")
    tmp.write_text(json.dumps([asdict(r) for r in results]))
    os.replace(tmp, part)
    parts = [folder / f".denoise_summary.{run_id}.rank{r}.json" for r in range(world)]
    own = EXIT_ERROR if any(r.status == "failed" for r in results) else EXIT_OK
    if not all(p.exists() for p in parts):
        return own  # another rank is still working: it will merge
    merged = []
    try:
        for p in parts:
            merged += [BatchResult(**r) for r in json.loads(p.read_text())]
    except (OSError, ValueError):
        return own  # another rank merged and removed the parts at the same moment
    code = _finish_batch(args, merged, skipped, quiet=bool(os.environ.get(_LAUNCHED_ENV)))
    for p in parts:
        p.unlink(missing_ok=True)
    return max(own, code)


def _without_nproc(argv: list[str]) -> list[str]:
    """``argv`` minus ``--nproc N`` (any abbreviation, ``=`` form too): the processes that
    ``--nproc`` starts get their rank from torchrun, and torchrun would misread the option."""
    out, skip = [], False
    for token in argv:
        name = token.split("=", 1)[0]
        if skip:
            skip = False
        elif len(name) >= 4 and "--nproc".startswith(name):
            skip = "=" not in token
        else:
            out.append(token)
    return out


def _launch(args, nproc: int) -> int:
    """``--nproc N``: the same command in N processes started by ``torch.distributed.run``
    (torchrun; standalone: one machine), then the summary they wrote."""
    import subprocess

    from cet_monai.engines.batch import SUMMARY_NAME, read_summary

    summary = Path(args.output) / SUMMARY_NAME
    if summary.exists():
        summary.unlink()  # this run's table replaces the last one; a missing table then means a rank died
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "cet_monai.cli", *_without_nproc(args.argv)]
    env = dict(os.environ, **{_LAUNCHED_ENV: "1"})
    if "OMP_NUM_THREADS" not in env:  # the CPU cores are shared among the processes
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    _say(f"denoising in {nproc} processes (torch.distributed.run)")
    done = subprocess.run(cmd, env=env)
    if not summary.exists():
        _say(f"cet-monai denoise: a process failed (exit {done.returncode}) before the summary was written; "
             "run the same command again: complete outputs are skipped, interrupted ones resume from their checkpoints")
        return EXIT_ERROR
    code = _finish_batch(args, read_summary(summary), skipped=[])  # the ranks' rows, skipped ones included
    return max(code, EXIT_ERROR if done.returncode else EXIT_OK)


def cmd_denoise(args) -> int:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    run = _denoise_shared if args.shared_model else _denoise_share
    if world > 1:  # one of the processes of torchrun (or of --nproc, which runs torchrun)
        if args.nproc > 1:
            raise OptionError("--nproc starts its own processes: under torchrun leave it out (torchrun's --nproc_per_node decides)")
        rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        todo, skipped, overrides, settings = _denoise_plan(args)
        if not args.shared_model:
            _rank_barrier()  # a shared model's fit joins every rank before any output is written
        results = run(args, todo, overrides, settings, rank, world, local_rank)
        return _merge_rank_results(args, results, skipped, rank, world)
    todo, skipped, overrides, settings = _denoise_plan(args)
    # a shared model is fitted on every input (each process needs one), even when few are left to denoise
    nproc = min(args.nproc, len(todo) + len(skipped) if args.shared_model and todo else len(todo))
    if nproc > 1:
        return _launch(args, nproc)
    return _finish_batch(args, run(args, todo, overrides, settings), skipped)


def cmd_predict(args) -> int:
    from cet_monai.methods import load_record
    from cet_monai.workflows import predict

    inputs = _expand_inputs(args.inputs)
    record = load_record(args.checkpoint)
    extra = {k: v for k, v in (("versions", args.versions), ("passes", args.passes)) if v is not None}
    if args.device:
        import torch

        extra["device"] = torch.device(args.device)  # the object itself: no YAML expression written here
    for w in predict(inputs, args.checkpoint, args.output, method=record.method.name, overwrite=args.overwrite, save_std=args.save_std, **extra):
        print(w)
    return EXIT_OK


def cmd_demo(args) -> int:
    from cet_monai.demo import run_demo

    overrides = _training_overrides(args)
    _check_iterations(args.method, overrides)
    shape = tuple(args.shape) if args.shape else tuple(_bundle_defaults(args.method).get("simulation", {}).get("shape", (64, 128, 128)))
    _preflight(args, overrides, {"the simulated tomogram": shape})
    report = run_demo(args.output, overwrite=args.overwrite, method=args.method, shape=args.shape, snr=args.snr, **overrides)
    print(report)
    return EXIT_OK


def cmd_segment(args) -> int:
    from cet_monai.segmentation.predict import segment

    result = segment(args.input, args.output, args.checkpoint, probability_path=args.probability, overwrite=args.overwrite,
                     device=args.device, overlap=args.overlap, threshold=args.threshold, progress=True)
    print(result.get("labels", args.output) if isinstance(result, dict) else args.output)
    return EXIT_OK


COMMANDS = {"demo": cmd_demo, "simulate": cmd_simulate, "denoise": cmd_denoise, "predict": cmd_predict, "segment": cmd_segment}


def _user_error(error: BaseException) -> CetMonaiError | None:
    """The :class:`CetMonaiError` behind ``error``, if any (:func:`cet_monai.errors.user_error`)."""
    from cet_monai.errors import user_error

    return user_error(error)


def _terminate(signum, frame):  # a scheduler's SIGTERM (job time limit, scancel) ends the run like Ctrl-C
    raise Terminated


def _configure_process(verbose: bool) -> None:
    """Logging level, warning filters and the SIGTERM handler of a cet-monai process."""
    import signal

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    if not verbose:
        import warnings

        warnings.filterwarnings("ignore", category=UserWarning, module="monai")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        os.environ.setdefault("PYTHONWARNINGS", "ignore")
        # Ignite logs an engine's exception with its traceback before re-raising it; the command
        # reports it itself (one line for a user's error, a clean exit for Ctrl-C / SIGTERM)
        logging.getLogger("ignite").setLevel(logging.CRITICAL)
    signal.signal(signal.SIGTERM, _terminate)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    _configure_process(args.verbose)
    try:
        return COMMANDS[args.command](args)
    except (KeyboardInterrupt, Terminated) as stop:
        _say(("terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted")
             + "; run the same command again to resume from the last checkpoint")
        return EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_INTERRUPTED
    except (CetMonaiError, FileNotFoundError) as error:
        _say(f"cet-monai {args.command}: error: {error}")
        return EXIT_USAGE
    except Exception as error:  # noqa: BLE001
        cause = _user_error(error)
        if cause is not None:
            _say(f"cet-monai {args.command}: error: {cause}")
            return EXIT_USAGE
        raise


if __name__ == "__main__":
    sys.exit(main())
