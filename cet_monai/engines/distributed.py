"""Joining torchrun's process group for the data-parallel bundles (``multi_gpu_train.yaml``)."""

from __future__ import annotations

import torch

__all__ = ["finish_distributed", "init_distributed", "resume_dict", "sync_batchnorm"]


def init_distributed(device: torch.device | str | None = None) -> None:
    """Join the process group that torchrun describes (NCCL on CUDA, gloo otherwise), bind this
    rank's GPU, and let Ignite see the group on every rank at the same moment.

    Ignite's checkpoint handlers call ``idist.get_rank()`` when they are built, and Ignite's
    first such call creates a sub-group, a collective operation. Made lazily it would run only on
    the ranks that build such a handler (rank 0: the others' writers are disabled) and wait
    forever for the others; whether it did depended on the order the config's components were
    built in. Synchronised here, once, on every rank, it cannot.
    """
    import ignite.distributed as idist

    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        torch.cuda.set_device(device)
    idist.sync()


def finish_distributed(*modules: torch.nn.Module) -> None:
    """Leave the process group on every rank together: a barrier, then
    ``destroy_process_group``, then the :class:`~torch.nn.parallel.DistributedDataParallel`
    wrappers among ``modules`` let go of the group (their reducer, logger and ``process_group``)
    and are collected, so the group's gloo worker threads are joined now, while the interpreter
    is whole.

    Without the barrier a rank with less to do at the end (no final checkpoint to write) tore
    its gloo connections down while rank 0 still held its side, and about one run in six aborted
    at exit ("terminate called without an active exception", SIGABRT) after a complete training.
    With the barrier alone the same abort still came, rarely (2 of 36 runs of the gloo tests, on
    a machine running five jobs on two cores): ``destroy_process_group`` only drops the references
    ``torch.distributed`` holds, and the DDP wrapper the bundle keeps held the group until
    interpreter finalization, where joining its threads aborts (pytorch/pytorch#179291 describes
    it). Does nothing outside a process group but the release.
    """
    import gc

    from torch.nn.parallel import DistributedDataParallel

    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    for module in modules:
        if isinstance(module, DistributedDataParallel):
            for name in ("reducer", "logger", "process_group"):
                if name in module.__dict__:
                    del module.__dict__[name]
    gc.collect()


def resume_dict(checkpoint_dict: dict, rank: int) -> dict:
    """What rank ``rank`` restores when a data-parallel run resumes: everything on rank 0; the
    other ranks all but ``random_states`` (they restart their streams from seed + rank)."""
    return dict(checkpoint_dict) if int(rank) == 0 else {k: v for k, v in checkpoint_dict.items() if k != "random_states"}


def sync_batchnorm(network: torch.nn.Module, device: torch.device | str) -> torch.nn.Module:
    """On CUDA, batch normalisation layers become :class:`torch.nn.SyncBatchNorm` (statistics
    over all ranks' batches, so a step equals one process's step on their union); elsewhere the
    network is returned as it is (SyncBatchNorm computes on CUDA only: on CPU/gloo each rank
    normalises with its own batch's statistics). The conversion is in place for the children
    and keeps the parameters and buffers, so checkpoints of ``network`` load into the plain class."""
    if torch.device(device).type != "cuda":
        return network
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)
