"""Train the default (recorrupted pairs) once, then score the trained network several ways.

Prints one JSON row per variant: gain over the PSNR-best Gaussian filter (dB), SSIM, the
best-SSIM Gaussian's, and the slope of clean on the output without a fit. Variants:

* ``K8``: the default inference, K = 8 noise draws of ``a`` (always run), and ``K8, no flips``:
  the same draws without the method's wedge-keeping flips (run when the method flips its versions);
  with a noise bank (``--set noise_bank=B``) also the draws made on each window's own grid;
* ``--inference``: K = 16 and 32, the network on ``y`` itself (once, and in 8 flipped copies), draws of
  ``a/2`` and ``0.7 a``;
* ``--oracle-spectrum [smoothed|expected]``: the whole run with the true noise's spectrum instead
  of the estimate (not a method): ``smoothed``, the 5x5x5-averaged periodogram of this tomogram's
  noise; ``expected``, the mean periodogram of ``--realisations`` x 2 fresh noise reconstructions
  of the same tilt series (unsmoothed: the wedge's edges and the zero at DC stay sharp); with
  ``--oracle-hybrid`` mixed with the estimate (the truth's fine structure at the estimate's shell
  levels, or the reverse; ``docs/denoising.md``, tenth pass);
* ``--wiener-draws``: the noise drawn with ``P / (2 - P / T)`` (``T``: the tomogram's smoothed
  periodogram), less where the signal dominates: averaged over draws, a *linear* network then
  gives the Wiener filter of ``y`` rather than of ``y + z`` (a hypothesis; measured in
  ``docs/denoising.md``, eighth pass);
* ``--infer-seeds N ...``: the trained network also denoises other seeds' tomograms (same
  setting, each with its own estimated spectrum): how much it has specialised to its own;
* ``--spectrum-scale F``, ``--relative-level``, ``--fixed-noise M``: the estimate times ``F``;
  each local noise level divided by the tomogram's median for that shape; each patch's noise
  cut from one of ``M`` whole-tomogram noise volumes drawn once (``M = 1``: a fixed synthetic
  even/odd split) instead of drawn fresh; with ``--oracle-spectrum expected --real-noise`` those
  volumes are fresh noise reconstructions of the same tilt series (probes, not methods;
  ``docs/denoising.md``, eighth pass);
* ``--halves-noise [swapped|fixed]``, ``--on-halves``, ``--clip {both,input,target}``: train on the
  simulation's own even/odd halves as the pairs (two-halves Noise2Noise through this method's
  pipeline); score the network on the two halves as Noise2Noise is applied; clip pairs and draws
  as the halves are clipped when normalised (probes: ``docs/denoising.md``, ninth pass);
* ``--low-shells cylindrical``: below the estimator's ``k0`` the estimate replaced by a model
  separable in cylindrical coordinates about the tilt axis (log power ``A(|k_xz|, angle) +
  B(|k_y|)``, fitted above ``k0``: small ``|k_xz|`` is measured at large ``|k_y|``, where noise
  dominates), instead of the library's ramp cap (a probe; ``docs/denoising.md``, tenth pass);
* ``--recalibrate-bn N``: the network's batch-normalisation statistics recomputed over N training
  batches after training (the running averages hold the last few dozen steps' draws);
* ``--dropout-passes``: for a network trained with dropout (``--set network_def#dropout=P``): the
  draws with dropout off (``passes 0``), each of the K draws through its own thinned network
  (same cost as ``K8``, whose draws share one thinned network per pass), and K = 8 draws x T = 4
  dropout passes (4x the cost): dropout with Monte-Carlo passes on top of recorrupted pairs
  (``docs/denoising.md``, tenth pass);
* ``--shell-blend``: per radial shell (0.02 cycles/voxel) the estimate ``b * output + c * y`` with
  ``b, c`` fitted (1) with the clean tomogram (an oracle, an upper bound) and (2) without it, on
  held-out recorrupted pairs ``(y + a z / sqrt 2, y - sqrt 2 z / a)`` whose noises are
  independent; (2) also restricted to the shells below 0.06 and 0.10 cycles/voxel.

    python benchmarks/recorrupted_variants.py --setting wbp --snr 0.02 --set iterations=1600
    python benchmarks/recorrupted_variants.py --inference --shell-blend --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from single_tomogram import SETTINGS, slope  # noqa: E402

from cet_monai.data import simulate_tomogram  # noqa: E402
from cet_monai.inferers import IdentitySampler, MCDropoutInferer  # noqa: E402
from cet_monai.metrics import best_gaussian, psnr, ssim  # noqa: E402
from cet_monai.transforms import colored_noise  # noqa: E402
from cet_monai.workflows import denoise_with_network, train  # noqa: E402

SHELL = 0.02  # cycles/voxel


def _shells(shape) -> torch.Tensor:
    kz = torch.fft.fftfreq(shape[0])[:, None, None]
    ky = torch.fft.fftfreq(shape[1])[None, :, None]
    kx = torch.fft.rfftfreq(shape[2])[None, None, :]
    return (torch.sqrt(kz**2 + ky**2 + kx**2) / SHELL).long()


def _fit_blend(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, shell: torch.Tensor, n: int):
    """Per-shell real (beta, gamma) minimising sum |beta a + gamma b - c|^2 (spectra a, b, c)."""
    idx = shell.flatten()

    def total(p, q):
        return torch.zeros(n, dtype=torch.float64).index_add_(0, idx, (p.conj() * q).real.flatten())

    gram = torch.stack([torch.stack([total(a, a), total(a, b)], -1), torch.stack([total(a, b), total(b, b)], -1)], -2)
    rhs = torch.stack([total(a, c), total(b, c)], -1)
    return gram, rhs


@contextlib.contextmanager
def noise_halves_recorded(count: int, first_seed: int):
    """While active, the simulator also reconstructs ``count`` fresh realisations of its projection
    noise (same tilts, filter, wedge and noise profile; generators seeded ``first_seed``,
    ``first_seed + 1``, ...) after its own tilt series. Yields the list it fills with their
    ``(even, odd)`` half reconstructions (in the simulator's noise units: times
    ``noise_sigma_per_projection_pixel * sqrt 2`` they are the tomogram's halves' noise)."""
    from cet_monai.data import simulate as _simulate

    halves = []
    tilt_series = _simulate._tilt_series

    def recording(*a, **kw):
        out = tilt_series(*a, **kw)
        for r in range(count):
            a_r = list(a)
            a_r[5] = np.random.default_rng(first_seed + r)  # the noise generator: fresh projection noise
            _, ne, no = tilt_series(*a_r, **kw)
            halves.append((ne, no))
        return out

    _simulate._tilt_series = recording
    try:
        yield halves
    finally:
        _simulate._tilt_series = tilt_series


def unit_amplitude_noise(shape, spectrum, generator) -> np.ndarray:
    """Noise on the grid ``shape`` whose every Fourier coefficient has exactly the power ``spectrum``
    says (amplitude ``sqrt(P N)``) and a random phase: white noise's coefficients divided by their
    own modulus (a phase-randomised surrogate; real where the rfft's coefficients are real)."""
    w = torch.fft.rfftn(torch.randn(shape, generator=generator))
    w = w / w.abs().clamp_min(1e-12) * float(np.sqrt(np.prod(shape)))
    return torch.fft.irfftn(w * spectrum.amplitude(shape), s=shape).numpy()


def install_probes(args, sim, noise_halves: list) -> None:
    """Replace pieces of the library for the probes the options ask for (oracle spectra, Wiener-weighted
    or scaled draws, fixed noise volumes or the simulation's own halves as the pairs, clipped pairs,
    relative noise levels); none is a method. ``noise_halves``:
    the fresh noise reconstructions :func:`noise_halves_recorded` made with the simulation."""
    from cet_monai.normalize import TomogramNormalizer

    extra_noise = [v for ne, no in noise_halves for v in ((ne + no) / 2, (ne - no) / 2)]  # two independent samples each

    norm = TomogramNormalizer().fit(sim.noisy)  # the training source's normaliser (same percentiles)
    # the simulated noise reconstructions (extra_noise) in the normalised tomogram's units
    noise_scale = sim.params["noise_sigma_per_projection_pixel"] * np.sqrt(2.0) / norm.std
    this_noise = norm.transform(sim.noisy).astype(np.float64) - norm.transform(sim.clean)  # this tomogram's own noise, normalised
    if args.oracle_spectrum == "expected":
        from cet_monai.methods import RecorruptedPairs
        from cet_monai.noise_spectrum import NoiseSpectrum, _frequencies, periodogram, radial_profile

        mean_power = sum(periodogram(noise_scale * n) for n in extra_noise) / len(extra_noise)
        _, measured = radial_profile(periodogram(this_noise))
        _, expected = radial_profile(mean_power)
        print(json.dumps({"this noise / expected spectrum per shell": [round(float(v), 3) for v in measured / expected]}))
        oracle = NoiseSpectrum(mean_power, {"estimator": "oracle, expected"})
        if args.oracle_hybrid:
            estimate = RecorruptedPairs().estimate_spectrum(norm.transform(sim.noisy).astype(np.float32), seed=args.seed)
            estimated = estimate.on_grid(mean_power.shape, rfft=False)
            centres, est_profile = radial_profile(estimated)
            ratio = np.interp(np.sqrt(sum(f**2 for f in _frequencies(mean_power.shape))), centres, est_profile / expected)  # estimate / truth, per |k|
            grid = mean_power * ratio if args.oracle_hybrid == "estimate-shells" else estimated / ratio
            print(json.dumps({"hybrid": args.oracle_hybrid, "estimate / expected per shell": [round(float(v), 3) for v in est_profile / expected]}))
            oracle = NoiseSpectrum(grid, {"estimator": f"oracle hybrid, {args.oracle_hybrid}"})
        RecorruptedPairs.estimate_spectrum = lambda self, image, seed=0: oracle
    elif args.oracle_spectrum == "own":
        from cet_monai.methods import RecorruptedPairs
        from cet_monai.noise_spectrum import NoiseSpectrum, periodogram

        oracle = NoiseSpectrum(periodogram(this_noise), {"estimator": "oracle, own"})
        RecorruptedPairs.estimate_spectrum = lambda self, image, seed=0: oracle
    elif args.oracle_spectrum:
        from scipy import ndimage

        from cet_monai.methods import RecorruptedPairs
        from cet_monai.noise_spectrum import NoiseSpectrum, periodogram

        oracle = NoiseSpectrum(ndimage.uniform_filter(periodogram(this_noise), size=5, mode="wrap"), {"estimator": "oracle"})
        RecorruptedPairs.estimate_spectrum = lambda self, image, seed=0: oracle
    if args.low_shells == "cylindrical":
        from cet_monai.methods import RecorruptedPairs
        from cet_monai.noise_spectrum import NoiseSpectrum, _frequencies, periodogram, radial_profile

        plain_estimate = RecorruptedPairs.estimate_spectrum
        _, true_profile = radial_profile(periodogram(this_noise))

        def cylindrical_estimate(self, image, seed=0):
            """Below k0, the estimate replaced by a model separable in cylindrical coordinates about
            the tilt axis (Y): log P = A(|k_xz|, angle in the XZ plane) + B(|k_y|), fitted where
            |k| >= k0 (small |k_xz| is measured at large |k_y|, small |k_y| at large |k_xz|)."""
            spec = plain_estimate(self, image, seed)
            grid, k0 = spec.grid, float(spec.info.get("k0", float("nan")))
            if not np.isfinite(k0):
                return spec
            fz, fy, fx = np.broadcast_arrays(*_frequencies(grid.shape))
            r = np.hypot(fz, fx)
            k = np.hypot(r, fy)
            step = 1.0 / max(grid.shape)
            n_angles = 90
            angle = np.rint(np.mod(np.arctan2(fz, fx), np.pi) / np.pi * n_angles).astype(int) % n_angles
            cell = (np.rint(r / step).astype(int) * n_angles + angle).ravel()
            ky = np.rint(np.abs(fy) / step).astype(int).ravel()
            logp = np.log(np.maximum(grid, 1e-6 * float(np.median(grid)))).ravel()
            trusted = (k >= k0).ravel()
            a, b = np.zeros(cell.max() + 1), np.zeros(ky.max() + 1)
            for _ in range(10):  # alternating least squares of the two additive terms
                a = np.bincount(cell[trusted], logp[trusted] - b[ky[trusted]], a.size) / np.maximum(np.bincount(cell[trusted], None, a.size), 1)
                b = np.bincount(ky[trusted], logp[trusted] - a[cell[trusted]], b.size) / np.maximum(np.bincount(ky[trusted], None, b.size), 1)
            model = np.exp(a[cell] + b[ky]).reshape(grid.shape)
            low = (k < k0) & (k > 0)
            out = grid.copy()
            out[low] = model[low]
            for name, g in (("estimate", grid), ("cylindrical", out)):
                _, prof = radial_profile(g if g.shape == tuple(sim.noisy.shape) else NoiseSpectrum(g).on_grid(sim.noisy.shape, rfft=False))
                print(json.dumps({f"{name} / this noise per shell": [round(float(v), 3) for v in prof / true_profile], "k0": k0}), flush=True)
            return NoiseSpectrum(out, {**spec.info, "low_shells": "cylindrical"})

        RecorruptedPairs.estimate_spectrum = cylindrical_estimate
    if args.wiener_draws:
        from cet_monai.methods import RecorruptedPairs
        from cet_monai.noise_spectrum import NoiseSpectrum, _fine_periodogram

        plain_estimate = RecorruptedPairs.estimate_spectrum

        def wiener_estimate(self, image, seed=0):
            spec = plain_estimate(self, image, seed)
            vol = np.asarray(image)[0] if np.asarray(image).ndim == 4 else np.asarray(image)
            total = _fine_periodogram(vol, max(spec.grid.shape))
            assert total.shape == spec.grid.shape, (total.shape, spec.grid.shape)
            fraction = np.clip(spec.grid / np.maximum(total, 1e-30), 0.0, 1.0)
            print(json.dumps({"wiener draws: mean factor": round(float((1 / (2 - fraction)).mean()), 3)}), flush=True)
            return NoiseSpectrum(spec.grid / (2.0 - fraction), {**spec.info, "wiener_draws": True})

        RecorruptedPairs.estimate_spectrum = wiener_estimate
    if args.real_noise and (args.oracle_spectrum != "expected" or not 0 < args.fixed_noise <= len(extra_noise)):
        raise SystemExit(f"--real-noise needs --oracle-spectrum expected and 1 <= --fixed-noise <= {len(extra_noise)}")
    if args.fixed_noise:
        from cet_monai.transforms import recorrupt as _rc

        fixed_state = {"volumes": None, "start": None, "rng": np.random.default_rng(args.train_seed)}
        plain_pair_call = _rc.RandRecorruptedPaird.__call__

        def pair_call(self, data):
            start = data.get("patch_start")  # validation pairs (no patch place) keep fresh noise
            fixed_state["start"] = None if start is None else [int(v) for v in np.asarray(start).reshape(-1)]
            fixed_state["margin"] = [int(v) for v in np.asarray(data.get("patch_margin", 0)).reshape(-1)]
            return plain_pair_call(self, data)

        def fixed_colored_noise(white, spectrum):
            if fixed_state["start"] is None:
                return colored_noise(white, spectrum)
            if fixed_state["volumes"] is None and args.halves_noise:  # y + z = even, y - z = odd: two-halves Noise2Noise's pair
                fixed_state["volumes"] = [((sim.even.astype(np.float64) - sim.odd) / 2 / norm.std).astype(np.float32)]
            if fixed_state["volumes"] is None and args.real_noise:
                fixed_state["volumes"] = [(noise_scale * n).astype(np.float32) for n in extra_noise[:args.fixed_noise]]
            if fixed_state["volumes"] is None:  # drawn on the whole tomogram's grid: its exact spectrum
                gen = torch.Generator().manual_seed(10_000 + args.train_seed)
                shape = sim.noisy.shape
                fixed_state["volumes"] = [colored_noise(torch.randn((1,) + shape, generator=gen), spectrum)[0].numpy()
                                          for _ in range(args.fixed_noise)] if not args.unit_amplitude else [
                    unit_amplitude_noise(shape, spectrum, gen) for _ in range(args.fixed_noise)]
            size = white.shape[-3:]
            margin = fixed_state["margin"] * 3 if len(fixed_state["margin"]) == 1 else fixed_state["margin"]
            out = []
            for _ in range(white.shape[0]):
                vol = fixed_state["volumes"][int(fixed_state["rng"].integers(args.fixed_noise))]
                idx = [np.arange(st - m, st - m + n) % d for st, m, n, d in zip(fixed_state["start"], margin, size, vol.shape)]
                cut = vol[np.ix_(*idx)]
                # the halves' pairs both ways round (even -> odd and odd -> even), as Noise2Noise swaps them
                out.append(-cut if args.halves_noise == "swapped" and fixed_state["rng"].random() < 0.5 else cut)
            return torch.from_numpy(np.stack(out)).to(white.device)

        _rc.RandRecorruptedPaird.__call__ = pair_call
        _rc.colored_noise = fixed_colored_noise
    if args.spectrum_scale != 1.0:
        from cet_monai.methods import RecorruptedPairs

        unscaled_estimate = RecorruptedPairs.estimate_spectrum
        RecorruptedPairs.estimate_spectrum = lambda self, image, seed=0: unscaled_estimate(self, image, seed).scaled(args.spectrum_scale)
    if args.clip != "none":
        from cet_monai.inferers import samplers as _samplers
        from cet_monai.transforms import recorrupt as _rc

        bounds = ((norm.lower_value - norm.mean) / norm.std, (norm.upper_value - norm.mean) / norm.std)
        unclipped_pairs = _rc.RandRecorruptedPaird.__call__

        def clipped_pairs(self, data):
            items = unclipped_pairs(self, data)
            for item in items:
                for key in {"both": ("image", "label"), "input": ("image",), "target": ("label",)}[args.clip]:
                    item[key] = item[key].clamp(*bounds)
            return items

        _rc.RandRecorruptedPaird.__call__ = clipped_pairs
        if args.clip in ("both", "input"):
            unclipped_versions = _samplers.RecorruptedSampler.versions

            def clipped_versions(self, windows, generator, count=None):
                versions, extra = unclipped_versions(self, windows, generator, count)
                return versions.clamp(*bounds), extra

            _samplers.RecorruptedSampler.versions = clipped_versions
    if args.relative_level:
        from cet_monai import noise_spectrum as _ns
        from cet_monai.transforms import recorrupt as _rc

        absolute_level = _ns.local_noise_level
        normalised = torch.as_tensor(norm.transform(sim.noisy), dtype=torch.float32)
        medians = {}

        def relative_level(patches, spectrum):
            shape = tuple(int(n) for n in patches.shape[-3:])
            key = (id(spectrum), shape)
            if key not in medians:
                gen = np.random.default_rng(0)
                padded = np.pad(normalised.numpy(), [(max(0, s - n),) * 2 for s, n in zip(shape, normalised.shape)], mode="reflect")
                crops = []
                for _ in range(128):
                    st = [gen.integers(0, n - s + 1) for n, s in zip(padded.shape, shape)]
                    crops.append(padded[tuple(slice(a, a + s) for a, s in zip(st, shape))])
                medians[key] = float(absolute_level(torch.from_numpy(np.stack(crops)), spectrum).median())
                print(json.dumps({"median local level": medians[key], "shape": shape}), flush=True)
            return absolute_level(patches, spectrum) / medians[key]

        _ns.local_noise_level = relative_level
        _rc.local_noise_level = relative_level


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setting", default="wbp", choices=list(SETTINGS))
    p.add_argument("--snr", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-seed", type=int, default=None,
                   help="seed of the training (patches, pairs, fixed noise volumes, initial weights); default --seed: "
                        "another value trains the same tomogram again")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--inference", action="store_true", help="also score the inference variants")
    p.add_argument("--shell-blend", action="store_true", help="also score the per-shell blends")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--oracle-spectrum", nargs="?", const="smoothed", choices=("smoothed", "expected", "own"),
                   help="train and denoise with the TRUE noise spectrum instead of the estimate (not a method): "
                        "'smoothed' (default) the 5x5x5 average of the periodogram of normalised noisy minus normalised "
                        "clean; 'expected' the mean periodogram of --realisations fresh noise reconstructions of the same "
                        "tilt series (no smoothing: the missing wedge and the zero at DC stay sharp); 'own' the unsmoothed "
                        "periodogram of this tomogram's own noise (with --fixed-noise: drawn on its grid, the pairs' "
                        "noises are uncorrelated on average over the tomogram, coefficient by coefficient)")
    p.add_argument("--oracle-hybrid", choices=("estimate-shells", "estimate-detail"),
                   help="with --oracle-spectrum expected: 'estimate-shells' the expected spectrum rescaled, shell by shell of "
                        "|k|, to the estimate's radial profile (the truth's fine structure, the estimate's levels); "
                        "'estimate-detail' the estimate rescaled to the expected radial profile (the estimate's fine "
                        "structure, the true levels): which of the two the estimate loses on")
    p.add_argument("--low-shells", choices=("ramp", "cylindrical"), default="ramp",
                   help="below the estimator's lowest noise-dominated shell k0: 'ramp' (the library's cap), or "
                        "'cylindrical': a model separable in cylindrical coordinates about the tilt axis, "
                        "A(|k_xz|, angle) + B(|k_y|) in log power, fitted above k0 (a probe)")
    p.add_argument("--wiener-draws", action="store_true",
                   help="draw the noise with P / (2 - P / T) instead of P (T: the tomogram's smoothed periodogram): "
                        "averaged over draws, a linear network then gives the Wiener filter of y itself")
    p.add_argument("--infer-seeds", type=int, nargs="*", default=[],
                   help="also denoise the tomograms of these seeds (same setting) with the network trained on --seed, "
                        "each with its own estimated spectrum: a network that has specialised to its own tomogram's noise "
                        "does better on another")
    p.add_argument("--relative-level", action="store_true",
                   help="divide each patch's / window's local noise level by the tomogram's median level for that "
                        "shape: the spectrum's own scale where noise dominates is kept, only the variation is applied")
    p.add_argument("--spectrum-scale", type=float, default=1.0,
                   help="multiply the estimated spectrum by this factor (>1: stronger drawn noise, which also pairs "
                        "input and target noises with a negative correlation of P - factor P); a probe, not a method")
    p.add_argument("--fixed-noise", type=int, default=0, metavar="M",
                   help="train on M fixed whole-tomogram noise volumes drawn once (each patch's noise cut from one of "
                        "them at the patch's place), not fresh noise per patch: with M = 1 the pairs (y + z, y - z) are one "
                        "fixed synthetic even/odd split, as in two-halves Noise2Noise; inference unchanged")
    p.add_argument("--unit-amplitude", action="store_true",
                   help="with --fixed-noise: each volume's Fourier coefficients have exactly the spectrum's amplitude and "
                        "a random phase (a phase-randomised surrogate) instead of a complex Gaussian amplitude")
    p.add_argument("--real-noise", action="store_true",
                   help="with --oracle-spectrum expected and --fixed-noise M: the M noise volumes are fresh noise "
                        "reconstructions of the simulation's own tilt series (real reconstruction noise, not a Gaussian "
                        "field drawn with its spectrum)")
    p.add_argument("--realisations", type=int, default=24, help="noise reconstructions for --oracle-spectrum expected")
    p.add_argument("--halves-noise", nargs="?", const="swapped", choices=("swapped", "fixed"), default=None,
                   help="train on the fixed noise z = (even - odd) / 2 of the simulation's own half tomograms (with a = 1 the "
                        "pairs (y + z, y - z) ARE the even/odd halves, clipping aside): two-halves Noise2Noise through this "
                        "method's pipeline; 'swapped' (default) flips z's sign at random per patch (odd -> even as well, as "
                        "Noise2Noise swaps the halves), 'fixed' always even -> odd")
    p.add_argument("--on-halves", action="store_true",
                   help="also score the network as two-halves Noise2Noise is applied: the mean of its outputs on the "
                        "simulation's even and odd half tomograms, each in 8 flipped copies (the halves are not a "
                        "single-tomogram input: a probe)")
    p.add_argument("--clip", default="none", choices=("none", "both", "input", "target"),
                   help="clip the pairs' input and/or target (and, for the input, the inference draws y + a z) to the "
                        "normaliser's percentile bounds, as the even/odd halves are clipped when normalised (6 %% of a "
                        "half's voxels at SNR 0.05, 1 %% of the tomogram's); a probe, not a method setting: it helped the "
                        "SIRT-like tomogram at SNR 0.05 and lost at SNR 0.1 and on the membrane phantom (docs/denoising.md, "
                        "ninth pass)")
    p.add_argument("--recalibrate-bn", type=int, default=0, metavar="N",
                   help="also score the network after its batch-normalisation statistics are recomputed as the plain "
                        "mean over N fresh training batches (torch.optim.swa_utils.update_bn) instead of the running "
                        "average of the last few dozen steps")
    p.add_argument("--dropout-passes", action="store_true",
                   help="with a network trained with dropout (--set network_def#dropout=P): also score the draws with "
                        "dropout off, each draw through its own thinned network (same cost), and 8 draws x 4 dropout passes")
    args = p.parse_args(argv)
    if args.train_seed is None:
        args.train_seed = args.seed
    if args.unit_amplitude and not args.fixed_noise:
        p.error("--unit-amplitude shapes the --fixed-noise volumes: add --fixed-noise M")
    if args.oracle_hybrid and args.oracle_spectrum != "expected":
        p.error("--oracle-hybrid mixes the estimate with the expected spectrum: add --oracle-spectrum expected")
    if args.halves_noise:
        if args.fixed_noise or args.real_noise:
            p.error("--halves-noise trains on the one volume (even - odd) / 2: leave out --fixed-noise and --real-noise")
        args.fixed_noise = 1
    torch.set_num_threads(args.threads)
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.overrides)}
    if args.dropout_passes and not float(overrides.get("network_def#dropout") or 0) > 0:
        p.error("--dropout-passes scores a network trained with dropout: add --set network_def#dropout=P (P > 0)")
    with noise_halves_recorded(args.realisations if args.oracle_spectrum == "expected" else 0, 10_000) as noise_halves:
        sim = simulate_tomogram(shape=(64, 128, 128), snr=args.snr, seed=args.seed, **SETTINGS[args.setting])
    gauss = best_gaussian(sim.noisy, sim.clean)
    install_probes(args, sim, noise_halves)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        wf = train("recorrupted", output_dir=tmp, volume=sim.noisy.astype(np.float32), seed=args.train_seed, progress=False, **overrides)
        train_s = time.perf_counter() - t0
    net = wf.parser.get_parsed_content("network").eval()
    source = wf.parser.get_parsed_content("source")
    method = wf.parser.get_parsed_content("method")  # fitted: it carries the estimated spectrum
    spectrum = method.spectrum
    alpha = method.alpha

    def inferer(k, a):
        """The method's own window inferer with K = k draws at a = ``a`` (a = 0: the network on y itself,
        k flipped copies of each window when k > 1)."""
        if a == 0:
            return MCDropoutInferer(roi_size=list(method.patch_size), sampler=IdentitySampler(k), passes=1, sw_batch_size=2,
                                    overlap=0.5, mode="gaussian", seed=args.seed, flip_versions=k > 1)
        return dataclasses.replace(method, alpha=a).window_inferer(versions=k, passes=1, seed=args.seed)

    def score(name, estimate):
        out = source.normalizer.inverse(np.asarray(estimate, np.float32))
        row = {"setting": args.setting, "snr": args.snr, "seed": args.seed, **({} if args.train_seed == args.seed else {"train_seed": args.train_seed}),
               "overrides": overrides, "variant": name,
               "gain_db": round(float(psnr(out, sim.clean) - gauss["psnr"].value), 3), "ssim": round(float(ssim(out, sim.clean)), 4),
               "gaussian_ssim": round(float(gauss["ssim"].value), 4), "slope": round(float(slope(out, sim.clean)), 3),
               "train_s": round(train_s)}
        if method.target_lowpass == "auto":  # the cutoff the run set from the tomogram (None: off)
            row["lowpass_cutoff"] = method.lowpass_cutoff()
        print(json.dumps(row), flush=True)

    k8 = denoise_with_network(net, source.image, inferer(8, alpha))
    score("K8", k8)
    if method.flip_versions:
        plain = dataclasses.replace(method, flip_versions=False).window_inferer(versions=8, passes=1, seed=args.seed)
        score("K8, no flips", denoise_with_network(net, source.image, plain))
    if args.recalibrate_bn:
        from torch.optim.swa_utils import update_bn

        loader = wf.parser.get_parsed_content("train#dataloader")
        batches = []
        while len(batches) < args.recalibrate_bn:
            for batch in loader:
                batches.append(batch["image"] if isinstance(batch, dict) else batch[0]["image"])
                if len(batches) == args.recalibrate_bn:
                    break
        recalibrated = copy.deepcopy(net)  # the variants after this one score the network as trained
        with torch.no_grad():
            update_bn(batches, recalibrated)
        recalibrated.eval()
        score(f"K8, batch-norm statistics over {args.recalibrate_bn} training batches",
              denoise_with_network(recalibrated, source.image, inferer(8, alpha)))
    if method.noise_bank:
        per_window = dataclasses.replace(method, noise_bank=0).window_inferer(versions=8, passes=1, seed=args.seed)
        score("K8, each window's noise drawn on its own grid", denoise_with_network(net, source.image, per_window))
    for other in args.infer_seeds:
        from cet_monai.normalize import TomogramNormalizer

        sim_b = simulate_tomogram(shape=(64, 128, 128), snr=args.snr, seed=other, **SETTINGS[args.setting])
        gauss_b = best_gaussian(sim_b.noisy, sim_b.clean)
        norm_b = TomogramNormalizer().fit(sim_b.noisy)
        image_b = torch.as_tensor(norm_b.transform(sim_b.noisy), dtype=torch.float32)[None]
        method_b = method.with_spectrum(method.estimate_spectrum(image_b, seed=args.seed))
        out_b = norm_b.inverse(denoise_with_network(net, image_b, method_b.window_inferer(versions=8, passes=1, seed=args.seed)))
        print(json.dumps({"setting": args.setting, "snr": args.snr, "seed": args.seed, "overrides": overrides,
                          "variant": f"K8 on the seed-{other} tomogram", "gain_db": round(float(psnr(out_b, sim_b.clean) - gauss_b["psnr"].value), 3),
                          "ssim": round(float(ssim(out_b, sim_b.clean)), 4)}), flush=True)
    if args.on_halves:
        halves = [torch.as_tensor(source.normalizer.transform(h), dtype=torch.float32)[None] for h in (sim.even, sim.odd)]
        score("on the two halves, 8 flipped copies each", np.mean([denoise_with_network(net, h, inferer(8, 0.0)) for h in halves], axis=0))
    if args.dropout_passes:
        score("K8, dropout off", denoise_with_network(net, source.image, method.window_inferer(versions=8, passes=0, seed=args.seed)))
        own = method.window_inferer(versions=8, passes=1, seed=args.seed)
        own.sampler.one_network_per_version = True  # draw n -> thinned network n (Self2Self's pairing of masks and networks)
        score("K8, one thinned network per draw", denoise_with_network(net, source.image, own))
        score("K8 x T4 dropout passes", denoise_with_network(net, source.image, method.window_inferer(versions=8, passes=4, seed=args.seed)))
    if args.inference:
        score("K16", denoise_with_network(net, source.image, inferer(16, alpha)))
        score("K32", denoise_with_network(net, source.image, inferer(32, alpha)))
        score("on y, no draw", denoise_with_network(net, source.image, inferer(1, 0.0)))
        score("on y, 8 flipped copies", denoise_with_network(net, source.image, inferer(8, 0.0)))
        score("K8, a/2", denoise_with_network(net, source.image, inferer(8, 0.5 * alpha)))
        score("K8, 0.7 a", denoise_with_network(net, source.image, inferer(8, 0.7 * alpha)))
    if args.shell_blend:
        y = source.image[0].double()
        shape = tuple(y.shape)
        shell = _shells(shape)
        n = int(shell.max()) + 1
        f_out, f_y = torch.fft.rfftn(torch.as_tensor(k8).double()), torch.fft.rfftn(y)
        clean = torch.as_tensor(source.normalizer.transform(sim.clean), dtype=torch.float64)
        gram, rhs = _fit_blend(f_out, f_y, torch.fft.rfftn(clean), shell, n)
        oracle = torch.linalg.solve(gram + 1e-9 * torch.eye(2), rhs)
        score("shell blend, oracle", torch.fft.irfftn(oracle[shell, 0] * f_out + oracle[shell, 1] * f_y, s=shape).numpy())
        gen = torch.Generator().manual_seed(123)
        a1 = alpha / np.sqrt(2.0)
        gram, rhs = 0, 0
        for _ in range(2):
            z = colored_noise(torch.randn((1, 1) + shape, generator=gen), spectrum)[0, 0].double()
            u, t = y + a1 * z, y - z / a1
            g = torch.as_tensor(denoise_with_network(net, u[None].float(), inferer(4, a1))).double()
            dg, dr = _fit_blend(torch.fft.rfftn(g), torch.fft.rfftn(u), torch.fft.rfftn(t), shell, n)
            gram, rhs = gram + dg, rhs + dr
        fitted = torch.linalg.solve(gram + 1e-9 * torch.eye(2), rhs)
        print(json.dumps({"self-supervised shell weights (output, y)": [[round(float(v), 2) for v in c] for c in fitted[:30]]}))
        score("shell blend, self-supervised", torch.fft.irfftn(fitted[shell, 0] * f_out + fitted[shell, 1] * f_y, s=shape).numpy())
        for cut in (0.06, 0.10):
            low = fitted.clone()
            low[int(round(cut / SHELL)):] = torch.tensor([1.0, 0.0], dtype=torch.float64)
            score(f"shell blend, self-supervised below {cut}", torch.fft.irfftn(low[shell, 0] * f_out + low[shell, 1] * f_y, s=shape).numpy())
    return 0


if __name__ == "__main__":
    sys.exit(main())
