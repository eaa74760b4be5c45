"""Run under ``torchrun --nproc_per_node=2`` by tests/test_distributed.py (not a test itself).

Builds the default bundle's training with ``multi_gpu_train.yaml`` (DistributedDataParallel,
gloo), records each rank's first batch and the initial weights, runs one iteration, and on
rank 0 repeats that step in one process on the union of the ranks' batches with a fresh copy of
the network and optimiser. Writes a JSON report to ``argv[2]``: whether the ranks' patches
differ, and the largest weight difference between the DDP step and the single-process step.
"""

import copy
import json
import os
import sys

import torch
import torch.distributed as dist
from ignite.engine import Events

from cet_monai.engines import GradientClipping
from cet_monai.workflows import make_workflow

out_dir, report = sys.argv[1], sys.argv[2]

overrides = {
    "output_dir": out_dir, "simulation#shape": [16, 32, 32], "simulation#mode": "fast", "patch_size": [16, 16, 16], "margin": 4,
    "iterations": 1, "epoch_length": 1, "val_interval": 100, "network_def#features": [4, 8], "network_def#dropout": 0.0,
    "network_def#cpu_bfloat16": False, "progress": False,
    # batch normalisation normalises each rank's batch with its own statistics on CPU/gloo
    # (SyncBatchNorm, which multi_gpu_train.yaml uses on CUDA, computes on CUDA only), so the
    # equality with one process's step holds for a batch-independent network here
    "network_def#norm": None,
    # plain SGD without clipping: its step is proportional to the gradient, so a wrong gradient
    # average (a sum, one rank's batch only) shows; Adam's first step would hide the scale
    "optimizer#_target_": "torch.optim.SGD", "learning_rate": 0.5, "grad_clip": 1.0e6,
}
wf = make_workflow("recorrupted_denoising", ("train.yaml", "multi_gpu_train.yaml"), "train", **overrides)
wf.initialize()
trainer = wf.parser.get_parsed_content("train#trainer")
plain = wf.parser.get_parsed_content("network_def")
rank, world = dist.get_rank(), dist.get_world_size()
seen = {}


@trainer.on(Events.ITERATION_STARTED)
def _record(engine):
    seen["image"] = engine.state.batch["image"].detach().clone()
    seen["label"] = engine.state.batch["label"].detach().clone()
    seen["initial"] = copy.deepcopy(plain.state_dict())
    seen["lr"] = engine.optimizer.param_groups[0]["lr"]


wf.run()
batches = [None] * world
dist.all_gather_object(batches, {k: seen[k] for k in ("image", "label")})
initial = [None] * world
dist.all_gather_object(initial, seen["initial"])
if rank == 0:
    same_start = all(torch.equal(initial[0][k], initial[1][k]) for k in initial[0])
    different_patches = not torch.equal(batches[0]["image"], batches[1]["image"])
    # the same step in one process on the union of the ranks' batches
    single = copy.deepcopy(plain)
    single.load_state_dict(seen["initial"])
    optimiser = type(trainer.optimizer)(single.parameters(), **{**trainer.optimizer.defaults, "lr": seen["lr"]})
    clip = next(h for h in wf.parser.get_parsed_content("train#handlers") if isinstance(h, GradientClipping))
    image = torch.cat([b["image"] for b in batches])
    label = torch.cat([b["label"] for b in batches])
    single.train()
    optimiser.zero_grad()
    loss = trainer.loss_function(single(image), label)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(single.parameters(), clip.max_norm, clip.norm_type)
    optimiser.step()
    ddp = plain.state_dict()
    diff = max(float((ddp[k].float() - v.float()).abs().max()) for k, v in single.state_dict().items())
    moved = max(float((ddp[k].float() - seen["initial"][k].float()).abs().max()) for k in ddp)
    with open(report, "w") as f:
        json.dump({"same_start": same_start, "different_patches": different_patches, "max_weight_difference": diff,
                   "max_weight_change": moved, "batch_per_rank": int(batches[0]["image"].shape[0])}, f)
wf.finalize()
