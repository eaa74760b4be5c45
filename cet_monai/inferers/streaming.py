"""Whole-tomogram inference in Z slabs, the result on disk: tomograms larger than RAM allows.

MONAI's :class:`~monai.inferers.SlidingWindowInferer` stitches into an output and a weight map
of the input's full size (8 bytes per voxel, plus 4 for ``--save-std``): 2-3 times a float32
tomogram, 6-9 GiB for a 3 GiB one. :class:`SlabInferer` runs the window inferer on one Z slab
at a time (with a margin of half a window on each side, so every kept voxel is blended from
windows that lie inside the slab) and writes each slab's centre into a disk-backed array
(:func:`~cet_monai.io.utils.disk_array`) whose pages are given back after each slab. Memory is
then bounded by the slab (``slab_voxels``), not by the tomogram.

A tomogram that fits in one slab is passed to the window inferer unchanged (bit-identical to
calling it directly). Across slabs the window grid restarts, which changes values by the
blending only (measured in ``benchmarks/large_tomogram.py``); the noise draws of each slab come
from their own seed (``seed + slab``), so no pattern repeats from slab to slab, while the
dropout masks (the thinned networks) stay the same everywhere, as the methods require.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.inferers import Inferer

from cet_monai.io.utils import disk_array, release_pages

__all__ = ["SlabInferer", "DEFAULT_SLAB_VOXELS"]

#: voxels per slab (with margins): 2**26 = 64 M voxels, about 0.8 GiB of stitching buffers
DEFAULT_SLAB_VOXELS = 1 << 26


class SlabInferer(Inferer):
    """Run ``inferer`` (an :class:`~cet_monai.inferers.MCDropoutInferer`) slab by slab along Z.

    Args:
        inferer: the window inferer; its ``sliding_window.roi_size`` gives the margin.
        slab_voxels: most voxels of one slab including its margins; a tomogram with at most this
            many voxels is denoised in one call. At least one window depth plus margins.
        progress: a progress bar over slabs (the window inferer's own bar shows each slab).

    ``__call__(inputs, network)`` takes ``(1, C, Z, Y, X)`` and returns the estimate, or the
    ``{"mean", "std"}`` dict of the window inferer, as ``(1, 1, Z, Y, X)`` CPU tensors; when
    slabbed they are backed by anonymous temporary files (numpy memmaps, ``.numpy()`` gives
    them back) rather than RAM.
    """

    def __init__(self, inferer, slab_voxels: int = DEFAULT_SLAB_VOXELS, progress: bool = False) -> None:
        super().__init__()
        self.inferer = inferer
        self.slab_voxels = int(slab_voxels)
        self.progress = bool(progress)

    def slabs(self, shape) -> list[tuple[int, int, int, int]]:
        """``(read_start, read_stop, keep_start, keep_stop)`` Z ranges for a ``(Z, Y, X)`` tomogram."""
        return self.plan(shape, int(self.inferer.sliding_window.roi_size[0]), self.slab_voxels)

    @staticmethod
    def plan(shape, roi_z: int, slab_voxels: int = DEFAULT_SLAB_VOXELS) -> list[tuple[int, int, int, int]]:
        """The Z slabs of a ``(Z, Y, X)`` tomogram for windows ``roi_z`` deep (see :meth:`slabs`):
        as few as fit ``slab_voxels`` with half a window of margin each side, balanced in depth."""
        z, plane = int(shape[0]), int(np.prod(shape[1:], dtype=np.int64))
        margin = int(roi_z) // 2
        depth = max(int(slab_voxels) // max(plane, 1), int(roi_z) + 2 * margin)
        if z <= depth:
            return [(0, z, 0, z)]
        count = math.ceil(z / (depth - 2 * margin))
        step = math.ceil(z / count)  # balanced: no thin last slab
        out = []
        for keep_start in range(0, z, step):
            keep_stop = min(keep_start + step, z)
            out.append((max(0, keep_start - margin), min(z, keep_stop + margin), keep_start, keep_stop))
        return out

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args, **kwargs):
        if inputs.shape[0] != 1:
            raise ValueError(f"SlabInferer denoises one tomogram at a time, got a batch of {inputs.shape[0]}")
        slabs = self.slabs(inputs.shape[2:])
        if len(slabs) == 1:
            return self.inferer(inputs, network, *args, **kwargs)
        from tqdm.auto import tqdm

        shape = tuple(inputs.shape[2:])
        outputs: dict[str, np.ndarray] = {}
        seed = int(getattr(self.inferer, "seed", 0))
        bar = tqdm(total=len(slabs), desc="slabs", unit="slab", disable=not self.progress, leave=False)
        try:
            for index, (lo, hi, keep_lo, keep_hi) in enumerate(slabs):
                pred = self.inferer(inputs[:, :, lo:hi], network, *args, generator_seed=seed + index, **kwargs)
                release_pages(inputs)  # a disk-backed input (a normalised copy on disk) gives its pages back
                parts = pred if isinstance(pred, dict) else {"mean": pred}
                for key, value in parts.items():
                    if key not in outputs:
                        outputs[key] = disk_array(shape, np.float32)
                    outputs[key][keep_lo:keep_hi] = value[0, 0, keep_lo - lo : keep_hi - lo].detach().float().cpu().numpy()
                    release_pages(outputs[key])
                del pred, parts
                bar.update(1)
        finally:
            bar.close()
        tensors = {k: torch.from_numpy(v)[None, None] for k, v in outputs.items()}
        for key, tensor in tensors.items():
            tensor.disk_array = outputs[key]  # noqa: B010 - keeps the memmap (for release_pages) with its tensor
        return tensors if len(tensors) > 1 or "std" in tensors else tensors["mean"]
