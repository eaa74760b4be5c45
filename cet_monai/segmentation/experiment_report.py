"""Report of the membrane-segmentation experiment (:mod:`.experiment`): mean and spread over seeds,
paired differences to raw, whether a comparison is conclusive, Markdown tables and the figure."""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


from .inputs import ALL_KINDS, DENOISER_KINDS, KIND_LABELS
from .statistics import paired_bootstrap


from .experiment_settings import CONCLUSIVE_MARGIN, PROTOCOL_LABELS, PROTOCOLS, ExperimentSettings

__all__ = ["PAIRED_FIELDS", "SUMMARY_FIELDS", "conclusiveness", "format_tables", "plot_dice", "summarize"]

def _kind_order(kind: str) -> int:
    return ALL_KINDS.index(kind) if kind in ALL_KINDS else len(ALL_KINDS)


SUMMARY_FIELDS = ["protocol", "kind", "n_patches", "seeds", "dice_mean", "dice_std", "surface_dice_mean",
                  "surface_dice_std", "background_dice", "all_membrane_dice", "train_seconds_mean", "predict_seconds_mean"]


PAIRED_FIELDS = ["protocol", "kind", "n_patches", "seeds", "dice_minus_raw_mean", "dice_minus_raw_std", "better_than_raw",
                 "blocks", "block_diff_mean", "block_diff_low", "block_diff_high", "blocks_better"]


def _mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray([v for v in values if not (isinstance(v, float) and math.isnan(v))], dtype=np.float64)
    if a.size == 0:
        return math.nan, math.nan
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def _protocol_order(protocol: str) -> int:
    return PROTOCOLS.index(protocol) if protocol in PROTOCOLS else len(PROTOCOLS)


def summarize(runs: list[dict], inputs: list[dict], blocks: Sequence[Mapping] = ()) -> dict:
    """Mean and sample standard deviation over seeds, per (protocol, kind, N) and per kind for the
    inputs; paired differences to the raw input (same protocol, seed and N), and with ``blocks``
    (rows of ``blocks.csv``) their per-block mean with a 95 % bootstrap interval over test blocks x
    seeds (:func:`~cet_monai.segmentation.statistics.paired_bootstrap`)."""
    runs = [dict(r, protocol=r.get("protocol") or "denoised") for r in runs]
    rows = []
    keys = sorted({(r["protocol"], r["kind"], int(r["n_patches"])) for r in runs},
                  key=lambda k: (_protocol_order(k[0]), _kind_order(k[1]), k[2]))
    for protocol, kind, n in keys:
        sel = [r for r in runs if r["protocol"] == protocol and r["kind"] == kind and int(r["n_patches"]) == n]
        dm, ds = _mean_std([float(r["dice"]) for r in sel])
        sm, ss = _mean_std([float(r["surface_dice"]) for r in sel])
        bg, _ = _mean_std([float(r["background_dice"]) for r in sel])
        tm, _ = _mean_std([float(r["train_seconds"]) for r in sel])
        pm, _ = _mean_std([float(r["predict_seconds"]) for r in sel if r.get("predict_seconds") not in (None, "")])
        fg = [2 * p / (1 + p) for p in (float(r["test_membrane_fraction"]) for r in sel)]
        rows.append({"protocol": protocol, "kind": kind, "n_patches": n, "seeds": len(sel), "dice_mean": dm,
                     "dice_std": ds, "surface_dice_mean": sm, "surface_dice_std": ss, "background_dice": bg,
                     "all_membrane_dice": _mean_std(fg)[0], "train_seconds_mean": tm, "predict_seconds_mean": pm})
    block_dice_of: dict[tuple, dict] = {}
    for b in blocks:
        k = (b.get("protocol") or "denoised", b["kind"], int(b["n_patches"]), int(b["seed"]))
        block_dice_of.setdefault(k, {})[b["block"]] = float(b["dice"])
    paired = []  # kind - raw, seed by seed (same patches, initialisation and batches)
    for protocol, kind, n in keys:
        if kind == "raw":
            continue
        # the raw input's row is the same under both protocols (its network is the raw-trained one)
        raw = {int(r["seed"]): float(r["dice"]) for r in runs
               if r["kind"] == "raw" and int(r["n_patches"]) == n and r["protocol"] in ("denoised", protocol)}
        sel = [r for r in runs if r["protocol"] == protocol and r["kind"] == kind and int(r["n_patches"]) == n
               and int(r["seed"]) in raw]
        if not sel:
            continue
        diffs = [float(r["dice"]) - raw[int(r["seed"])] for r in sel]
        m, sd = _mean_std(diffs)
        row = {"protocol": protocol, "kind": kind, "n_patches": n, "seeds": len(diffs), "dice_minus_raw_mean": m,
               "dice_minus_raw_std": sd, "better_than_raw": sum(d > 0 for d in diffs)}
        per_seed = {}
        for r in sel:
            seed = int(r["seed"])
            mine = block_dice_of.get((protocol, kind, n, seed), {})
            base = block_dice_of.get((protocol, "raw", n, seed)) or block_dice_of.get(("denoised", "raw", n, seed), {})
            common = sorted(set(mine) & set(base))
            if common:
                per_seed[seed] = [mine[c] - base[c] for c in common]
        if per_seed:
            boot = paired_bootstrap(per_seed)
            row.update(blocks=boot["blocks"], block_diff_mean=boot["mean"], block_diff_low=boot["low"],
                       block_diff_high=boot["high"], blocks_better=boot["positive"])
        paired.append(row)
    inp = []
    for kind in sorted({r["kind"] for r in inputs}, key=_kind_order):
        sel = [r for r in inputs if r["kind"] == kind]
        pm, ps = _mean_std([float(r["psnr"]) for r in sel])
        qm, qs = _mean_std([float(r["ssim"]) for r in sel])
        tm, _ = _mean_std([float(r["prepare_seconds"]) for r in sel])
        sig = [float(r["sigma"]) for r in sel if str(r.get("sigma", "")) not in ("", "None")]
        inp.append({"kind": kind, "seeds": len(sel), "psnr_mean": pm, "psnr_std": ps, "ssim_mean": qm, "ssim_std": qs,
                    "sigmas": sig, "prepare_seconds_mean": tm})
    return {"rows": rows, "inputs": inp, "paired": paired}


def conclusiveness(summary: dict, settings: ExperimentSettings) -> dict:
    """Per N: is the raw input's mean Dice at least :data:`CONCLUSIVE_MARGIN` above an
    all-background prediction's? ``{"per_n": {N: bool}, "conclusive": any, "text": ...}``."""
    per_n = {}
    for r in summary["rows"]:
        if r["kind"] == "raw":
            per_n[r["n_patches"]] = bool(r["dice_mean"] - r["background_dice"] >= CONCLUSIVE_MARGIN)
    if not per_n:
        text = "inconclusive: no raw-input runs (the raw baseline decides whether the comparison means anything)"
        return {"per_n": {}, "conclusive": False, "text": text}
    bad = [n for n, ok in per_n.items() if not ok]
    if len(bad) == len(per_n):
        text = (f"inconclusive: the raw-input Dice never beats an all-background prediction by {CONCLUSIVE_MARGIN} "
                "(the segmentation network learned too little to compare inputs)")
    elif bad:
        text = f"inconclusive for N = {', '.join(map(str, bad))} (raw-input Dice within {CONCLUSIVE_MARGIN} of all-background); conclusive for the others"
    else:
        text = f"conclusive: the raw-input Dice beats an all-background prediction by more than {CONCLUSIVE_MARGIN} at every N"
    return {"per_n": per_n, "conclusive": not bad, "text": text}


def _mean_cell(mean: float, std: float, seeds: int, planned: int) -> str:
    """``mean +- std``, with the number of seeds when it is not the planned number."""
    if seeds == 1:
        return f"{mean:.3f} (1 seed)"
    return f"{mean:.3f} +- {std:.3f}" + ("" if seeds == planned else f" ({seeds} seeds)")


def _settings_line(settings: ExperimentSettings, summary: dict) -> str:
    sim = settings.simulation()
    used = {r["kind"] for r in summary["rows"] + summary["inputs"]}
    return (f"Settings: size `{settings.size}`, setting `{settings.setting}` ({sim.description}; SNR {sim.snr:g}), "
            f"tomograms {'x'.join(map(str, settings.shape))} voxels of {settings.voxel_size:g} A "
            f"({settings.simulation_mode}), {settings.n_train_tomograms} training tomogram(s) + 1 test tomogram per "
            f"seed, patches {settings.patch_size}^3, {settings.iterations} iterations x batch {settings.batch_size}, "
            f"DynUNet {list(settings.features)}, seeds {list(settings.seeds)}"
            + "".join(f"; {KIND_LABELS[k]}: {settings.denoiser_overrides(k)}"
                      for k in settings.kinds if k in DENOISER_KINDS and settings.denoiser_overrides(k) and k in used)
            + "; mean +- std over seeds.")


def format_tables(summary: dict, settings: ExperimentSettings, unavailable: Mapping | None = None,
                  verdict: dict | None = None) -> str:
    """Markdown: per protocol, Dice and surface Dice (mean +- std over seeds) per input kind and
    N, the paired differences to raw with their bootstrap intervals; the prepared inputs'
    PSNR/SSIM and preparation time, the verdict and what was not run."""
    verdict = verdict or conclusiveness(summary, settings)
    ns = sorted({r["n_patches"] for r in summary["rows"]})
    cell = {(r["protocol"], r["kind"], r["n_patches"]): r for r in summary["rows"]}
    lines = [_settings_line(settings, summary), "", f"**Verdict:** {verdict['text']}.", ""]
    protocols = [pr for pr in PROTOCOLS if any(r["protocol"] == pr for r in summary["rows"])]
    for protocol in protocols:
        kinds = [k for k in ALL_KINDS if (protocol, k) in {(r["protocol"], r["kind"]) for r in summary["rows"]}]
        for metric, title in (("dice", "Test Dice"),
                              ("surface_dice", f"Test surface Dice (tolerance {settings.surface_tolerance:g} voxels)")):
            head = ["input"] + [f"N={n}" + ("" if verdict["per_n"].get(n, True) else " (inconclusive)") for n in ns]
            lines += [f"### {title}, {PROTOCOL_LABELS[protocol]}", "", "| " + " | ".join(head) + " |",
                      "|" + "---|" * len(head)]
            for k in kinds:
                vals = []
                for n in ns:
                    r = cell.get((protocol, k, n))
                    vals.append("" if r is None else _mean_cell(r[metric + "_mean"], r[metric + "_std"], r["seeds"],
                                                                 len(settings.seeds)))
                lines.append(f"| {KIND_LABELS[k]} | " + " | ".join(vals) + " |")
            if metric == "dice" and summary["rows"]:
                bg = summary["rows"][0]["background_dice"]
                fg = summary["rows"][0]["all_membrane_dice"]
                lines.append("| all background | " + " | ".join(f"{bg:.3f}" for _ in ns) + " |")
                lines.append("| all membrane (for scale) | " + " | ".join(f"{fg:.3f}" for _ in ns) + " |")
            lines.append("")
        paired = [r for r in summary.get("paired", []) if r["protocol"] == protocol]
        if paired:
            pn = sorted({r["n_patches"] for r in paired})
            pk = [k for k in ALL_KINDS if any(r["kind"] == k for r in paired)]
            pc = {(r["kind"], r["n_patches"]): r for r in paired}
            lines += [f"### Dice minus raw, {PROTOCOL_LABELS[protocol]}: per test block, mean [95 % bootstrap "
                      "interval over blocks x seeds] (seeds whose whole-tomogram Dice beat raw)", "",
                      "| input | " + " | ".join(f"N={n}" for n in pn) + " |", "|" + "---|" * (len(pn) + 1)]
            for k in pk:
                vals = []
                for n in pn:
                    r = pc.get((k, n))
                    if r is None:
                        vals.append("")
                    elif "block_diff_mean" in r:
                        vals.append(f"{r['block_diff_mean']:+.3f} [{r['block_diff_low']:+.3f}, {r['block_diff_high']:+.3f}]"
                                    f" ({r['better_than_raw']}/{r['seeds']})")
                    else:
                        spread = f" +- {r['dice_minus_raw_std']:.3f}" if r["seeds"] > 1 else ""
                        vals.append(f"{r['dice_minus_raw_mean']:+.3f}{spread} ({r['better_than_raw']}/{r['seeds']})")
                lines.append(f"| {KIND_LABELS[k]} | " + " | ".join(vals) + " |")
            lines.append("")
    if summary["inputs"]:
        lines += ["### Prepared test inputs against the clean reconstruction", "",
                  "| input | PSNR (dB) | SSIM | seconds per tomogram | note |", "|---|---|---|---|---|"]
        for r in summary["inputs"]:
            notes = [f"sigma {', '.join(f'{s:g}' for s in r['sigmas'])} voxels"] if r["sigmas"] else []
            if r["seeds"] != len(settings.seeds):
                notes.append(f"{r['seeds']} seed{'s' if r['seeds'] != 1 else ''}")
            spread = r["seeds"] > 1
            lines.append(f"| {KIND_LABELS.get(r['kind'], r['kind'])} | {r['psnr_mean']:.2f}"
                         + (f" +- {r['psnr_std']:.2f}" if spread else "") + f" | {r['ssim_mean']:.3f}"
                         + (f" +- {r['ssim_std']:.3f}" if spread else "")
                         + f" | {r['prepare_seconds_mean']:.0f} | {'; '.join(notes)} |")
        lines.append("")
    if unavailable:
        lines += ["Not run:", ""] + [f"* {KIND_LABELS.get(k, k)}: {v}" for k, v in unavailable.items()] + [""]
    return "\n".join(lines)


def plot_dice(summary: dict, path, settings: ExperimentSettings | None = None) -> Path:
    """PNG: test Dice against N (log2 axis), one panel per protocol, one line per input kind,
    error bars = std over seeds."""
    from matplotlib.figure import Figure

    path = Path(path)
    protocols = [pr for pr in PROTOCOLS if any(r["protocol"] == pr for r in summary["rows"])]
    fig = Figure(figsize=(5.5 * len(protocols), 4.2), dpi=110)
    axes = np.atleast_1d(fig.subplots(1, len(protocols)))
    ns = sorted({r["n_patches"] for r in summary["rows"]})
    for ax, protocol in zip(axes, protocols):
        for kind in ALL_KINDS:
            rows = sorted((r for r in summary["rows"] if r["kind"] == kind and r["protocol"] == protocol),
                          key=lambda r: r["n_patches"])
            if not rows:
                continue
            ax.errorbar([r["n_patches"] for r in rows], [r["dice_mean"] for r in rows],
                        yerr=[r["dice_std"] for r in rows], marker="o", capsize=3, label=KIND_LABELS[kind])
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns)
        ax.set_xticklabels([str(n) for n in ns])
        ax.set_xlabel("training patches N")
        ax.set_ylabel("test Dice")
        ax.set_title(PROTOCOL_LABELS[protocol], fontsize=10)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    if settings is not None:
        fig.suptitle(f"membrane segmentation, setting {settings.setting} ({settings.size}: {settings.patch_size}^3 "
                     f"patches, {settings.iterations} iterations, {len(settings.seeds)} seed(s))", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path

