"""Segment membranes in a tomogram with a trained network (sliding window, Gaussian blending).

:func:`segment` is the whole job on files: read (memory-mapped) and check the tomogram, normalise
it with its own whole-tomogram statistics, predict the membrane probability patch by patch
(MONAI :class:`~monai.inferers.SlidingWindowInferer`, ``mode="gaussian"``, windows of the
training patch size, output accumulated on the CPU), threshold it and write the label map (1
membrane, 0 elsewhere) -- and, on request, the probability -- atomically, with the input's
header (voxel size, origin). Existing outputs are refused before any work unless ``overwrite``.

The inference bundle (``bundles/membrane_segmentation/configs/inference.yaml``) does the same
through a MONAI evaluator with :class:`LoadSegmentationInputd` and :class:`SaveSegmentationd`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer
from monai.transforms import MapTransform

from cet_monai.engines.data import is_unset
from cet_monai.engines.fingerprint import volume_stem
from cet_monai.errors import CetMonaiError, TomogramError
from cet_monai.io import VolumeHeader, check_output_path, read_volume, volume_format, write_volume
from cet_monai.normalize import TomogramNormalizer

from .model import MembraneProbability, ModelSpec

__all__ = [
    "segment",
    "checkpoint_safe_globals",
    "load_checkpoint",
    "load_model",
    "predict_probability",
    "write_segmentation",
    "label_dtype",
    "default_label_name",
    "LoadSegmentationInputd",
    "SaveSegmentationd",
]

logger = logging.getLogger(__name__)


def checkpoint_safe_globals() -> list:
    """The numpy types a training checkpoint holds (numpy's random state, in ``RandomStates``).

    ``torch.load(weights_only=True)`` -- also MONAI's ``CheckpointLoader`` -- refuses them unless
    allowed: ``torch.serialization.add_safe_globals(checkpoint_safe_globals())`` (the training
    bundle does this before resuming) or ``with torch.serialization.safe_globals(...)``. They only
    rebuild arrays; nothing else becomes loadable.
    """
    out = [np.ndarray, np.dtype]
    for name in ("numpy._core.multiarray._reconstruct", "numpy.core.multiarray._reconstruct"):
        mod, _, attr = name.rpartition(".")
        try:
            module = __import__(mod, fromlist=[attr])
            out.append(getattr(module, attr))
        except (ImportError, AttributeError):
            pass
    out += [type(np.dtype(t)) for t in ("uint32", "uint8", "int64", "float64", "float32")]
    return out


def load_checkpoint(path, map_location="cpu", model_spec: ModelSpec | Mapping | None = None):
    """Read a segmentation checkpoint safely (``torch.load(weights_only=True)``).

    Accepts the bundle's ``model.pt`` / ``model_best.pt`` (``{"network", "model_spec"}``), its full
    training checkpoints (``checkpoint_*.pt``, which also hold optimiser, trainer and random
    states) and a bare network ``state_dict``. The network description comes from the file's
    ``model_spec``, or from ``model_spec`` when the file has none.

    Returns:
        ``(state_dict, ModelSpec)``.
    """
    path = Path(path)
    if not path.is_file():
        raise TomogramError(path, "checkpoint file not found")
    try:
        with torch.serialization.safe_globals(checkpoint_safe_globals()):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle errors, truncated files, not a torch file
        raise TomogramError(path, f"cannot read the checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:200]})") from err
    if not isinstance(ckpt, Mapping):
        raise TomogramError(path, f"is not a checkpoint dictionary (got {type(ckpt).__name__})")
    if "network" in ckpt and isinstance(ckpt["network"], Mapping):
        state = ckpt["network"]
    elif all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        state = ckpt
    else:
        raise TomogramError(path, f"holds no network weights (keys: {sorted(ckpt)[:8]})")
    spec = ckpt.get("model_spec")
    if spec is None:
        if model_spec is None:
            raise TomogramError(path, "holds no model_spec (network description); pass model_spec=... "
                                      "or use the bundle's model.pt / model_best.pt")
        spec = model_spec
    spec = spec if isinstance(spec, ModelSpec) else ModelSpec.from_state_dict(spec)
    return dict(state), spec


def load_model(checkpoint, device=None, model_spec=None):
    """``(network in eval mode on device, ModelSpec)`` from a checkpoint (see :func:`load_checkpoint`)."""
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    state, spec = load_checkpoint(checkpoint, map_location="cpu", model_spec=model_spec)
    network = spec.build()
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        raise TomogramError(checkpoint, f"weights do not fit the network {spec.architecture} {spec.features}: "
                                        f"{str(err).splitlines()[0]}") from err
    return network.to(device).eval(), spec


def predict_probability(
    image,
    network: torch.nn.Module,
    roi_size: Sequence[int] = (48, 48, 48),
    overlap: float = 0.5,
    sw_batch_size: int = 4,
    device=None,
    channel: int = 1,
    amp: bool = False,
    progress: bool = False,
) -> np.ndarray:
    """Membrane probability ``(Z, Y, X)`` float32 of a *normalised* tomogram.

    Args:
        image: normalised tomogram ``(Z, Y, X)`` or ``(1, Z, Y, X)``, numpy or torch.
        network: logits network (``(B, 1, ...) -> (B, C, ...)``); put in eval mode here.
        roi_size: window, normally the training patch size.
        overlap: fraction of overlap between windows; blended with Gaussian weights.
        device: where the network runs (default: the network's); the full output stays on the CPU.
        channel: class whose softmax probability is returned (1: membrane).
        amp: bfloat16 autocast on CUDA.
    """
    x = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image)
    x = x.float()
    while x.dim() < 5:
        x = x[None]
    net_device = next(network.parameters()).device
    device = torch.device(device) if device is not None else net_device
    network = network.to(device).eval()
    inferer = SlidingWindowInferer(roi_size=tuple(int(r) for r in roi_size), sw_batch_size=int(sw_batch_size),
                                   overlap=float(overlap), mode="gaussian", sw_device=device,
                                   device=torch.device("cpu"), progress=progress)
    model = MembraneProbability(network, channel)
    use_amp = bool(amp) and device.type == "cuda"
    with torch.inference_mode(), torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
        prob = inferer(x, model)
    prob = prob.as_tensor() if hasattr(prob, "as_tensor") else prob
    return prob[0, 0].float().clamp(0, 1).numpy()


def label_dtype(path) -> str:
    """Integer dtype of a label map in the format of ``path``: int8 (MRC mode 0, NIfTI), uint8 (TIFF)."""
    return "uint8" if volume_format(Path(path)) == "tiff" else "int8"


def default_label_name(path, suffix: str = "_membranes") -> str:
    """``tomo.mrc`` -> ``tomo_membranes.mrc`` (``.nii.gz`` kept whole)."""
    p = Path(path)
    if p.name.endswith(".nii.gz"):
        return str(p.with_name(p.name[: -len(".nii.gz")] + suffix + ".nii.gz"))
    return str(p.with_name(p.stem + suffix + p.suffix))


def write_segmentation(output_path, probability: np.ndarray, header: VolumeHeader, threshold: float = 0.5,
                       probability_path=None, overwrite: bool = False, inputs=(), probability_dtype: str = "float32") -> dict:
    """Write ``probability > threshold`` as a label map (1 membrane) and optionally the probability.

    Both files are written atomically with ``header`` (voxel size, origin). Returns the paths and
    the membrane fraction.
    """
    labels = (np.asarray(probability) > float(threshold)).astype(np.uint8)
    out = write_volume(output_path, labels, header=header, overwrite=overwrite, dtype=label_dtype(output_path), inputs=inputs)
    result = {"labels": out, "probability": None, "membrane_fraction": float(labels.mean())}
    if probability_path is not None:
        result["probability"] = write_volume(probability_path, np.asarray(probability, dtype=np.float32), header=header,
                                             overwrite=overwrite, dtype=probability_dtype, inputs=inputs)
    return result


def _check_outputs(input_path, output_path, probability_path, overwrite):
    check_output_path(output_path, inputs=[input_path], overwrite=overwrite)
    if probability_path is not None:
        check_output_path(probability_path, inputs=[input_path], overwrite=overwrite)
        if os.path.abspath(probability_path) == os.path.abspath(output_path):
            raise CetMonaiError(f"{output_path}: the label map and the probability map need different file names")


def segment(
    input_path,
    output_path,
    checkpoint,
    probability_path=None,
    overwrite: bool = False,
    device=None,
    roi_size: Sequence[int] | None = None,
    overlap: float = 0.5,
    sw_batch_size: int = 4,
    threshold: float = 0.5,
    amp: bool = True,
    preview_path=None,
    progress: bool = False,
) -> dict:
    """Segment the membranes of a tomogram file.

    Args:
        input_path: tomogram (MRC / NIfTI / TIFF).
        output_path: label map to write (1 membrane, 0 elsewhere; int8 MRC/NIfTI, uint8 TIFF),
            with the input's voxel size and origin. The format follows the suffix.
        checkpoint: the bundle's ``model.pt`` / ``model_best.pt`` or a training checkpoint.
        probability_path: also write the membrane probability (float32, 0..1) here.
        overwrite: replace existing outputs (checked before any work otherwise).
        device: ``"cuda"``, ``"cpu"``, ... (default: CUDA when available).
        roi_size: sliding window ``(Z, Y, X)`` (default: the training patch size in the checkpoint).
        overlap: window overlap fraction (Gaussian blending).
        sw_batch_size: windows per forward pass.
        threshold: probability above which a voxel is membrane.
        amp: bfloat16 autocast on CUDA (ignored on the CPU).
        preview_path: optional PNG of central orthogonal slices (tomogram, probability, labels).
        progress: show a progress bar over windows.

    Returns:
        ``{"labels": Path, "probability": Path | None, "membrane_fraction": float, "seconds": float}``.
    """
    t0 = time.perf_counter()
    if not 0.0 < float(threshold) < 1.0:
        raise CetMonaiError(f"threshold must be between 0 and 1, got {threshold}")
    if not 0.0 <= float(overlap) < 1.0:
        raise CetMonaiError(f"overlap must be in [0, 1), got {overlap}")
    from cet_monai.errors import user_error
    from cet_monai.workflows import make_workflow

    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    overrides = {
        "input": str(input_path), "output": str(output_path), "checkpoint": str(checkpoint), "overwrite": bool(overwrite),
        "probability_output": None if probability_path is None else str(probability_path),
        "preview_output": None if preview_path is None else str(preview_path),
        "device": dev, "amp": bool(amp) and dev.type == "cuda", "sw_overlap": float(overlap), "sw_batch_size": int(sw_batch_size),
        "threshold": float(threshold), "progress": bool(progress),
    }
    if roi_size is not None:
        roi = [int(r) for r in roi_size]
        overrides["roi_size"] = roi * 3 if len(roi) == 1 else roi
    try:  # the bundle's inference: one segmentation path for the bundle, this function and the command line
        workflow = make_workflow("membrane_segmentation", ("inference.yaml",), "infer", **overrides)
        workflow.initialize()
        workflow.run()
        workflow.finalize()
    except Exception as err:
        cause = user_error(err)
        if cause is not None:
            raise cause from None
        raise
    result = dict(workflow.parser.get_parsed_content("saver").results[0])
    result["seconds"] = time.perf_counter() - t0
    logger.info("wrote %s (%.2f %% membrane) in %.1f s", result["labels"], 100 * result["membrane_fraction"], result["seconds"])
    return result


class LoadSegmentationInputd(MapTransform):
    """Read a tomogram path and normalise it with its own whole-tomogram statistics.

    ``d[key]`` becomes a ``(1, Z, Y, X)`` float32 :class:`~monai.data.MetaTensor` whose ``meta``
    holds ``filename_or_obj`` (the path; :class:`SaveSegmentationd` reads the header from it
    again, so the metadata stays collatable) and ``voxel_size``.
    """

    def __init__(self, keys: KeysCollection = "image", percentiles: Sequence[float] = (0.5, 99.5),
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.percentiles = tuple(float(p) for p in percentiles)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path = str(d[key])
            raw, header = read_volume(path, mmap=True, validate=True)
            normalizer = TomogramNormalizer(*self.percentiles).fit(raw)
            image = torch.as_tensor(np.asarray(normalizer.transform(raw), dtype=np.float32))[None]
            d[key] = MetaTensor(image, meta={"filename_or_obj": path, "voxel_size": torch.tensor(header.voxel_size)})
        return d


class SaveSegmentationd(MapTransform):
    """Write the membrane probability in ``d[key]`` (batch ``(B, 1, Z, Y, X)``, evaluator with
    ``decollate=False``) as a label map, and optionally the probability, with the input's header.

    Args:
        output: label file (one input) or folder (``<input stem>_membranes<suffix>`` in it).
        probability_output: probability file / folder (``..._membrane_probability``), or ``None``.
        threshold: membrane where the probability is above it.
        overwrite: replace existing outputs.
        preview_output: PNG file / folder (``..._membranes.png``) of central orthogonal slices of the
            normalised tomogram, the probability and the labels, or ``None``.

    ``written`` lists the label files, ``results`` one dict per input (``labels``,
    ``probability``, ``membrane_fraction``, ``preview``).
    """

    def __init__(self, keys: KeysCollection = "pred", output: str | None = None, probability_output: str | None = None,
                 meta_source_key: str = "image", threshold: float = 0.5, overwrite: bool = False,
                 preview_output: str | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output = output
        self.probability_output = probability_output
        self.meta_source_key = meta_source_key
        self.threshold = float(threshold)
        self.overwrite = overwrite
        self.preview_output = preview_output
        self.written: list[Path] = []
        self.results: list[dict] = []

    @staticmethod
    def _resolve(target, input_path: str, suffix: str) -> Path:
        if is_unset(target):
            return Path(default_label_name(input_path, suffix))
        t = Path(target)
        if t.is_dir() or not t.suffix:
            return t / Path(default_label_name(input_path, suffix)).name
        return t

    def preview_path(self, input_path: str) -> Path:
        """``preview_output`` itself if it names a ``.png``, else ``<folder>/<input stem>_membranes.png``."""
        target = Path(str(self.preview_output))
        if target.suffix.lower() == ".png":
            return target
        return target / f"{Path(volume_stem(input_path)).name}_membranes.png"

    def output_paths(self, input_path: str) -> tuple[Path, Path | None]:
        labels = self._resolve(self.output, input_path, "_membranes")
        prob = None if is_unset(self.probability_output) else self._resolve(self.probability_output, input_path, "_membrane_probability")
        return labels, prob

    def check(self, inputs) -> list:
        """Refuse, before any work, outputs that exist (unless ``overwrite``) or would replace an
        input, and a single output file for several inputs. Returns ``inputs`` as a list."""
        inputs = [str(i) for i in ([inputs] if isinstance(inputs, (str, os.PathLike)) else (inputs or []))]
        if not inputs:
            raise CetMonaiError("no input tomogram: set input (a path or a list of paths)")
        for target in (self.output, self.probability_output):
            if len(inputs) > 1 and not is_unset(target) and Path(target).suffix and not Path(target).is_dir():
                raise CetMonaiError(f"{target}: several inputs need an output folder, not a file name")
        for i in inputs:
            labels, prob = self.output_paths(i)
            _check_outputs(i, labels, prob, self.overwrite)
        return inputs

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        source = d[self.meta_source_key]
        meta = source.meta if isinstance(source, MetaTensor) else {}
        for key in self.key_iterator(d):
            pred = d[key]
            pred = pred.as_tensor() if hasattr(pred, "as_tensor") else pred
            for b in range(pred.shape[0]):
                path = meta["filename_or_obj"]
                path = str(path[b] if isinstance(path, (list, tuple)) else path)
                header = read_volume(path, mmap=True)[1]  # every header field, as read
                labels, prob = self.output_paths(path)
                probability = pred[b, 0].detach().cpu().float().numpy()
                res = write_segmentation(labels, probability, header, self.threshold, prob, self.overwrite, inputs=[path])
                res["preview"] = None
                if not is_unset(self.preview_output):
                    from cet_monai.visualize import save_orthoslices

                    image = source[b, 0] if source.dim() == 5 else source[0]
                    res["preview"] = save_orthoslices(
                        self.preview_path(path),
                        {"tomogram": image.detach().cpu().float().numpy(), "membrane probability": probability,
                         "labels": (probability > self.threshold).astype(np.uint8)}, voxel_size=header.voxel_size)
                self.written.append(res["labels"])
                self.results.append(res)
                logger.info("wrote %s (%.2f %% membrane)", res["labels"], 100 * res["membrane_fraction"])
        return d
