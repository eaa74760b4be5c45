"""What a checkpoint needs besides weights so a model can be used again without its training config.

A training bundle saves a :class:`Recipe` in every checkpoint (``"recipe"``): the network's
class and constructor arguments, the method's input sampler (class and arguments), the patch
size and the number of passes. :func:`network_from_recipe` and :func:`sampler_from_recipe`
rebuild them for ``inference.yaml`` and ``cet-monai predict``, so a network overridden at
training time (``--network_def#features ...``) is rebuilt as trained.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence

import torch

from cet_monai.errors import CetMonaiError

__all__ = ["Recipe", "check_std_predictions", "load_recipe", "network_from_recipe", "sampler_from_recipe", "inferer_from_recipe"]


def _qualname(obj) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _locate(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


class Recipe:
    """Checkpointable description of a trained denoiser (see the module docstring).

    Args:
        network: the trained network; it must expose its constructor arguments as ``config``
            (as :class:`~cet_monai.networks.DropoutUNet` does), else inference needs an explicit
            ``network_def``.
        sampler: the inference sampler of the method (with ``config``).
        patch_size: training patch size (Z, Y, X); the default inference window.
        passes: default dropout passes T at inference.
        method: ``"fourier"`` or ``"real"``, for the record.
        whole_tomogram_split: for networks trained on whole-tomogram splits, the
            :class:`~cet_monai.inferers.FourierSplitInferer` (its ``config`` is saved) that
            inference must use; ``None`` for per-window versions.
    """

    def __init__(self, network, sampler, patch_size: Sequence[int], passes: int, method: str, whole_tomogram_split=None) -> None:
        self.network = network
        self.sampler = sampler
        self.whole_tomogram_split = whole_tomogram_split
        self.patch_size = [int(p) for p in patch_size]
        self.passes = int(passes)
        self.method = method

    def state_dict(self) -> dict:
        return {
            "network_class": _qualname(self.network),
            "network_args": dict(getattr(self.network, "config", {}) or {}),
            "sampler_class": _qualname(self.sampler),
            "sampler_args": dict(getattr(self.sampler, "config", {}) or {}),
            "patch_size": self.patch_size,
            "passes": self.passes,
            "method": self.method,
            "whole_tomogram_split": dict(self.whole_tomogram_split.config) if self.whole_tomogram_split is not None else None,
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Nothing to restore into a live training: the recipe is rebuilt from the config."""


def load_recipe(checkpoint: str | os.PathLike) -> dict:
    """The recipe saved in a training checkpoint (a dict, see :meth:`Recipe.state_dict`)."""
    if checkpoint in (None, "", "None"):
        raise CetMonaiError("a checkpoint is needed: pass --checkpoint PATH (written by training)")
    if not os.path.isfile(checkpoint):
        raise CetMonaiError(f"{checkpoint}: checkpoint file not found")
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise CetMonaiError(f"{checkpoint}: not a readable checkpoint ({error})") from None
    if not isinstance(state, Mapping) or "recipe" not in state or "network" not in state:
        raise CetMonaiError(
            f"{checkpoint}: holds no recipe; use a checkpoint written by a cet-monai training bundle "
            "(checkpoint_final_iteration=N.pt or checkpoint_epoch=N.pt)"
        )
    return dict(state["recipe"])


def network_from_recipe(recipe: Mapping) -> torch.nn.Module:
    """The network class of the recipe with its saved constructor arguments (weights not loaded)."""
    if not recipe.get("network_args"):
        raise CetMonaiError(f"the checkpoint does not record the arguments of {recipe.get('network_class')}; pass --network_def")
    return _locate(recipe["network_class"])(**recipe["network_args"])


def sampler_from_recipe(recipe: Mapping, num_versions: int | None = None):
    """The method's inference sampler of the recipe; ``num_versions`` (K) overrides the saved one."""
    args = dict(recipe.get("sampler_args") or {})
    if num_versions is not None and "num_versions" in args:
        args["num_versions"] = int(num_versions)
    return _locate(recipe["sampler_class"])(**args)


def check_std_predictions(versions: int, passes: int) -> None:
    """A per-voxel standard deviation needs more than one prediction per window (K x T > 1)."""
    if int(versions) * max(int(passes), 1) < 2:
        raise CetMonaiError(
            f"--save-std needs more than one prediction per window, but K x T = {int(versions)} x {int(passes)} here: "
            "raise --versions (K) or --passes (T, with a network trained with dropout)"
        )


def inferer_from_recipe(
    recipe: Mapping,
    versions: int | None = None,
    passes: int | None = None,
    overlap: float = 0.5,
    sw_batch_size: int = 2,
    return_std: bool = False,
    sw_device=None,
    device=None,
    progress: bool = False,
    seed: int = 0,
    slab_voxels: int | None = None,
):
    """The whole-tomogram inferer the recipe's method needs (``versions``/``passes``: K/T overrides).

    ``slab_voxels``: window methods run in Z slabs of at most that many voxels, their output on
    disk (:class:`~cet_monai.inferers.streaming.SlabInferer`); ``None``: the whole tomogram in
    one call. A whole-tomogram Fourier split needs the whole tomogram's FFT and is never slabbed.
    """
    from cet_monai.inferers import FourierSplitInferer, IdentitySampler, MCDropoutInferer
    from cet_monai.inferers.streaming import SlabInferer

    split = recipe.get("whole_tomogram_split")
    window = MCDropoutInferer(
        roi_size=recipe["patch_size"],
        sampler=IdentitySampler() if split else sampler_from_recipe(recipe, versions),
        passes=recipe["passes"] if passes is None else int(passes),
        sw_batch_size=sw_batch_size, overlap=overlap, mode="gaussian", seed=seed, return_std=return_std,
        sw_device=sw_device, device=device, progress=progress,
    )
    args = {**split, "seed": seed} if split else {}
    if split and versions is not None:
        args["num_versions"] = int(versions)
    if return_std:
        check_std_predictions(args["num_versions"] if split else window.sampler.num_versions, window.passes)
    if not split:
        return window if slab_voxels is None else SlabInferer(window, slab_voxels=int(slab_voxels), progress=progress)
    return FourierSplitInferer(window, **args)
