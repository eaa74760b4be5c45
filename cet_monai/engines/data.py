"""Tomograms as training and inference data: reading, whole-tomogram normalisation, held-out region.

:class:`TomogramSource` prepares the one tomogram a self-supervised model is fitted on (a user's
file, or the embedded simulated default with its clean reference); :class:`TomogramCollection`
prepares several, for one model fitted on all of them (:func:`training_source` chooses).
:class:`LoadTomogramd` and :class:`SaveTomogramd` are the dictionary transforms the inference
bundle uses to read a tomogram (normalised with its own whole-tomogram statistics) and to write
the denoised result with the input's header, on the input's intensity scale.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from cet_monai.errors import OptionError

from .preflight import as_bool
from cet_monai.io import VolumeHeader, check_output_path, check_volume, read_volume, write_volume
from cet_monai.io.utils import SlabwiseVolume
from cet_monai.normalize import TomogramNormalizer

from .fingerprint import volume_stem

__all__ = ["TomogramSource", "TomogramCollection", "training_source", "LoadTomogramd", "SaveTomogramd", "default_output_name", "is_unset",
           "validation_pairing"]

logger = logging.getLogger(__name__)


def is_unset(value) -> bool:
    """A config value that means "not given": YAML null, ``False``, or an empty / ``None`` /
    ``null`` string (Python Fire passes ``--output None`` on a bundle command line as the string)."""
    return value is None or value is False or (isinstance(value, str) and value in ("", "None", "null"))


#: above this many voxels (2**26, 64 M: 256 MiB of float32, the size above which inference runs
#: in Z slabs) the normalised copy of a tomogram lives in a disk-backed temporary file
DISK_COPY_VOXELS = 1 << 26


def needs_disk_copy(shape) -> bool:
    """Whether a tomogram of ``shape`` gets its normalised copy on disk (more than
    :data:`DISK_COPY_VOXELS` voxels)."""
    return int(np.prod([int(s) for s in shape], dtype=np.int64)) > DISK_COPY_VOXELS


def normalised_copy(raw, normalizer: TomogramNormalizer, on_disk: bool | None = None) -> torch.Tensor:
    """``(1, Z, Y, X)`` float32 tensor: ``raw`` (a ``(Z, Y, X)`` array or memory map) normalised
    slab by slab, so a memory-mapped input is never resident whole.

    ``on_disk`` (default: above :data:`DISK_COPY_VOXELS` voxels) puts the copy in an anonymous
    disk-backed temporary file (:func:`~cet_monai.io.utils.disk_array`, in ``$TMPDIR``, 4 bytes
    per voxel) instead of RAM: training patches and inference windows are then read from that map
    and its pages given back after each read (:func:`~cet_monai.io.utils.release_pages` finds
    the map from the tensor), so a tomogram larger than RAM can be fitted and denoised.
    """
    from cet_monai.io.utils import disk_array

    on_disk = needs_disk_copy(np.shape(raw)) if on_disk is None else bool(on_disk)
    out = disk_array(np.shape(raw), np.float32) if on_disk else None
    return torch.from_numpy(normalizer.transform_slabwise(raw, out=out))[None]


class TomogramSource:
    """One tomogram ready for self-supervised training.

    Args:
        tomogram: path of an MRC/NIfTI/TIFF tomogram; ``None`` simulates the embedded default
            (:func:`cet_monai.data.simulate_tomogram` with ``simulation`` options), which also
            gives a clean reference.
        reference: optional clean reference volume (path) of the same shape, e.g. a simulation's
            ``clean.mrc``; validation then reports PSNR/SSIM against it.
        simulation: keyword arguments of :func:`~cet_monai.data.simulate_tomogram`.
        volume: an in-memory ``(Z, Y, X)`` tomogram instead of a file (Python API).
        halves: optional even/odd half tomograms (arrays or paths) of the same shape; training
            items then pair them (Noise2Noise between halves, the cryoCARE-style upper bound).
        voxel_size: angstrom, for ``volume`` (files carry their own).
        validation_fraction: the last part of the Y axis held out from training for validation
            (``0`` disables validation).
        percentiles: (lower, upper) clipping percentiles of the normalisation.
        on_disk: keep the normalised copy (and those of the halves) in a disk-backed temporary
            file instead of RAM (:func:`normalised_copy`); default: above
            :data:`DISK_COPY_VOXELS` voxels.

    Attributes:
        image: ``(1, Z, Y, X)`` float32 tensor, the tomogram normalised with its own statistics
            (a view of a disk-backed map when ``on_disk``).
        reference: ``(1, Z, Y, X)`` float32 tensor or ``None``.
        normalizer: the fitted :class:`~cet_monai.normalize.TomogramNormalizer`.
        header: :class:`~cet_monai.io.VolumeHeader` (voxel size in A, origin).
        validation_start: first Y index of the held-out region.
    """

    def __init__(
        self,
        tomogram: str | os.PathLike | None = None,
        reference: str | os.PathLike | None = None,
        simulation: Mapping | None = None,
        validation_fraction: float = 0.125,
        percentiles: tuple[float, float] = (0.5, 99.5),
        volume: np.ndarray | None = None,
        halves: tuple | None = None,
        voxel_size: float | Sequence[float] | None = None,
        on_disk: bool | None = None,
    ) -> None:
        if not 0.0 <= validation_fraction < 0.5:
            raise ValueError(f"validation_fraction must be in [0, 0.5), got {validation_fraction}")
        self.path = None if is_unset(tomogram) else Path(tomogram)
        self.simulation = None
        clean = None
        if volume is not None:
            raw = np.asarray(volume)
            check_volume(raw, "<volume>")
            self.header = VolumeHeader(voxel_size=voxel_size or 1.0)
        elif self.path is None:
            from cet_monai.data import simulate_tomogram

            sim = simulate_tomogram(**dict(simulation or {}))
            raw, clean = sim.noisy, sim.clean
            self.header = VolumeHeader(voxel_size=sim.voxel_size_zyx)
            self.simulation = sim
        else:
            raw, self.header = read_volume(self.path, mmap=True, validate=True)
        if not is_unset(reference):
            clean = reference if isinstance(reference, np.ndarray) else read_volume(reference, mmap=True, validate=True)[0]
            if clean.shape != raw.shape:
                raise ValueError(f"reference shape {clean.shape} differs from the tomogram's {raw.shape}")
        from .fingerprint import volume_fingerprint

        self._fingerprint = volume_fingerprint(raw, self.header.voxel_size, self.path)
        if self.simulation is not None:  # the default tomogram is made, not read: its options identify it
            self._fingerprint["simulation"] = {k: repr(v) for k, v in sorted(dict(simulation or {}).items())}
        self.normalizer = TomogramNormalizer(*percentiles).fit(raw)
        self.on_disk = needs_disk_copy(raw.shape) if on_disk is None else bool(on_disk)
        self.image = self._normalised(raw)
        self.reference = None if clean is None else torch.as_tensor(np.asarray(clean, dtype=np.float32))[None]
        # even/odd half tomograms (Noise2Noise between halves), normalised like the full tomogram
        self.halves = None
        if halves is not None:
            arrays = [h if isinstance(h, np.ndarray) else read_volume(h, mmap=True, validate=True)[0] for h in halves]
            if len(arrays) != 2 or any(a.shape != raw.shape for a in arrays):
                raise ValueError("halves must be two volumes of the tomogram's shape")
            self.halves = [self._normalised(a) for a in arrays]
        ny = self.image.shape[2]
        n_val = int(round(ny * validation_fraction))
        self.validation_start = ny - n_val

    def _normalised(self, raw) -> torch.Tensor:
        return normalised_copy(raw, self.normalizer, self.on_disk)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(Z, Y, X) voxels."""
        return tuple(self.image.shape[1:])

    def fingerprint(self) -> dict:
        """What identifies this tomogram in a checkpoint (:func:`~cet_monai.engines.fingerprint.volume_fingerprint`)."""
        return dict(self._fingerprint)

    def noise_reference(self) -> np.ndarray | None:
        """The true noise of the normalised tomogram, ``(Z, Y, X)``, when a clean reference is known
        (normalised image minus the normalised reference); else ``None``."""
        if self.reference is None:
            return None
        return self.image[0].numpy() - self.normalizer.transform(self.reference[0].numpy()).astype(np.float32)

    @property
    def has_reference(self) -> bool:
        return self.reference is not None

    @property
    def dataset_dir(self) -> str:
        return str(self.path.parent) if self.path is not None else ""

    def training_region(self) -> torch.Tensor:
        """``(1, Z, Y_train, X)`` view of the normalised tomogram without the held-out region."""
        return self.image[:, :, : self.validation_start]

    def training_items(self, count: int) -> list[dict]:
        """``count`` references to the training region (a MONAI ``Dataset``'s ``data``): random
        patch transforms make each item different, and nothing is copied."""
        y = self.validation_start
        if self.halves is not None:
            item = {"image": self.halves[0][:, :, :y], "label": self.halves[1][:, :, :y]}
        else:
            item = {"image": self.training_region()}
        return [item] * int(count)

    def central_crop(self, size, depth: int = 1) -> torch.Tensor:
        """``(1, z, y, x)`` crop around the tomogram's centre: ``size`` (Z, Y, X) voxels, ``depth``
        times larger in Y and X (never larger than the tomogram), e.g. for training previews."""
        out = []
        for axis, (s, n) in enumerate(zip(size, self.shape)):
            want = min(n, int(s) * (depth if axis else 1))
            start = (n - want) // 2
            out.append(slice(start, start + want))
        return self.image[(slice(None), *out)].clone()

    #: most voxels validated: a larger held-out slab is cropped to its centre in Z and X (its
    #: pairs cost several copies of it, and a few million voxels score a model as well)
    max_validation_voxels = 1 << 23

    def _validation_window(self) -> tuple:
        """Index of the held-out region ``(C, Z, Y_held, X)``, centrally cropped in Z and X to at
        most :attr:`max_validation_voxels` voxels."""
        _, nz, ny, nx = self.image.shape
        held_y = ny - self.validation_start
        cut = [slice(None), slice(None), slice(self.validation_start, None), slice(None)]
        excess = nz * held_y * nx / self.max_validation_voxels
        if excess > 1:
            factor = excess ** -0.5
            for axis, n in ((1, nz), (3, nx)):
                keep = min(n, max(64, int(n * factor)))
                start = (n - keep) // 2
                cut[axis] = slice(start, start + keep)
        return tuple(cut)

    def held_out_region(self) -> torch.Tensor | None:
        """``(1, Z, Y_held, X)`` view of the held-out region (centrally cropped in Z and X to at
        most :attr:`max_validation_voxels` voxels); ``None`` when nothing is held out."""
        if self.validation_start >= self.image.shape[2]:
            return None
        return self.image[self._validation_window()]

    def validation_items(self, pairing=None) -> list[dict]:
        """The held-out region as evaluator data.

        With a reference: ``[{"image": noisy region, "label": clean region}]`` (score: PSNR).
        Without: the pairs that ``pairing`` (the training's pairing transform, deep-copied and
        seeded so every validation sees the same pairs: :func:`validation_pairing`) makes of the
        region (score: the self-supervised loss). Empty when there is no held-out region. A
        held-out region above :attr:`max_validation_voxels` is cropped to its centre in Z and X.
        """
        region = self.held_out_region()
        if region is None:
            return []
        held = self._validation_window()
        if self.has_reference:
            return [{"image": region, "label": self.reference[held]}]
        if self.halves is not None:
            return [{"image": self.halves[0][held], "label": self.halves[1][held]}]
        if pairing is None:
            raise ValueError("without a reference, validation needs the pairing transform")
        return paired_items(validation_pairing(pairing), {"image": region})

    def state_dict(self) -> dict:
        """What a checkpoint needs to denoise this tomogram again: the normaliser and the header."""
        return {"normalizer": self.normalizer.state_dict(), "voxel_size": list(self.header.voxel_size)}

    def load_state_dict(self, state: Mapping) -> None:
        """Checkpoints are written, not restored, through this object; restoring is a no-op check."""
        if tuple(state.get("voxel_size", self.header.voxel_size)) != tuple(self.header.voxel_size):
            logger.warning("checkpoint was trained on a tomogram with voxel size %s", state.get("voxel_size"))


def validation_pairing(pairing):
    """The training's pairing transform as validation uses it: a deep copy (training's random
    stream untouched) seeded with a fixed seed, so every validation sees the same pairs. A
    whole-tomogram pool (made of the training region only) becomes the same family of masks
    drawn on the region itself (Bernoulli pool -> per-patch masks, split pool -> splits)."""
    pairing = copy.deepcopy(pairing)
    pairing.set_random_state(seed=12345)
    pairer = getattr(pairing, "pairer", pairing)
    if getattr(pairer, "mode", None) == "pool":
        pairer.mode = "split" if getattr(pairer.pool, "kind", "bernoulli") == "split" else "patch"
        pairer.pool = None
    return pairing


def paired_items(pairing, item: dict) -> list[dict]:
    """The list of pair dicts ``pairing`` makes of ``item`` (one pair or several)."""
    items = pairing(item)
    return [dict(i) for i in (items if isinstance(items, list) else [items])]


class TomogramCollection:
    """Several tomograms for fitting ONE model (``cet-monai denoise --shared-model``).

    Each tomogram is a :class:`TomogramSource` of its own: read memory-mapped, normalised with its
    OWN whole-tomogram statistics, the last part of its Y axis held out for validation. The
    collection offers what the shared training config uses of a source (``training_items``,
    ``validation_items``, ``central_crop``, ``header``, ``has_reference``, ``fingerprint``,
    ``noise_reference``, ``dataset_dir``); every item it makes names its tomogram under
    :data:`~cet_monai.transforms.patches.TOMOGRAM_INDEX_KEY` (its position in :attr:`sources`),
    which the patching uses to keep one tiling per tomogram and a method may use for what it
    fitted per tomogram (the default's noise spectra, :class:`~cet_monai.transforms.SelectNoiseSpectrumd`).

    Data parallel (``multi_gpu_train.yaml``): process ``rank`` of ``world_size`` reads and holds
    only its share of the tomograms (:func:`~cet_monai.engines.batch.share`: tomograms rank,
    rank + W, ...), so its memory grows with its share, 4 bytes per voxel of each; the
    fingerprint covers them all, so every process checks a resumed run against the same set.

    Args:
        tomograms: the paths of all the run's tomograms (two or more).
        rank, world_size: this process and the number of processes (at most one per tomogram).
        validation_fraction, percentiles: as :class:`TomogramSource`, for each tomogram.

    Attributes:
        paths: all the tomograms, in order.
        sources: this process's :class:`TomogramSource` objects, in order. The held-out regions
            share one validation budget (:attr:`TomogramSource.max_validation_voxels` in all), so
            validation costs the same whatever the number of tomograms.
    """

    has_reference = False

    def __init__(self, tomograms: Sequence[str | os.PathLike], rank: int = 0, world_size: int = 1, validation_fraction: float = 0.125,
                 percentiles: tuple[float, float] = (0.5, 99.5)) -> None:
        from .batch import share
        from .fingerprint import file_fingerprint

        self.paths = [Path(p) for p in input_list(tomograms)]
        rank, world_size = int(rank), int(world_size)
        if len(self.paths) < 2:
            raise OptionError(f"fitting one model on several tomograms needs two or more, got {len(self.paths)}")
        if world_size > len(self.paths):
            raise OptionError(f"{len(self.paths)} tomograms for {world_size} processes: one model fitted on several tomograms "
                              f"needs at least one tomogram per process (run at most {len(self.paths)})")
        mine = share(list(range(len(self.paths))), rank, world_size)
        self.sources = [TomogramSource(self.paths[i], validation_fraction=validation_fraction, percentiles=percentiles) for i in mine]
        for source in self.sources:
            source.max_validation_voxels = TomogramSource.max_validation_voxels // len(self.sources)
        names = [p.name for p in self.paths]
        labels = names if len(set(names)) == len(names) else [str(p) for p in self.paths]
        self._fingerprint = {"count": len(self.paths), **{label: file_fingerprint(p) for label, p in zip(labels, self.paths)}}
        logger.info("process %d of %d holds %d of the %d tomograms: %s", rank, world_size, len(self.sources), len(self.paths),
                    ", ".join(self.names))

    @property
    def names(self) -> list[str]:
        """File names of this process's tomograms, in the order of :attr:`sources`."""
        return [s.path.name for s in self.sources]

    @property
    def header(self):
        """The first tomogram's :class:`~cet_monai.io.VolumeHeader` (for the previews of :meth:`central_crop`)."""
        return self.sources[0].header

    @property
    def dataset_dir(self) -> str:
        return str(self.paths[0].parent)

    def fingerprint(self) -> dict:
        """What identifies the run's tomograms in a checkpoint: their ``count`` and each one's
        :func:`~cet_monai.engines.fingerprint.file_fingerprint`, by file name (all of them, on
        every process)."""
        return dict(self._fingerprint)

    def noise_reference(self) -> None:
        """No clean references for collections."""
        return None

    def training_items(self, count: int) -> list[dict]:
        """``count`` items (at least one per tomogram) taking this process's tomograms in turn:
        item ``k`` is a reference to the training region of tomogram ``k mod n`` with its index
        under ``tomogram_index``. An epoch of ``epoch_length >= n`` iterations sees every
        tomogram; with fewer, Ignite carries its data iterator over to the next epoch, so the
        epochs take the tomograms in turn."""
        from cet_monai.transforms.patches import TOMOGRAM_INDEX_KEY

        n = len(self.sources)
        return [{"image": self.sources[k % n].training_region(), TOMOGRAM_INDEX_KEY: k % n} for k in range(max(int(count), n))]

    def central_crop(self, size, depth: int = 1) -> torch.Tensor:
        """:meth:`TomogramSource.central_crop` of this process's first tomogram (training previews)."""
        return self.sources[0].central_crop(size, depth)

    def validation_items(self, pairing=None) -> list[dict]:
        """The pairs ``pairing`` makes of each tomogram's held-out region (one seeded copy of the
        pairing for all: :func:`validation_pairing`), each item with its ``tomogram_index``.
        The evaluator scores them together (the self-supervised loss; with several processes
        MONAI's metrics gather every process's pairs, so all agree on the score)."""
        from cet_monai.transforms.patches import TOMOGRAM_INDEX_KEY

        regions = [(i, s.held_out_region()) for i, s in enumerate(self.sources)]
        regions = [(i, r) for i, r in regions if r is not None]
        if not regions:
            return []
        if pairing is None:
            raise ValueError("validation of several tomograms needs the pairing transform")
        pairing = validation_pairing(pairing)
        return [item for i, region in regions for item in paired_items(pairing, {"image": region, TOMOGRAM_INDEX_KEY: i})]


def training_source(tomogram=None, reference=None, simulation: Mapping | None = None, volume: np.ndarray | None = None,
                    halves: tuple | None = None, voxel_size=None, validation_fraction: float = 0.125, rank: int = 0, world_size: int = 1):
    """What a denoising run is fitted on (the shared training config's ``source``): a
    :class:`TomogramSource` for one tomogram (a path, an in-memory ``volume``, or the simulated
    default when there is neither), a :class:`TomogramCollection` of this process's share for a
    list of several paths (``rank`` of ``world_size``; ``reference``, ``volume`` and ``halves``
    are single-tomogram options and refused with it)."""
    paths = input_list(tomogram) if isinstance(tomogram, (list, tuple)) else None
    if paths is not None and len(paths) > 1:
        given = [name for name, value in (("reference", reference), ("volume", volume), ("halves", halves)) if not is_unset(value)]
        if given:
            raise OptionError(f"several tomograms: {', '.join(given)} belong to one tomogram; fit one model on several without them")
        return TomogramCollection(paths, rank=rank, world_size=world_size, validation_fraction=validation_fraction)
    if paths is not None:
        tomogram = paths[0] if paths else None
    return TomogramSource(tomogram, reference=reference, simulation=simulation, validation_fraction=validation_fraction, volume=volume,
                          halves=halves, voxel_size=voxel_size)


def _volume_of(prediction: torch.Tensor, b: int) -> np.ndarray:
    """Tomogram ``b`` of a ``(B, 1, Z, Y, X)`` prediction as a float32 numpy array: the
    disk-backed memmap of a slabbed inference (:class:`~cet_monai.inferers.streaming.SlabInferer`,
    whose pages can then be released while it is written), else a view or copy of the tensor."""
    disk = getattr(prediction, "disk_array", None)
    return disk if disk is not None else prediction[b, 0].detach().cpu().float().numpy()


def default_output_name(path: str | os.PathLike, suffix: str = "_denoised") -> str:
    """``tomo.mrc`` -> ``tomo_denoised.mrc`` (compound suffixes such as ``.nii.gz`` kept)."""
    p = Path(path)
    name = p.name
    for ext in (".nii.gz",):
        if name.endswith(ext):
            return str(p.with_name(name[: -len(ext)] + suffix + ext))
    return str(p.with_name(p.stem + suffix + p.suffix))


def input_list(value) -> list[str]:
    """A bundle's tomogram option as a list of paths: ``None`` or ``""`` -> ``[]``, one path -> ``[path]``."""
    if value is None or value == "":
        return []
    if isinstance(value, (str, os.PathLike)):
        return [str(value)]
    return [str(v) for v in value]


def default_output(inputs, folder: str = "denoised") -> str:
    """Where inference writes by default: ``X_denoised.mrc`` beside one input, else the folder ``folder``."""
    inputs = input_list(inputs)
    return default_output_name(inputs[0]) if len(inputs) == 1 else folder


def dataset_dir_of(inputs, default: str = ".") -> str:
    """The folder of the first input (a bundle's ``dataset_dir``), ``default`` without inputs."""
    inputs = input_list(inputs)
    return os.path.dirname(os.path.abspath(inputs[0])) if inputs else default


class LoadTomogramd(MapTransform):
    """Read tomograms and normalise each with its own whole-tomogram statistics.

    ``d[key]`` is a path; it becomes a ``(1, Z, Y, X)`` float32 :class:`~monai.data.MetaTensor`
    whose ``meta`` holds ``filename_or_obj``, ``voxel_size`` (Z, Y, X, A), ``header`` (the
    :class:`~cet_monai.io.VolumeHeader`) and ``normalizer`` (its state dict), which
    :class:`SaveTomogramd` uses to write the result on the input's scale with its header.
    The file is memory-mapped and validated; the statistics come from a subsample.
    """

    def __init__(self, keys: KeysCollection, percentiles: tuple[float, float] = (0.5, 99.5), allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.percentiles = percentiles

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path = str(d[key])
            raw, header = read_volume(path, mmap=True, validate=True)
            normalizer = TomogramNormalizer(*self.percentiles).fit(raw)
            image = normalised_copy(raw, normalizer)
            meta = {
                "filename_or_obj": path,
                "voxel_size": list(header.voxel_size),
                "header": header,
                "normalizer": normalizer.state_dict(),
            }
            d[key] = MetaTensor(image, meta=meta)
        return d


class SaveTomogramd(MapTransform):
    """Write denoised tomograms (and optional uncertainty maps) with their input's header.

    Works on a batch (``decollate=False`` in the evaluator): ``d[key]`` is ``(B, 1, Z, Y, X)`` or
    the ``{"mean", "std"}`` dict of an inferer with ``return_std``; the input's metadata is read
    from ``d[meta_source_key].meta``.

    Args:
        keys: prediction key(s), normally ``"pred"``.
        output: an output file (one input) or a folder (several inputs: ``<name>_denoised.mrc``
            in it). Checked before the first write; existing files are kept unless ``overwrite``.
        overwrite: replace existing outputs (never silently: the input itself needs it too).
        preview: also write ``<output stem>.png``, central orthogonal slices raw vs denoised.
        dtype: ``"float32"`` (default) or ``"float16"``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output: str,
        meta_source_key: str = "image",
        overwrite: bool = False,
        preview: bool = True,
        dtype: str = "float32",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output = output
        self.meta_source_key = meta_source_key
        self.overwrite = as_bool(overwrite, "overwrite")
        self.preview = preview
        self.dtype = dtype
        self.written: list[Path] = []

    def output_path(self, input_path: str) -> Path:
        out = Path(self.output)
        if out.suffix and not out.is_dir():
            return out
        return out / Path(default_output_name(input_path)).name

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        from cet_monai.visualize import save_orthoslices

        d = dict(data)
        source = d[self.meta_source_key]
        metas = source.meta if isinstance(source, MetaTensor) else {}
        for key in self.key_iterator(d):
            pred = d[key]
            mean, std = (pred["mean"], pred["std"]) if isinstance(pred, dict) else (pred, None)
            for b in range(mean.shape[0]):
                meta = {k: (v[b] if isinstance(v, (list, tuple)) and len(v) == mean.shape[0] and k != "voxel_size" else v) for k, v in metas.items()}
                input_path = str(meta["filename_or_obj"])
                header = meta["header"]
                normalizer = TomogramNormalizer.from_state_dict(meta["normalizer"])
                out_path = self.output_path(input_path)
                # written slab by slab, back on the input's scale (a slabbed result stays on disk)
                volume = SlabwiseVolume(_volume_of(mean, b), normalizer.inverse)
                write_volume(out_path, volume, header=header, overwrite=self.overwrite, dtype=self.dtype, inputs=[input_path])
                self.written.append(out_path)
                if std is not None:
                    std_path = out_path.with_name(Path(default_output_name(out_path, "_std")).name)
                    scale = float(normalizer.std)
                    write_volume(std_path, SlabwiseVolume(_volume_of(std, b), lambda s: s * scale), header=header, overwrite=self.overwrite, dtype=self.dtype, inputs=[input_path])
                if self.preview:
                    raw = source[b, 0] if source.dim() == 5 else source[0]
                    png = Path(volume_stem(out_path) + ".png")
                    # both read slab by slab: a YZ slice touches every page of a (disk-backed) volume
                    raw = SlabwiseVolume(raw.detach().cpu().numpy())
                    save_orthoslices(png, {"raw": raw, "denoised": volume}, voxel_size=header.voxel_size)
                logger.info("wrote %s", out_path)
        return d

    def check(self, inputs, only=None) -> None:
        """Refuse, before any work, outputs that exist or would replace an input (of the inputs
        ``only``, default all: a batch leaves out the complete outputs it skips)."""
        inputs = [str(i) for i in inputs]
        if len(inputs) > 1 and Path(self.output).suffix and not Path(self.output).is_dir():
            raise OptionError(f"{self.output}: {len(inputs)} inputs need an output folder (-o FOLDER), not a file name")
        for i in inputs if only is None else [str(i) for i in only]:
            check_output_path(self.output_path(i), inputs=inputs, overwrite=self.overwrite)
