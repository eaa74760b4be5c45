"""Python entry points that run the bundles: train on one tomogram (or several), denoise files or arrays.

The command line (:mod:`cet_monai.cli`), the demo and the benchmarks all go through these
functions, and these functions go through the bundles' YAML configs with MONAI's
:class:`~monai.bundle.ConfigWorkflow`, so there is one wiring of each method: what
``python -m monai.bundle run training --config_file "['bundles/<name>/configs/train.yaml','bundles/denoising/configs/train.yaml']"``
does is what ``cet-monai denoise`` does.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from cet_monai.errors import CetMonaiError

__all__ = [
    "METHODS",
    "METHOD_TITLES",
    "bundle_dir",
    "config_file",
    "config_files",
    "method_from_settings",
    "make_workflow",
    "train",
    "predict",
    "denoise_volume",
    "denoise_with_network",
]

logger = logging.getLogger(__name__)

#: method name -> bundle name
METHODS = {"recorrupted": "recorrupted_denoising", "fourier": "fourier_denoising", "real": "real_denoising"}
#: the folder of the wiring the denoising bundles share: the rest of their training
#: (``configs/train.yaml``), multi-GPU training and one inference for a checkpoint of any method
SHARED_BUNDLE = "denoising"
#: the shared configs a method bundle's config name stands for (what ``make_workflow`` loads)
SHARED_CONFIGS = {"train.yaml": ("train.yaml", f"{SHARED_BUNDLE}/train.yaml"),
                  "multi_gpu_train.yaml": (f"{SHARED_BUNDLE}/multi_gpu_train.yaml",),
                  "inference.yaml": (f"{SHARED_BUNDLE}/inference.yaml",)}
#: bundle whose inference runs a checkpoint of each recorded method (``cet_monai.methods``)
INFERENCE_BUNDLES = {**METHODS, "halves": "fourier_denoising"}
#: method name -> what a report calls it
METHOD_TITLES = {"recorrupted": "recorrupted pairs", "fourier": "Fourier masks", "real": "real-space Bernoulli masks", "n2n": "even/odd Noise2Noise"}


def bundle_dir(name: str) -> Path:
    """Folder of a bundle shipped with cet-monai (``$CET_MONAI_BUNDLES`` overrides the search).

    The bundles live in the repository's top-level ``bundles/`` folder, next to the package (a
    checkout or an editable install, ``pip install -e .``, uses them in place); a wheel
    (``pip install .``) ships them inside the package as ``cet_monai/bundles``.
    """
    here = Path(__file__).resolve().parent
    roots = [os.environ.get("CET_MONAI_BUNDLES"), here.parent / "bundles", here / "bundles"]
    for root in roots:
        if root and (Path(root) / name / "configs").is_dir():
            return Path(root) / name
    raise CetMonaiError(
        f"bundle {name!r} not found (looked in {', '.join(str(r) for r in roots if r)}); reinstall cet-monai "
        "(`pip install .` ships the bundles) or point CET_MONAI_BUNDLES at the folder that holds them"
    )


def config_file(bundle: str, name: str = "train.yaml") -> str:
    """The path of one config file of a bundle (``name`` as in its ``configs/`` folder)."""
    return str(bundle_dir(bundle) / "configs" / name)


def config_files(bundle: str, names: Sequence[str] = ("train.yaml",)) -> list[str]:
    """The config files MONAI merges, in order, for ``names`` of ``bundle``.

    For a denoising bundle (:data:`METHODS`), ``"train.yaml"`` is the method's own file followed by
    the shared ``bundles/denoising/configs/train.yaml``; ``"multi_gpu_train.yaml"`` and
    ``"inference.yaml"`` are the shared ones. Any other name is the bundle's own file.
    """
    shared = bundle in METHODS.values()
    files = []
    for name in names:
        for part in SHARED_CONFIGS.get(name, (name,)) if shared else (name,):
            owner, _, file = part.rpartition("/")
            files.append(config_file(owner or bundle, file))
    return files


def _not_skipping_logging(record: logging.LogRecord) -> bool:
    """Drops MONAI's warnings that it skips the logging file we chose to skip, and that the
    merged config files are in two folders (the method's and the shared one: meta and logging
    files are passed explicitly)."""
    message = record.getMessage()
    return "skipping logging" not in message and "Not all config files are in" not in message


def _critical_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.CRITICAL


def make_workflow(bundle: str, configs: Sequence[str] = ("train.yaml",), workflow_type: str = "train", **overrides):
    """A MONAI :class:`~monai.bundle.ConfigWorkflow` of a bundle with ``overrides`` (config ids).

    The bundle's ``logging.conf`` (every engine event at INFO, on stdout) is applied only when
    the caller's root logger is at INFO or below (``cet-monai -v``, or ``logging.basicConfig(level=logging.INFO)``):
    otherwise stdout stays for results (the CLI prints the written paths there) and progress
    bars show the training. ``python -m monai.bundle run`` applies it as MONAI always does.
    """
    from monai.bundle import ConfigWorkflow
    from monai.bundle import workflows as monai_workflows

    root = bundle_dir(bundle)
    files = config_files(bundle, configs)
    verbose = logging.getLogger().isEnabledFor(logging.INFO)
    monai_workflows.logger.addFilter(_not_skipping_logging)
    with warnings.catch_warnings():
        # MONAI warns that configs can run code: these are the package's own configs
        warnings.filterwarnings("ignore", message="parsing config_file")
        warnings.filterwarnings("ignore", message=".*_target_.*")
        try:
            workflow = ConfigWorkflow(
                config_file=files if len(files) > 1 else files[0],
                meta_file=str(root / "configs" / "metadata.json"),
                logging_file=str(root / "configs" / "logging.conf") if verbose else False,
                workflow_type=workflow_type,
                bundle_root=str(root),
                **overrides,
            )
        finally:
            monai_workflows.logger.removeFilter(_not_skipping_logging)
    # MONAI's StatsHandler logs every validation to stdout at INFO whatever the root level, and
    # an exception's traceback before it propagates (the caller sees the exception itself); its
    # logger's level is reset to INFO when a handler is built, so a filter keeps it quiet
    stats_logger = logging.getLogger("monai.handlers.StatsHandler")
    if verbose:
        stats_logger.removeFilter(_critical_only)
    elif _critical_only not in stats_logger.filters:
        stats_logger.addFilter(_critical_only)
    return workflow


@functools.lru_cache(maxsize=None)
def bundle_defaults(method: str) -> dict:
    """The plain values of the method's training config (its ``train.yaml`` and the shared one read
    as YAML and merged as MONAI merges them, once per method; callers only read it)."""
    from monai.bundle import ConfigParser

    return ConfigParser.load_config_files(config_files(METHODS[method]))


def method_from_settings(method: str, overrides: Mapping | None = None):
    """The method object (:mod:`cet_monai.methods`, not yet fitted to a tomogram) that training with
    ``overrides`` (config ids, as for :func:`train`) would build: the bundle's ``method_def``
    instantiated by MONAI's :class:`~monai.bundle.ConfigParser` from the merged configs and the
    overrides (only ``method_def`` and the ids it refers to are evaluated). The method's class
    validates the settings, so a bad value (``alpha=-1``, ``keep_prob=2``) raises its
    :class:`~cet_monai.errors.CetMonaiError` here, before any tomogram is read.
    """
    from monai.bundle import ConfigParser

    from cet_monai.errors import user_error

    parser = ConfigParser(ConfigParser.load_config_files(config_files(METHODS[method])))
    parser.update(dict(overrides or {}))
    try:
        return parser.get_parsed_content("method_def")
    except Exception as err:  # MONAI wraps the method's own error
        cause = user_error(err)
        if cause is not None:
            raise cause from None
        raise


def check_iterations(method: str, overrides: dict, option: str = "iterations") -> None:
    """Whole epochs only, for ``overrides["iterations"]`` (changed in place): fewer iterations than
    an epoch shorten the epoch; a budget that is not a whole number of epochs is refused, naming the
    ways out (the bundle's ``max_epochs = iterations // epoch_length`` would round it silently:
    20 iterations with an epoch of 50 ran 50). ``option`` names the setting in the message."""
    if "iterations" not in overrides:
        return
    iterations = int(overrides["iterations"])
    if iterations < 1:
        raise CetMonaiError(f"{option} must be >= 1, got {iterations}")
    epoch = overrides.get("epoch_length", bundle_defaults(method).get("epoch_length", 1))
    if isinstance(epoch, str):  # an expression: the bundle decides
        return
    epoch = int(epoch)
    if iterations < epoch:
        overrides["epoch_length"] = iterations
    elif iterations % epoch:
        lo, hi = iterations // epoch * epoch, (iterations // epoch + 1) * epoch
        raise CetMonaiError(
            f"{option} {iterations} is not a whole number of epochs of {epoch} iterations (the method's "
            f"epoch_length): use {lo} or {hi}, or set epoch_length to a number dividing {iterations}"
        )


def train(method: str = "recorrupted", tomogram=None, output_dir: str | os.PathLike = "runs", extra_configs: Sequence[str] = (), **overrides):
    """Fit the self-supervised model of ``method`` on one tomogram; returns the finished workflow.

    Args:
        method: ``"recorrupted"`` (default), ``"fourier"`` or ``"real"``.
        tomogram: path, or ``None`` for the simulated default; a list of paths fits ONE model on
            all of them (:class:`~cet_monai.engines.TomogramCollection`; with
            ``extra_configs=("multi_gpu_train.yaml",)`` under torchrun, each process draws from
            its share of them).
        output_dir: checkpoints, TensorBoard logs and previews go here.
        extra_configs: further config files of the bundle merged over ``train.yaml`` (e.g.
            ``"halves.yaml"``).
        overrides: any config id of the bundle's ``train.yaml`` (e.g. ``iterations=400``,
            ``sampling="pool"``, ``network_def#dropout=0.5``; use ``"#"`` in ids).

    The workflow's parsed content is available afterwards, e.g.
    ``wf.parser.get_parsed_content("network")`` and ``"source"``.
    """
    if method not in METHODS:
        raise CetMonaiError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    overrides = dict(overrides)
    check_iterations(method, overrides)
    if isinstance(tomogram, (list, tuple)):
        tomogram = [str(t) for t in tomogram]
    elif tomogram is not None:
        tomogram = str(tomogram)
    workflow = make_workflow(METHODS[method], ("train.yaml", *extra_configs), "train", tomogram=tomogram, output_dir=str(output_dir), **overrides)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow


def predict(inputs, checkpoint, output, method: str = "recorrupted", **overrides):
    """Denoise tomogram files with a trained checkpoint through the bundle's ``inference.yaml``.

    Args:
        inputs: one path or a list of paths.
        checkpoint: a checkpoint written by training (``checkpoint_final_iteration=N.pt`` or
            ``model_best.pt``).
        output: an output file (one input) or folder.
        overrides: config ids of ``inference.yaml`` (``versions``, ``passes``, ``overwrite``...).

    Returns the list of written paths.
    """
    if method not in INFERENCE_BUNDLES:
        raise CetMonaiError(f"unknown method {method!r}; choose one of {sorted(INFERENCE_BUNDLES)}")
    inputs = [str(inputs)] if isinstance(inputs, (str, os.PathLike)) else [str(i) for i in inputs]
    workflow = make_workflow(
        INFERENCE_BUNDLES[method], ("inference.yaml",), "infer", inputs=inputs, checkpoint=str(checkpoint), output=str(output), **overrides
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return list(workflow.parser.get_parsed_content("saver").written)


def denoise_with_network(network, image: torch.Tensor, inferer) -> np.ndarray:
    """Run ``inferer`` over a normalised ``(1, Z, Y, X)`` tomogram; returns the ``(Z, Y, X)`` estimate."""
    device = next(network.parameters()).device
    out = inferer(image[None].to(device), network)
    if isinstance(out, Mapping):
        out = out["mean"]
    return out[0, 0].detach().cpu().float().numpy()


def denoise_volume(
    noisy: np.ndarray,
    method: str = "recorrupted",
    output_dir: str | os.PathLike | None = None,
    seed: int = 0,
    even: np.ndarray | None = None,
    odd: np.ndarray | None = None,
    timings: dict | None = None,
    **overrides,
) -> np.ndarray:
    """Denoise an in-memory ``(Z, Y, X)`` volume; returns it on the input's intensity scale.

    ``method`` is ``"recorrupted"``, ``"fourier"``, ``"real"``, or ``"n2n"`` (Noise2Noise between the ``even`` and
    ``odd`` half tomograms, the cryoCARE-style upper bound, with the Fourier bundle's network
    and budget). Training runs through the bundle (``overrides`` as in :func:`train`); with no
    ``output_dir`` a temporary folder is used and removed. A ``timings`` dict receives the
    seconds spent training (``"train_s"``) and denoising (``"infer_s"``).
    """
    import time

    import tempfile

    extra: tuple[str, ...] = ()
    if method == "n2n":
        if even is None or odd is None:
            raise CetMonaiError("method 'n2n' needs the even and odd half tomograms")
        overrides = {"halves": [np.asarray(even, np.float32), np.asarray(odd, np.float32)], **overrides}
        extra, method = ("halves.yaml",), "fourier"
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = str(output_dir or tmp)
        t0 = time.perf_counter()
        wf = train(method, output_dir=out_dir, extra_configs=extra, volume=np.asarray(noisy, np.float32), seed=seed, progress=False, **overrides)
        t1 = time.perf_counter()
        network = wf.parser.get_parsed_content("network")
        source = wf.parser.get_parsed_content("source")
        inferer = wf.parser.get_parsed_content("inferer")
        if source.halves is not None:  # cryoCARE's estimate: the mean of the predictions of both halves
            estimate = np.mean([denoise_with_network(network, h, inferer) for h in source.halves], axis=0)
        else:
            estimate = denoise_with_network(network, source.image, inferer)
        out = source.normalizer.inverse(estimate)
        if timings is not None:
            timings.update(train_s=t1 - t0, infer_s=time.perf_counter() - t1)
        return out
