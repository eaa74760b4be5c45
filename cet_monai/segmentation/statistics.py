"""Per-block Dice and paired bootstrap intervals for the segmentation experiment.

One Dice per test tomogram is one number per seed: three seeds say little about the spread. The
experiment therefore also scores Dice on the non-overlapping blocks of the test tomogram that
hold membrane, and compares two inputs block by block (same block, same seed, same number of
training patches). :func:`paired_bootstrap` turns those paired differences into a mean and a
95 % interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .metrics import dice_score

__all__ = ["block_corners", "block_dice", "paired_bootstrap"]


def block_corners(shape: Sequence[int], block: int) -> list[tuple[int, int, int]]:
    """Corners ``(z, y, x)`` of the non-overlapping ``block``^3 cubes that tile ``shape`` (a
    remainder narrower than ``block`` at the far side of an axis is left out)."""
    starts = [range(0, int(n) - block + 1, block) for n in shape]
    return [(z, y, x) for z in starts[0] for y in starts[1] for x in starts[2]]


def block_dice(prediction: np.ndarray, labels: np.ndarray, block: int, ignore_index: int | None = 2,
               min_fraction: float = 0.005) -> list[tuple[tuple[int, int, int], float]]:
    """Dice of ``prediction`` (``(Z, Y, X)``, 1 = membrane) on each ``block``^3 cube of ``labels``
    that holds at least ``min_fraction`` membrane (blocks without membrane have no Dice of their
    own; a false positive there still lowers the whole-tomogram Dice).

    Returns:
        ``[((z, y, x), dice), ...]`` in :func:`block_corners` order.
    """
    prediction = np.asarray(prediction)
    labels = np.asarray(labels)
    if prediction.shape != labels.shape:
        raise ValueError(f"prediction {prediction.shape} and labels {labels.shape} differ in shape")
    out = []
    for z, y, x in block_corners(labels.shape, block):
        sl = (slice(z, z + block), slice(y, y + block), slice(x, x + block))
        lab = labels[sl]
        if float((lab == 1).mean()) < min_fraction:
            continue
        out.append(((z, y, x), float(dice_score(prediction[sl], lab, ignore_index))))
    return out


def paired_bootstrap(differences: Mapping[int, Sequence[float]], n_boot: int = 4000, level: float = 0.95,
                     seed: int = 0) -> dict:
    """Mean and bootstrap interval of paired differences grouped by experiment seed.

    ``differences[s]`` holds one difference per test block of seed ``s`` (e.g. Dice with a denoised
    input minus Dice with the raw input, same block). The estimate weights seeds equally (the mean
    over seeds of each seed's block mean). The interval resamples in two stages -- seeds with
    replacement, then blocks within each drawn seed -- so it includes the variation between
    trainings, not only between blocks (with one seed it is over blocks alone).

    Returns:
        ``{"mean", "low", "high", "seeds", "blocks", "positive"}`` (``positive``: the fraction of
        blocks whose difference is > 0).
    """
    groups = [np.asarray(v, dtype=np.float64) for _, v in sorted(differences.items()) if len(v)]
    if not groups:
        nan = float("nan")
        return {"mean": nan, "low": nan, "high": nan, "seeds": 0, "blocks": 0, "positive": nan}
    mean = float(np.mean([g.mean() for g in groups]))
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    for b in range(n_boot):
        chosen = rng.integers(0, len(groups), size=len(groups))
        stats[b] = np.mean([groups[i][rng.integers(0, groups[i].size, size=groups[i].size)].mean() for i in chosen])
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    allv = np.concatenate(groups)
    return {"mean": mean, "low": float(low), "high": float(high), "seeds": len(groups), "blocks": int(allv.size),
            "positive": float((allv > 0).mean())}
