"""What a denoising run will need, known before it starts: memory and disk.

A run that dies after hours for want of disk, or is killed by a cluster for memory, wastes the
hours. :func:`estimate_run` gives, for one ``(Z, Y, X)`` tomogram, the peak resident memory of
``cet-monai denoise`` (training, then inference) and the disk its outputs and its scratch space
take; :func:`check_resources` compares them with what the machine has (free disk of each
folder, available memory, a cgroup's limit when there is one) and refuses a run that cannot fit
on disk or in memory (the latter can be overridden: the estimate is a model).

The memory model is linear in the voxels ``V`` with a constant (libraries, the noise-spectrum
estimator, network and batch): ``constant + 4 V`` (the normalised float32 copy the patches and
windows are read from; above :data:`~cet_monai.engines.data.DISK_COPY_VOXELS` voxels that copy
is a disk-backed temporary file whose pages are given back after each read: it counts as scratch
disk, and as 4 bytes per voxel of one slab in memory) ``+ stitching``, where stitching is MONAI's sliding-window output and
weight maps, 8 bytes per voxel of one slab (12 with the standard deviation) for a tomogram of
at most ``slab_voxels`` voxels, else of one slab
(:class:`~cet_monai.inferers.streaming.SlabInferer`). The constants were measured with
``benchmarks/large_tomogram.py`` on the 2-core CPU (see ``docs/benchmarks.md``).

GPU memory of training (:func:`training_gpu_bytes`, checked by :func:`check_gpu_memory` in the
denoising bundles' ``initialize``, before the first step): the network's weights, gradients and
Adam's two moments (16 bytes per parameter) plus the activations autograd saves for one batch,
counted by running the network on PyTorch's ``meta`` device (no memory, no arithmetic) under a
saved-tensors hook, plus twice the largest layer output (the backward pass's working set) and a
fixed allowance for cuDNN workspaces and allocator rounding. Activations are counted in float32;
bfloat16 autocast saves some of them at half the size, so on CUDA the estimate errs high.
Inference needs no check: it halves its batch on an out-of-memory error and goes on.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cet_monai.errors import OptionError

__all__ = ["RunEstimate", "estimate_run", "estimate_shared_training", "available_memory", "check_resources", "training_gpu_bytes",
           "check_gpu_memory"]

logger = logging.getLogger(__name__)

GIB = 2**30
#: libraries, network, batches and the bounded noise-spectrum estimator (bytes), measured
BASE_BYTES = int(0.65 * GIB)
#: per stitched voxel: output and weight maps, the padded window input, the slab's copy
STITCH_BYTES_PER_VOXEL = 12
#: GPU: cuDNN workspaces, allocator rounding and the optimiser's temporaries (bytes), an allowance
GPU_SLACK_BYTES = 512 * 2**20


@dataclass(frozen=True)
class RunEstimate:
    """Peak memory (bytes) and disk (bytes) of one run; ``scratch`` goes to ``$TMPDIR``."""

    memory: int
    output_disk: int
    scratch_disk: int
    slabs: int

    def describe(self) -> str:
        scratch = f", {_size(self.scratch_disk)} of scratch space in {tempfile.gettempdir()}" if self.scratch_disk else ""
        output = f", {_size(self.output_disk)} of output" if self.output_disk else ""
        return (f"about {_size(self.memory)} of memory{output}{scratch}"
                + (f" (inference in {self.slabs} slabs)" if self.slabs > 1 else ""))


def _size(nbytes: int) -> str:
    return f"{nbytes / GIB:.1f} GiB" if nbytes >= GIB else f"{nbytes / 2**20:.0f} MiB"


def estimate_run(shape, save_std: bool = False, slab_voxels: int | None = None, roi_z: int = 32, out_bytes_per_voxel: int = 4) -> RunEstimate:
    """Estimate for a ``(Z, Y, X)`` tomogram (see the module docstring); ``slab_voxels`` ``None``:
    the inference bundle's default."""
    from cet_monai.inferers.streaming import DEFAULT_SLAB_VOXELS, SlabInferer

    from .data import needs_disk_copy

    slab_voxels = int(slab_voxels or DEFAULT_SLAB_VOXELS)
    z, y, x = (int(s) for s in shape)
    voxels = z * y * x
    plan = SlabInferer.plan((z, y, x), roi_z, slab_voxels)
    slabs = len(plan)
    stitched = max(hi - lo for lo, hi, _, _ in plan) * y * x  # the deepest slab, margins included
    per_voxel = STITCH_BYTES_PER_VOXEL + (4 if save_std else 0)
    copy_on_disk = needs_disk_copy((z, y, x))
    # the normalised copy: whole in RAM, or on disk with one slab's pages resident at a time
    memory = BASE_BYTES + 4 * (stitched if copy_on_disk else voxels) + per_voxel * stitched
    maps = 2 if save_std else 1
    scratch = (maps * 4 * voxels if slabs > 1 else 0) + (4 * voxels if copy_on_disk else 0)
    return RunEstimate(memory=memory, output_disk=maps * out_bytes_per_voxel * voxels, scratch_disk=scratch, slabs=slabs)


def estimate_shared_training(shapes, world_size: int = 1) -> int:
    """Peak memory (bytes) of fitting ONE model on several ``(Z, Y, X)`` tomograms
    (``cet-monai denoise --shared-model``) in the process with the largest share of them
    (:func:`~cet_monai.engines.batch.share`): the constant, 4 bytes per voxel of each of its
    tomograms (their normalised copies are all held while it trains; those above
    :data:`~cet_monai.engines.data.DISK_COPY_VOXELS` voxels are on disk) and, for the default method,
    each one's noise spectrum (float64 on the estimator's fine grid, at most ``fine_size`` = 128
    frequencies per axis: up to 16 MiB). The held-out regions share one bounded validation budget.
    A model from these sizes, not a measurement; inference, after the fit, is
    :func:`estimate_run` for each tomogram."""
    from cet_monai.noise_spectrum import FINE_SIZE

    from .batch import share
    from .data import needs_disk_copy

    def held(shape) -> int:
        voxels = math.prod(int(s) for s in shape)
        copy = 0 if needs_disk_copy(shape) else 4 * voxels  # a large one's copy is on disk
        return copy + 8 * math.prod(min(int(s), FINE_SIZE) for s in shape)

    shapes = list(shapes)
    world_size = max(1, min(int(world_size), len(shapes)))
    return BASE_BYTES + max(sum(held(s) for s in share(shapes, rank, world_size)) for rank in range(world_size))


def available_memory() -> int | None:
    """Bytes this process may still use: the smaller of ``MemAvailable`` and a cgroup (v2 or v1)
    limit minus its usage; ``None`` where neither can be read."""
    candidates = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    candidates.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:
            candidates.append(max(int(limit) - usage, 0))
    return min(candidates) if candidates else None


def _existing(folder) -> Path:
    """``folder``, or its nearest existing parent (where it would be created)."""
    folder = Path(os.path.abspath(folder))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _free(folder) -> int:
    return shutil.disk_usage(_existing(folder)).free


def check_resources(runs: list[tuple[str, str, RunEstimate]], say=None, refuse_memory: bool = True) -> None:
    """``runs``: (input, output file, estimate). Refuse (:class:`OptionError`) when the outputs
    of all runs do not fit on their disks or the largest scratch space does not fit in
    ``$TMPDIR``; refuse too when the largest memory estimate exceeds the available memory (a run
    the kernel or the cluster would kill after hours), or with ``refuse_memory=False`` only warn
    through ``say`` (``cet-monai denoise --ignore-memory-estimate``). Runs one after another:
    memory and scratch are those of the largest run, output disk adds up."""
    say = say or logger.warning
    if not runs:
        return
    need: dict[int, int] = {}
    where: dict[int, str] = {}
    for _, output, est in runs:
        folder = Path(output).parent
        dev = os.stat(_existing(folder)).st_dev
        need[dev] = need.get(dev, 0) + est.output_disk
        where[dev] = str(folder)
    for dev, nbytes in need.items():
        free = _free(where[dev])
        if nbytes > free:
            raise OptionError(f"{where[dev]}: the outputs need {nbytes / GIB:.2f} GiB and the disk has {free / GIB:.2f} GiB free; "
                              "free space or choose another -o (nothing was started)")
    scratch = max(est.scratch_disk for _, _, est in runs)
    if scratch:
        free = _free(tempfile.gettempdir())
        if scratch > free:
            raise OptionError(f"{tempfile.gettempdir()}: slabbed inference needs {scratch / GIB:.2f} GiB of scratch space and has "
                              f"{free / GIB:.2f} GiB free; point TMPDIR at a larger disk (nothing was started)")
    largest = max(runs, key=lambda r: r[2].memory)
    available = available_memory()
    if available is not None and largest[2].memory > available:
        message = f"{largest[0]} needs {largest[2].describe()}, but only {available / GIB:.1f} GiB of memory is available"
        if refuse_memory:
            raise OptionError(f"{message}; free memory or use a machine with more, or run anyway with --ignore-memory-estimate "
                              "(the estimate is a measured linear model, docs/benchmarks.md; nothing was started)")
        say(f"warning: {message}; the run may be killed")


def training_gpu_bytes(network, batch: int, patch_size, in_channels: int = 1) -> int:
    """Bytes of accelerator memory one training step of ``batch`` patches of ``patch_size``
    (Z, Y, X) voxels needs (module docstring). The network is copied to the ``meta`` device; the
    original is not touched."""
    import copy

    import torch

    size = [int(patch_size)] * 3 if isinstance(patch_size, int) else [int(v) for v in patch_size]
    meta = copy.deepcopy(network).to("meta").train()
    params = sum(p.numel() * 4 for p in meta.parameters())
    saved: dict[int, int] = {}
    largest = [0]

    def pack(t):
        saved.setdefault(id(t), t.numel() * t.element_size())
        return t

    def track(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            largest[0] = max(largest[0], output.numel() * output.element_size())

    hooks = [m.register_forward_hook(track) for m in meta.modules()]
    try:
        x = torch.empty([int(batch), int(in_channels)] + size, device="meta")
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            meta(x)
    finally:
        for h in hooks:
            h.remove()
    return 4 * params + sum(saved.values()) + 2 * largest[0] + GPU_SLACK_BYTES


def check_gpu_memory(network, device, batch: int, patch_size) -> None:
    """Refuse (:class:`OptionError`) a CUDA training run whose step cannot fit in the device's
    free memory, naming the settings that lower it; a no-op on other devices."""
    import torch

    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return
    need = training_gpu_bytes(network, batch, patch_size)
    free, total = torch.cuda.mem_get_info(device)
    logger.info("training on %s needs about %s of its %s free", device, _size(need), _size(free))
    if need > free:
        size = "x".join(str(int(v)) for v in ([patch_size] * 3 if isinstance(patch_size, int) else patch_size))
        raise OptionError(f"{device}: a training step of {batch} patches of {size} voxels needs about {_size(need)} of GPU memory "
                          f"and {_size(free)} of {_size(total)} is free; lower the patches per step (--set patches_per_item=N), "
                          "the patch (--patch-size), the network (--set network_def#features=...), or use --device cpu "
                          "(nothing was started)")
