"""Data-parallel training of one model (``multi_gpu_train.yaml``, DistributedDataParallel): the
ranks read different patches, and one step over 2 gloo processes gives the weights of one
single-process step on the union of their batches."""

import json
import os
import subprocess
import sys
from pathlib import Path

HELPER = Path(__file__).parent / "helpers" / "ddp_one_step.py"


def test_one_ddp_step_equals_a_single_process_step_on_the_union_of_the_batches(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "CET_MONAI_FAULT")}
    env["OMP_NUM_THREADS"] = "1"
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(HELPER), str(tmp_path / "run"), str(report)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    r = json.loads(report.read_text())
    assert r["same_start"]  # DDP broadcast rank 0's initial weights
    assert r["different_patches"]  # each rank's transforms are seeded with seed + rank
    assert r["max_weight_change"] > 1e-3  # the step moved the weights...
    assert r["max_weight_difference"] < 1e-4 * r["max_weight_change"]  # ...exactly as one process on both batches


def test_batch_normalisation_is_synchronised_across_ranks_on_cuda_only():
    """multi_gpu_train.yaml wraps the network with engines.sync_batchnorm: on CUDA its batch
    normalisation becomes SyncBatchNorm (same parameters, so checkpoints load into the plain
    class); on the CPU the network is left as it is (SyncBatchNorm computes on CUDA only)."""
    import torch

    from cet_monai.engines import sync_batchnorm
    from cet_monai.networks import DropoutUNet

    net = DropoutUNet(features=(4, 8), norm="batch")
    assert sync_batchnorm(net, "cpu") is net
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    synced = sync_batchnorm(net, "cuda:0")  # the conversion itself needs no GPU
    kinds = {type(m) for m in synced.modules()}
    assert torch.nn.SyncBatchNorm in kinds and torch.nn.BatchNorm3d not in kinds
    plain = DropoutUNet(features=(4, 8), norm="batch")
    plain.load_state_dict(synced.state_dict())
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in weights.items())


def test_finish_distributed_leaves_the_group_after_a_barrier(tmp_path, monkeypatch):
    """The bundles' finalize step: every rank waits at a barrier, then the group is destroyed
    (without the barrier a rank that finished first tore gloo down under rank 0 and aborted)."""
    import torch.distributed as dist

    from cet_monai.engines import finish_distributed

    finish_distributed()  # no group: nothing to do, no error
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    calls = []
    barrier = dist.barrier
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: (calls.append("barrier"), barrier(*a, **k))[1])
    finish_distributed()
    assert calls == ["barrier"] and not dist.is_initialized()


def test_finish_distributed_makes_the_ddp_wrapper_let_go_of_the_group(tmp_path):
    """The wrapper the bundle keeps must not hold the group until interpreter exit (joining the
    group's gloo threads then aborted a rank now and then): after finish_distributed it holds
    neither its reducer nor the group, and the group object is gone."""
    import weakref

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from cet_monai.engines import finish_distributed

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    ddp = DistributedDataParallel(torch.nn.Linear(3, 2))
    ddp(torch.randn(4, 3)).sum().backward()  # the reducer has worked on the group
    group = weakref.ref(ddp.process_group)
    finish_distributed(ddp, torch.nn.Linear(1, 1))  # other modules are left alone
    assert not dist.is_initialized()
    assert not any(name in ddp.__dict__ for name in ("reducer", "logger", "process_group"))
    assert group() is None
