"""Settings of the membrane-segmentation experiment (:mod:`.experiment`): the grid (input kinds,
seeds, training-set sizes, protocols), its sizes and the rules that decide whether an earlier
run's folder can be resumed with new settings."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


from cet_monai.errors import CetMonaiError

from .inputs import ALL_KINDS, DENOISER_KINDS, KIND_LABELS
from .model import ModelSpec
from .scenes import SimulationSetting, simulation_setting


__all__ = ["CONCLUSIVE_MARGIN", "DENOISER_SETTINGS", "ExperimentSettings", "GRID_AXES", "PROTOCOLS", "PROTOCOL_LABELS", "SIZES",
           "experiment_settings", "incompatible_settings"]

#: the two questions: ``denoised`` trains and tests on each input kind; ``raw_trained`` applies the
#: network trained on raw patches (same seed and N) to each kind's test tomogram
PROTOCOLS = ("denoised", "raw_trained")


PROTOCOL_LABELS = {"denoised": "trained and tested on each input",
                   "raw_trained": "trained on raw, applied to each input"}


#: margin by which the raw input's Dice must beat an all-background prediction
CONCLUSIVE_MARGIN = 0.1


@dataclass
class ExperimentSettings:
    """Everything that defines one run of the experiment (written to ``experiment.json``).

    Sizes: :data:`SIZES` (``"reduced"``: 2 CPU cores, ``"full"``: a GPU, ``"tiny"``: tests).
    ``setting`` names the simulated imaging and specimen
    (:data:`~cet_monai.segmentation.scenes.SIMULATION_SETTINGS`); ``snr``, when given, overrides
    the setting's dose.
    """

    size: str = "reduced"
    setting: str = "standard"
    shape: Sequence[int] = (64, 128, 128)        # simulated tomograms (Z, Y, X), voxels
    voxel_size: float = 10.0                     # angstrom
    snr: float | None = None                     # None: the setting's
    simulation_mode: str = "tilt_series"
    n_train_tomograms: int = 1
    patch_size: int = 32                         # training patch edge = inference window
    n_patches: Sequence[int] = (2, 8, 32)
    seeds: Sequence[int] = (0, 1, 2)
    kinds: Sequence[str] = ALL_KINDS
    protocols: Sequence[str] = PROTOCOLS
    iterations: int = 200
    batch_size: int = 4
    learning_rate: float = 2e-3
    weight_decay: float = 1e-5
    features: Sequence[int] = (8, 16, 32, 64)     # DynUNet channels per level
    architecture: str = "dynunet"
    min_membrane_fraction: float = 0.02
    patch_stride: int = 8                        # grid of candidate patch corners
    surface_tolerance: float = 2.0               # voxels
    overlap: float = 0.5                         # sliding-window overlap at test time
    test_block: int = 32                         # edge (voxels) of the test blocks scored one by one
    gaussian_sigmas: Sequence[float] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0)
    # passed to denoise_volume; a key naming a denoiser kind ("s2s") holds overrides for that kind only
    denoise_overrides: Mapping = field(default_factory=dict)

    def __post_init__(self):
        self.shape = tuple(int(s) for s in self.shape)
        self.n_patches = tuple(sorted(int(n) for n in self.n_patches))
        self.seeds = tuple(int(s) for s in self.seeds)
        self.kinds = tuple(str(k) for k in self.kinds)
        self.protocols = tuple(str(p) for p in self.protocols)
        self.features = tuple(int(f) for f in self.features)
        self.gaussian_sigmas = tuple(float(s) for s in self.gaussian_sigmas)
        self.denoise_overrides = dict(self.denoise_overrides)
        self.snr = None if self.snr is None else float(self.snr)
        simulation_setting(self.setting)  # a clear error for an unknown name
        unknown = [k for k in self.kinds if k not in KIND_LABELS]
        if unknown:
            raise CetMonaiError(f"unknown input kind(s) {unknown}; choose from {list(KIND_LABELS)}")
        bad = [p for p in self.protocols if p not in PROTOCOLS]
        if bad or not self.protocols:
            raise CetMonaiError(f"unknown protocol(s) {bad}; choose one or both of {list(PROTOCOLS)}")
        if not self.kinds or not self.n_patches or not self.seeds:
            raise CetMonaiError("the experiment needs at least one input kind, one N and one seed")
        if min(self.n_patches) < 1:
            raise CetMonaiError(f"numbers of training patches must be >= 1, got {self.n_patches}")
        if any(self.patch_size > s for s in self.shape):
            raise CetMonaiError(f"patch_size {self.patch_size} does not fit the tomograms {self.shape}")
        if not 1 <= self.test_block <= min(self.shape):
            raise CetMonaiError(f"test_block {self.test_block} does not fit the tomograms {self.shape}")
        self.model_spec()  # validates patch size against the network

    def simulation(self) -> SimulationSetting:
        """The simulation setting, with ``snr`` applied when it is set."""
        base = simulation_setting(self.setting)
        return base if self.snr is None else dataclasses.replace(base, snr=self.snr)

    def denoiser_overrides(self, kind: str) -> dict:
        """The ``denoise_volume`` overrides of denoiser kind ``kind``: the shared ones, then the kind's own."""
        shared = {k: v for k, v in self.denoise_overrides.items() if k not in DENOISER_KINDS}
        return {**shared, **dict(self.denoise_overrides.get(kind) or {})}

    def model_spec(self) -> ModelSpec:
        return ModelSpec(architecture=self.architecture, features=self.features, patch_size=(self.patch_size,) * 3)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    def simulation_seeds(self, seed: int) -> tuple[list[int], int]:
        """(training tomogram seeds, test tomogram seed) of experiment seed ``seed``."""
        return [1000 * seed + 1 + i for i in range(self.n_train_tomograms)], 1000 * seed + 999

    def with_overrides(self, **changes) -> ExperimentSettings:
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes)


#: the CPU budget of the three original denoisers: the Fourier bundle's (100 iterations of
#: [8, 16, 32, 64]) for all three, so that real-space masks (bundle default 600 iterations of
#: [16, 32, 64, 64]: ~10 min per tomogram here) fit the grid; the recorrupted default runs as shipped
_CPU_DENOISERS = {"iterations": 100, "network_def#features": [8, 16, 32, 64]}


#: ``reduced``: minutes per training on 2 CPU cores; ``full``: the GPU version; ``tiny``: tests
SIZES: dict[str, ExperimentSettings] = {
    "reduced": ExperimentSettings(size="reduced", denoise_overrides={
        "s2s": {**_CPU_DENOISERS, "versions": 4, "passes": 1},
        "f2f": {**_CPU_DENOISERS, "sampling": "pool"},
        "n2n": dict(_CPU_DENOISERS),
    }),
    "full": ExperimentSettings(
        size="full", shape=(128, 256, 256), n_train_tomograms=4, patch_size=64, n_patches=(2, 4, 8, 16, 32),
        seeds=(0, 1, 2, 3, 4), iterations=3000, batch_size=8, features=(16, 32, 64, 128, 256), learning_rate=1e-3,
        test_block=64, denoise_overrides={"f2f": {"sampling": "pool"}},
    ),
    "tiny": ExperimentSettings(
        size="tiny", shape=(32, 32, 32), simulation_mode="fast", n_train_tomograms=1, patch_size=32,
        n_patches=(1,), seeds=(0,), kinds=("raw",), iterations=2, batch_size=1, features=(4, 8, 16),
        min_membrane_fraction=0.0, test_block=16, gaussian_sigmas=(1.0,), denoise_overrides={"iterations": 2},
    ),
}


def experiment_settings(size: str = "reduced", kinds=None, n_patches=None, seeds=None, iterations=None,
                        denoise_iterations=None, snr=None, denoise_set: Mapping | None = None, setting=None,
                        protocols=None) -> ExperimentSettings:
    """The settings of a named size (:data:`SIZES`) with the command-line overrides applied
    (``None`` keeps the size's value). ``denoise_set`` adds denoiser bundle overrides
    (``{"network_def#dropout": 0.3}``) to the size's ``denoise_overrides``; it and
    ``denoise_iterations`` apply to every denoiser kind, replacing a kind's own value of that key."""
    if size not in SIZES:
        raise CetMonaiError(f"unknown experiment size {size!r}; choose one of {sorted(SIZES)}")
    settings = SIZES[size]
    overrides = {"kinds": kinds, "n_patches": n_patches, "seeds": seeds, "iterations": iterations, "snr": snr,
                 "setting": setting, "protocols": protocols}
    given = dict(denoise_set or {})
    if denoise_iterations is not None:
        given["iterations"] = int(denoise_iterations)
    denoise = {k: ({kk: vv for kk, vv in v.items() if kk not in given} if k in DENOISER_KINDS else v)
               for k, v in settings.denoise_overrides.items()}
    denoise.update(given)
    if denoise != settings.denoise_overrides:
        overrides["denoise_overrides"] = denoise
    return settings.with_overrides(**overrides)


#: settings that only extend the grid: a rerun with more (or fewer) of them resumes the same experiment
GRID_AXES = ("kinds", "seeds", "n_patches", "protocols")


#: settings that only change the denoised input kinds
DENOISER_SETTINGS = ("denoise_overrides",)


def _per_kind_overrides(sources: Mapping[str, ExperimentSettings]) -> dict:
    """``denoise_overrides`` that give each denoiser kind the overrides it has in ``sources[kind]``
    (shared keys where all kinds agree, the rest per kind)."""
    each = {kind: src.denoiser_overrides(kind) for kind, src in sources.items()}
    shared = {k: v for k, v in next(iter(each.values())).items() if all(k in e and e[k] == v for e in each.values())}
    out = dict(shared)
    for kind, e in each.items():
        own = {k: v for k, v in e.items() if k not in shared}
        if own:
            out[kind] = own
    return out


def _union(*grids: Sequence) -> tuple:
    return tuple(dict.fromkeys(x for grid in grids for x in grid))


def _with_denoiser_settings_of(settings: ExperimentSettings, old: Mapping) -> ExperimentSettings:
    """``settings`` with the denoiser settings of the stored settings ``old`` (a dict)."""
    return ExperimentSettings(**{**settings.to_dict(), **{k: old[k] for k in DENOISER_SETTINGS if k in old}})


def incompatible_settings(old: Mapping, settings: ExperimentSettings, rows: Sequence[Mapping]) -> str:
    """Why a folder whose ``experiment.json`` holds ``old`` settings cannot be resumed with
    ``settings`` (empty string when it can).

    The grid (:data:`GRID_AXES`: kinds, seeds, N) may grow or shrink: every result row names its
    own seed, kind and N. A denoiser kind's settings may change only while that kind has no result
    in ``rows`` (the rows of ``runs.csv`` and ``inputs.csv``), since those rows do not record them.
    """
    new = settings.to_dict()
    differ = [k for k in sorted(set(old) | set(new))
              if k not in GRID_AXES and k not in DENOISER_SETTINGS and old.get(k) != new.get(k)]
    problems = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differ]
    before = _with_denoiser_settings_of(settings, old)
    done = {r.get("kind") for r in rows}
    for kind in DENOISER_KINDS:
        if kind in done and kind in settings.kinds and before.denoiser_overrides(kind) != settings.denoiser_overrides(kind):
            problems.append(f"{kind} denoiser: {before.denoiser_overrides(kind)!r} -> {settings.denoiser_overrides(kind)!r}")
    return ", ".join(problems)

