"""Inference with what belongs to each tomogram: one inferer made per tomogram denoised.

A model fitted on several tomograms may need something of each tomogram at inference (the
default method: the tomogram's own noise spectrum, which its window sampler draws noise with).
:class:`PerTomogramInferer` makes the inferer for each tomogram it is called with, from the
tomogram itself, and runs it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from monai.inferers import Inferer

__all__ = ["PerTomogramInferer"]


class PerTomogramInferer(Inferer):
    """Run, on each tomogram of a batch, the inferer made for that tomogram.

    Args:
        inferer_for: called with one normalised ``(C, Z, Y, X)`` tomogram (a view of the input,
            on the input's device), returns the inferer to run on it, e.g. a
            :class:`~cet_monai.inferers.MCDropoutInferer` (or a
            :class:`~cet_monai.inferers.streaming.SlabInferer`) whose sampler draws noise with
            the tomogram's own spectrum.

    ``__call__(inputs, network)`` takes ``(B, C, Z, Y, X)`` and returns what the inferers return,
    for one tomogram (``B = 1``, the inference bundle's batches) exactly that (a slabbed result
    stays on disk), for several their results concatenated along the batch axis (tensors, or
    dicts of tensors such as ``{"mean", "std"}``).
    """

    def __init__(self, inferer_for: Callable[[torch.Tensor], Inferer]) -> None:
        super().__init__()
        self.inferer_for = inferer_for

    def __call__(self, inputs: torch.Tensor, network, *args, **kwargs):
        outputs = [self.inferer_for(inputs[b])(inputs[b : b + 1], network, *args, **kwargs) for b in range(inputs.shape[0])]
        if len(outputs) == 1:
            return outputs[0]
        if isinstance(outputs[0], Mapping):
            return {k: torch.cat([o[k] for o in outputs]) for k in outputs[0]}
        return torch.cat(outputs)
