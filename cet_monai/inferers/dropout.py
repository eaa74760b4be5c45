"""Monte-Carlo dropout: dropout layers on, everything else in eval mode, with reproducible passes.

:func:`mc_dropout` switches only the dropout modules of a network to training mode (batch or
instance normalisation stay in eval mode, as they must at inference) and restores every
module's mode on exit.

With ``pass_seeds`` it also fixes each pass's dropout masks: pass ``t`` draws its masks from a
generator seeded with ``pass_seeds[t]`` and the layer's index, and applies the *same* masks to
every window of the tomogram. Each pass is then one thinned network ``f_theta_t`` applied to
the whole tomogram, as in ``z = 1/T sum_t f_theta_t(x)`` of the Fourier method (and, one
network per Bernoulli sample, of Self2Self), and a batch that
stacks several passes gives exactly the result of running the passes one by one. torch's own
dropout cannot do this (one generator draws one mask over the whole batch), hence the small
replacement forward below.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["mc_dropout", "DropoutPassState", "is_dropout"]

_DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def is_dropout(module: nn.Module) -> bool:
    """True for torch's dropout layers (element-wise and channel-wise)."""
    return isinstance(module, _DROPOUT_TYPES)


class DropoutPassState:
    """Which pass each sample of the next forward belongs to.

    ``pass_index`` is a 1D long tensor with one entry per sample of the batch, indexing
    ``pass_seeds``. The inferer sets it before each forward.
    """

    def __init__(self, pass_seeds: Sequence[int]):
        self.pass_seeds = [int(s) for s in pass_seeds]
        self.pass_index: torch.Tensor | None = None


def _seeded_forward(state: DropoutPassState, layer: int):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        idx = state.pass_index
        if idx is None or idx.numel() != x.shape[0]:
            raise RuntimeError("pass_index must give one pass per sample of the batch")
        channelwise = not isinstance(self, nn.Dropout)
        mask_shape = x.shape[1:2] + (1,) * (x.dim() - 2) if channelwise else x.shape[1:]
        unique = torch.unique(idx.cpu()).tolist()
        masks = torch.empty((len(unique),) + tuple(mask_shape), device=x.device, dtype=x.dtype)
        for j, t in enumerate(unique):
            g = torch.Generator(device=x.device)
            g.manual_seed((state.pass_seeds[t] * 1_000_003 + layer * 7919) % (2**63))
            keep = torch.rand(mask_shape, generator=g, device=x.device) >= self.p
            masks[j] = keep.to(x.dtype) / (1.0 - self.p)
        lookup = torch.zeros(max(unique) + 1, dtype=torch.long)
        lookup[unique] = torch.arange(len(unique))
        return x * masks[lookup[idx.cpu()].to(x.device)]

    return forward


@contextlib.contextmanager
def mc_dropout(network: nn.Module, pass_seeds: Sequence[int] | None = None):
    """Context in which only dropout layers are active; yields a :class:`DropoutPassState` or None.

    Args:
        network: any module; its and its children's ``training`` flags are restored on exit.
        pass_seeds: one seed per pass; when given, each dropout layer draws the masks of pass
            ``t`` from ``pass_seeds[t]`` (see the module docstring) and the caller must set
            ``state.pass_index`` before every forward.
    """
    modes = {m: m.training for m in network.modules()}
    dropouts = [m for m in network.modules() if is_dropout(m)]
    network.eval()
    for m in dropouts:
        m.train()
    state = DropoutPassState(pass_seeds) if pass_seeds is not None else None
    if state is not None:
        for i, m in enumerate(dropouts):
            m.forward = types.MethodType(_seeded_forward(state, i), m)
    try:
        yield state
    finally:
        for m in dropouts:
            m.__dict__.pop("forward", None)
        for m, mode in modes.items():
            m.training = mode
