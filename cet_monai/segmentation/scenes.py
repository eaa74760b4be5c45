"""Named simulation settings of the segmentation experiment: what the tomograms look like.

A setting is the imaging and the specimen (dose, CTF, crowding, membrane thickness, membrane
geometry) of every simulated tomogram of one experiment, passed to
:func:`cet_monai.data.simulate_tomogram`. The experiment (:mod:`.experiment`) adds the shape,
voxel size, seeds and simulation mode.

``standard`` is the original setting (in the earlier, larger grid of 48^3 patches from four
training tomograms, its raw Dice was 0.8: too close to its ceiling to show what denoising adds). The hard settings combine what makes real segmentation hard
(raw test Dice about 0.4-0.55 with 2-32 training patches, measured in ``docs/segmentation.md``):

* low dose (SNR 0.02), a CTF with 4-5 um underfocus at 300 kV, not corrected (first zero at 2.8 /
  3.2 nm with 10 A voxels: contrast inverted between there and Nyquist),
* crowded cytoplasm: three times the default density of macromolecular complexes (72 asked for per
  64x128x128 voxels of 10 A; the simulator places them without overlapping each other or a
  membrane and skips those that find no room: 50-62 were placed in the test tomograms checked),
* thin bilayers labelled as the bilayer only (leaflets 30 A apart, 12 A wide: a label of 4.4 nm),
* membranes in every orientation (vesicles, a curved sheet): face-on parts are the ones the
  missing wedge erases,
* ``real_vesicle``: the geometry of a real vesicle segmentation
  (``../shared/data/real/vesicle_membrane_labels.mrc``). Its header's voxel size (1 A) is a
  placeholder; this setting assumes **7.5 A per label voxel**, which makes its membrane label
  (about 6 voxels) 4.5 nm thick and the vesicle about 70 nm across.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cet_monai.errors import CetMonaiError

__all__ = ["SimulationSetting", "SIMULATION_SETTINGS", "simulation_setting", "REAL_VESICLE_LABELS"]

#: the real vesicle label map beside the checkout (``../shared``), if present
REAL_VESICLE_LABELS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real" / "vesicle_membrane_labels.mrc"

#: a bilayer of two 12 A leaflets 30 A apart: its label (the bilayer) is 4.4 nm thick
THIN_BILAYER = {"leaflet_separation": 30.0, "leaflet_fwhm": 12.0}


@dataclass(frozen=True)
class SimulationSetting:
    """The imaging and specimen of one experiment's tomograms.

    Args:
        name: the key in :data:`SIMULATION_SETTINGS`.
        description: one line for the tables.
        snr: ``var(clean) / var(noise)`` of each tomogram.
        ctf: ``None`` or a dict of :class:`cet_monai.data.tomography.CTFParams` fields.
        complex_density: macromolecular complexes relative to the simulator's default
            (about 24 per 64x128x128 voxels of 10 A).
        phantom_options: further :func:`cet_monai.data.phantom.make_phantom` arguments.
        membrane_labels: a real label map whose membrane geometry replaces the random one.
        labels_voxel_size: the voxel size (A) assumed for ``membrane_labels``.
        n_vesicles: random vesicles added to a real geometry (``None``: the simulator's default).
    """

    name: str
    description: str
    snr: float
    ctf: Mapping | None = None
    complex_density: float = 1.0
    phantom_options: Mapping = field(default_factory=dict)
    membrane_labels: str | None = None
    labels_voxel_size: float | None = None
    n_vesicles: int | None = None

    def simulate_kwargs(self, shape, voxel_size: float) -> dict:
        """Keyword arguments of :func:`cet_monai.data.simulate_tomogram` (without seed and mode)."""
        kwargs: dict = {"shape": tuple(shape), "voxel_size": float(voxel_size), "snr": float(self.snr)}
        if self.ctf is not None:
            kwargs["ctf"] = dict(self.ctf)
        if self.complex_density != 1.0:
            nm3 = shape[0] * shape[1] * shape[2] * (voxel_size / 10.0) ** 3
            kwargs["n_complexes"] = round(24 * self.complex_density * nm3 / (64 * 128 * 128))
        if self.phantom_options:
            kwargs["phantom_options"] = dict(self.phantom_options)
        if self.membrane_labels is not None:
            path = Path(self.membrane_labels)
            if not path.is_file():
                raise CetMonaiError(f"simulation setting {self.name!r} needs the label map {path}, which is missing "
                                    "(it is in ../shared/data/real beside the checkout)")
            kwargs["membrane_labels"] = str(path)
            kwargs["labels_voxel_size"] = self.labels_voxel_size
        if self.n_vesicles is not None:
            kwargs["n_vesicles"] = int(self.n_vesicles)
        return kwargs

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SIMULATION_SETTINGS: dict[str, SimulationSetting] = {
    s.name: s for s in (
        SimulationSetting("standard", "SNR 0.05, no CTF, default crowding, 6 nm bilayer labels", snr=0.05),
        SimulationSetting(
            "crowded_low_dose", "SNR 0.02, CTF 4 um underfocus, 3x crowding, 4.4 nm bilayer labels",
            snr=0.02, ctf={"defocus_um": 4.0}, complex_density=3.0, phantom_options=THIN_BILAYER),
        SimulationSetting(
            "real_vesicle", "real vesicle geometry (7.5 A/voxel assumed), SNR 0.02, CTF 5 um, 3x crowding, "
            "4.4 nm bilayer labels",
            snr=0.02, ctf={"defocus_um": 5.0}, complex_density=3.0, phantom_options=THIN_BILAYER,
            membrane_labels=str(REAL_VESICLE_LABELS), labels_voxel_size=7.5),
        # for tests: high SNR, thick labels, segmentation learns it in a few dozen iterations
        SimulationSetting("easy", "SNR 1, no CTF, default crowding, 6 nm bilayer labels (tests)", snr=1.0),
    )
}


def simulation_setting(name: str) -> SimulationSetting:
    """The setting called ``name`` (a clear error naming the choices otherwise)."""
    if name not in SIMULATION_SETTINGS:
        raise CetMonaiError(f"unknown simulation setting {name!r}; choose one of {sorted(SIMULATION_SETTINGS)}")
    return SIMULATION_SETTINGS[name]
