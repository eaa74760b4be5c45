"""Whole-tomogram inference: sliding windows, several input versions, Monte-Carlo dropout passes.

For every window ``x`` (a cube cut from the tomogram) the inferer forms ``K`` input versions
``p_1..p_K`` (a :class:`WindowSampler` decides how: the window itself, Bernoulli-masked copies
for the real-space method, Fourier-masked copies for the Fourier method), runs each through the
network in ``T`` dropout passes, and combines the ``K*T`` predictions (by default their mean,
``z = 1/(K*T) sum_k sum_t f_t(p_k)``). MONAI's :class:`~monai.inferers.SlidingWindowInferer`
then blends the overlapping windows (Gaussian weights by default).

With ``flip_versions`` the versions are also flipped: version ``k`` goes through the network
flipped along the axes of pattern ``k mod 8`` (Z, Y, X: none, Z, Y, ZY, X, ZX, YX, ZYX) and its
prediction is flipped back before the versions are combined. Flips of Z, Y and X keep a missing
wedge about the Y (tilt) axis where it is, and training sees them (``RandWedgeFlipd``), so each
flipped version is a valid input; averaging them also averages out the network's own
orientation-dependent errors, at no extra cost for a given K (test-time augmentation).

The ``K*T`` passes of all windows of a sliding-window batch are stacked into one network batch
(cut into chunks of at most ``max_batch``), not looped one by one. When the GPU runs out of
memory the chunk is halved, with a warning, and the run goes on.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from monai.inferers import Inferer, SlidingWindowInferer

from cet_monai.faults import fault_point

from .dropout import mc_dropout

__all__ = ["WindowSampler", "IdentitySampler", "MCDropoutInferer", "flip_axes", "is_out_of_memory"]

#: the 8 flips that keep a missing wedge about the Y axis, as bits of the pattern number: Z = 1, Y = 2, X = 4
_FLIP_BITS = ((-3, 1), (-2, 2), (-1, 4))


def flip_axes(pattern: int) -> list[int]:
    """Spatial axes (negative indices of a ``(..., Z, Y, X)`` tensor) flipped by pattern ``pattern mod 8``."""
    return [axis for axis, bit in _FLIP_BITS if pattern % 8 & bit]


def _flip_each(versions: torch.Tensor, dim: int) -> torch.Tensor:
    """Version ``k`` (index ``k`` along ``dim``) flipped by :func:`flip_axes` ``(k)``; its own inverse."""
    parts = [torch.flip(v, flip_axes(k)) if flip_axes(k) else v for k, v in enumerate(versions.unbind(dim))]
    return torch.stack(parts, dim)


class WindowSampler:
    """How the ``K`` input versions of a batch of windows are made and their predictions combined.

    Subclasses set ``num_versions`` and override :meth:`versions` (and :meth:`combine` when the
    plain mean is not the estimate).
    """

    num_versions: int = 1
    #: voxels of the tomogram around each window that the versions are made on (then cropped):
    #: masks applied to a window's spectrum wrap around its edges, so a sampler whose training
    #: pairs were made on margin-padded patches asks for the same margin here (0: the window only).
    context: int = 0
    #: ``True``: every input version gets its own thinned network (Self2Self's
    #: ``z = 1/N sum_n f_theta_n(b_n * x)``): the inferer draws ``N = K * T`` versions and sends
    #: version ``n`` through dropout pass ``n`` only. ``False``: the ``K`` versions share the
    #: ``T`` thinned networks (``K * T`` predictions from ``T`` networks).
    one_network_per_version: bool = False

    def versions(self, windows: torch.Tensor, generator: torch.Generator, count: int | None = None):
        """Input versions of ``windows`` (B, C, Z, Y, X): returns ``(inputs (K, B, C, Z, Y, X), aux)``.

        ``count`` is passed to ``one_network_per_version`` samplers only (``N = K * T``, which
        replaces ``K``); other samplers may keep the two-argument signature.
        """
        raise NotImplementedError

    def restore(self, predictions: torch.Tensor, aux) -> torch.Tensor:
        """``predictions`` (T, K, B, C, Z, Y, X) on the windows' own scale, for :meth:`combine` and
        the spread over predictions (a sampler that rescaled the windows scales them back); as
        they are by default."""
        return predictions

    def combine(self, predictions: torch.Tensor, aux) -> torch.Tensor:
        """Estimate from ``predictions`` (T, K, B, C, Z, Y, X): the mean over passes and versions."""
        return predictions.mean(dim=(0, 1))


class IdentitySampler(WindowSampler):
    """The window itself as every version (plain network, or dropout passes only).

    ``num_versions`` > 1 gives that many copies, which only differ once the inferer flips them
    (``MCDropoutInferer(flip_versions=True)``: a plain network averaged over the wedge-keeping flips).
    """

    def __init__(self, num_versions: int = 1):
        if int(num_versions) < 1:
            raise ValueError(f"num_versions must be >= 1, got {num_versions}")
        self.num_versions = int(num_versions)
        self.config = {"num_versions": self.num_versions} if self.num_versions > 1 else {}

    def versions(self, windows, generator, count=None):
        return windows.unsqueeze(0).expand((self.num_versions,) + tuple(windows.shape)), None


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA (or other accelerator) out-of-memory errors."""
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


class MCDropoutInferer(Inferer):
    """Sliding-window inference with ``K`` input versions times ``T`` dropout passes per window.

    Args:
        roi_size: window size (Z, Y, X) in voxels; a multiple of the network's divisor.
        sampler: makes the input versions; default :class:`IdentitySampler`.
        passes: ``T``, dropout passes per version (dropout off when 0: one deterministic pass).
        sw_batch_size: windows per sliding-window step.
        overlap: window overlap fraction.
        mode: blending, ``"gaussian"`` (default) or ``"constant"``.
        max_batch: most samples (windows x versions x passes) per network call; ``None``: all.
        seed: seeds the versions' randomness and the passes' dropout masks, so results are
            reproducible; each call draws new versions from a generator seeded once here.
        return_std: also return the per-voxel standard deviation over the ``K*T`` predictions.
        window_transform: applied to each window before the versions are made (e.g. the
            whole-tomogram normalisation, so a memory-mapped raw tomogram never needs a
            normalised copy).
        sw_device: device the network runs on (default: the input's); ``device``: device the
            stitched output is accumulated on (default: the input's, e.g. CPU while windows go
            to the GPU).
        progress: a tqdm progress bar over windows.
        flip_versions: flip version ``k`` by pattern ``k mod 8`` before the network and its
            prediction back after (module docstring); ``False``: every version as the sampler made it.

    A sampler with ``context = c > 0`` gets windows of ``roi_size + 2c``: the input is padded by
    ``c`` (reflection), the windows overlap by ``overlap`` of ``roi_size + 2c``, each prediction
    is weighted by the blending map of ``roi_size`` on its central part and ~0 (1e-3 of the map's
    smallest weight) on its margin, and the padding is cropped from the result. Every voxel is
    then estimated from windows in which it lies ``c`` or more voxels from the edge (for overlaps of
    at least ``2c / (roi + 2c)``, 1/3 for 32 + 2 x 8; a smaller ``overlap`` is raised to it).
    """

    def __init__(
        self,
        roi_size: Sequence[int] | int,
        sampler: WindowSampler | None = None,
        passes: int = 8,
        sw_batch_size: int = 2,
        overlap: float = 0.5,
        mode: str = "gaussian",
        max_batch: int | None = None,
        seed: int = 0,
        return_std: bool = False,
        window_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        sw_device: torch.device | str | None = None,
        device: torch.device | str | None = None,
        progress: bool = False,
        flip_versions: bool = False,
    ) -> None:
        super().__init__()
        if passes < 0:
            raise ValueError(f"passes must be >= 0, got {passes}")
        self.sampler = sampler or IdentitySampler()
        self.passes = int(passes)
        self.max_batch = max_batch
        self.seed = int(seed)
        self.return_std = _flag(return_std, "return_std / save_std")
        self.window_transform = window_transform
        self.flip_versions = _flag(flip_versions, "flip_versions")
        self.context = int(getattr(self.sampler, "context", 0))
        roi = [int(roi_size)] * 3 if isinstance(roi_size, int) else [int(r) for r in roi_size]
        if self.context:  # at least 2c / (roi + 2c), so the windows' centres tile the tomogram
            overlaps = [float(overlap)] * 3 if isinstance(overlap, (int, float)) else [float(o) for o in overlap]
            overlap = [max(o, 2 * self.context / (r + 2 * self.context)) for o, r in zip(overlaps, roi)]
        self.sliding_window = SlidingWindowInferer(
            roi_size=[r + 2 * self.context for r in roi],
            sw_batch_size=sw_batch_size,
            overlap=overlap,
            mode=mode,
            sw_device=sw_device,
            device=device,
            progress=_flag(progress, "progress"),
        )
        if self.context:
            self.sliding_window.roi_weight_map = _margin_weight_map(roi, self.context, mode)

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args, **kwargs):
        """Denoise ``inputs`` (B, C, Z, Y, X); returns the estimate, or ``{"mean", "std"}``."""
        n_passes = max(self.passes, 1)
        paired = self.sampler.one_network_per_version
        n_networks = n_passes * self.sampler.num_versions if paired else n_passes
        seeds = [self.seed * 10_007 + t for t in range(n_networks)] if self.passes > 0 else None
        generator_device = kwargs.pop("generator_device", None)
        # the versions' randomness may be seeded apart from the dropout masks (SlabInferer: new
        # noise draws per slab, the same thinned networks everywhere)
        generator_seed = kwargs.pop("generator_seed", None)
        generators: dict[str, torch.Generator] = {}

        def generator_for(device: torch.device) -> torch.Generator:
            key = str(generator_device or device)
            if key not in generators:
                generators[key] = torch.Generator(device=key).manual_seed(self.seed if generator_seed is None else int(generator_seed))
            return generators[key]

        training = network.training
        try:
            if self.passes > 0:
                ctx = mc_dropout(network, seeds)
            else:
                network.eval()
                ctx = _null_state()
            with ctx as state, torch.no_grad():

                def predictor(windows: torch.Tensor):
                    fault_point("inference")
                    windows = torch.as_tensor(windows).float()
                    if self.window_transform is not None:
                        windows = self.window_transform(windows)
                    generator = generator_for(windows.device)
                    versions, aux = self.sampler.versions(windows, generator, n_networks) if paired else self.sampler.versions(windows, generator)
                    if self.flip_versions:
                        versions = _flip_each(versions, 0)
                    k, b = versions.shape[:2]
                    flat = versions.reshape((k * b,) + versions.shape[2:])
                    if paired:  # version n -> thinned network n, the same n in every window
                        batch, pass_index, t = flat, torch.arange(k).repeat_interleave(b), 1
                    else:
                        batch = flat.repeat((n_passes,) + (1,) * (flat.dim() - 1))
                        pass_index, t = torch.arange(n_passes).repeat_interleave(k * b), n_passes
                    out = self._run(network, batch, pass_index, state, *args, **kwargs)
                    preds = out.reshape((t, k, b) + out.shape[1:])
                    if self.flip_versions:
                        preds = _flip_each(preds, 1)
                    preds = self.sampler.restore(preds, aux)
                    estimate = self.sampler.combine(preds, aux)
                    if self.return_std:
                        return {"mean": estimate, "std": preds.float().std(dim=(0, 1), unbiased=False)}
                    return estimate

                if not self.context:
                    return self.sliding_window(inputs, predictor)
                c = self.context
                pad_mode = "reflect" if min(inputs.shape[2:]) > c else "replicate"
                padded = torch.nn.functional.pad(torch.as_tensor(inputs).float(), (c,) * 6, mode=pad_mode)
                out = self.sliding_window(padded, predictor)
                crop = (Ellipsis, slice(c, -c), slice(c, -c), slice(c, -c))
                return {k: v[crop] for k, v in out.items()} if isinstance(out, dict) else out[crop]
        finally:
            network.train(training)

    def _run(self, network, batch, pass_index, state, *args, **kwargs) -> torch.Tensor:
        """Network over ``batch`` in chunks of at most ``max_batch``, halving on out-of-memory."""
        chunk = self.max_batch or batch.shape[0]
        outputs, start = [], 0
        while start < batch.shape[0]:
            stop = min(start + chunk, batch.shape[0])
            if state is not None:
                state.pass_index = pass_index[start:stop]
            try:
                outputs.append(network(batch[start:stop], *args, **kwargs))
            except (torch.OutOfMemoryError, RuntimeError) as error:
                if not is_out_of_memory(error) or chunk == 1:
                    raise
                chunk = max(1, (stop - start) // 2)
                self.max_batch = chunk
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                warnings.warn(f"out of memory: network batch halved to {chunk} and the run goes on")
                continue
            start = stop
        return torch.cat(outputs, dim=0)


def _margin_weight_map(roi: Sequence[int], context: int, mode: str) -> torch.Tensor:
    """(1, 1, *roi + 2 context) blending weights: ``mode``'s map on the centre, ~0 on the margin."""
    from monai.data.utils import compute_importance_map

    inner = compute_importance_map(tuple(roi), mode=mode, sigma_scale=0.125).float()
    full = torch.full([r + 2 * context for r in roi], float(inner.min()) * 1e-3)
    full[context:-context, context:-context, context:-context] = inner
    return full[None, None]


def _flag(value, name: str) -> bool:
    from cet_monai.engines.preflight import as_bool  # a command line's "false" is a string

    return as_bool(value, name)


class _null_state:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
