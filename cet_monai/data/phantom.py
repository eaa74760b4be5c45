"""Cryo-ET-like specimen phantoms: the density before imaging, with a membrane label map.

Density is relative to vitreous ice, positive = more mass. Lengths are in angstrom unless a
name says ``_vox``. What is in a phantom (all randomised from a ``numpy.random.Generator``):

* lipid bilayers: two dense leaflets (Gaussian profiles, FWHM ``leaflet_fwhm``) whose peaks
  sit ``leaflet_separation`` apart either side of the membrane mid-surface. Every membrane is
  described by a (signed) distance to its mid-surface, and the same profile is used for all:

  - vesicles: ellipsoids of random size, ellipticity and orientation;
  - a curved sheet (plasma or organelle membrane) crossing the volume, gently bent and
    undulating, with cytosol on one side and a low-density exterior on the other;
  - optionally the membrane geometry of a real segmentation (``membrane_labels``): the
    mid-surface is where the distances to the lumen and to the outside are equal.

* macromolecular complexes made of a few Gaussian lobes, randomly rotated, of three sizes:
  ribosome-like (~25 nm), ~15 nm barrels and ~10 nm small complexes, not overlapping one
  another nor any membrane.
* a weak smooth background: cytosol, vesicle lumen and exterior at different levels, with
  a smooth random fluctuation in the cytosol.

The label map is 1 on voxels within ``leaflet_separation / 2 + 0.6 * leaflet_fwhm`` of a
mid-surface (both leaflets and the space between), 0 elsewhere.

The phantom can be generated on a grid wider in X than the output (``pad_x``): the tilt
series simulation projects the whole slab, so that high-tilt rays cross specimen all the
way, and reconstructs only the central part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Phantom", "make_phantom", "bilayer_profile", "label_map_distance", "read_label_map"]

# complex templates: lobes (offset xyz in A, sigma in A, relative weight)
_COMPLEX_TYPES = {
    # ribosome-like: large subunit of three lobes, small subunit of two, ~25 nm across
    "ribosome": dict(
        lobes=[((0, 0, 0), 52, 1.0), ((32, 26, 0), 38, 0.8), ((-26, 30, 12), 34, 0.7),
               ((4, -70, 6), 34, 0.75), ((28, -82, 18), 24, 0.6)],
        amplitude=1.3, fraction=0.4,
    ),
    # ~15 nm barrel (proteasome-like): four stacked rings
    "barrel": dict(
        lobes=[((0, 0, z), 26, 1.0) for z in (-45, -15, 15, 45)],
        amplitude=1.0, fraction=0.3,
    ),
    # ~10 nm small complexes: three lobes
    "small": dict(
        lobes=[((0, 0, 0), 20, 1.0), ((22, 8, 0), 16, 0.8), ((-10, 20, 8), 15, 0.7)],
        amplitude=0.9, fraction=0.3,
    ),
}


@dataclass
class Phantom:
    """A generated specimen: ``density`` and ``membrane_density`` (the bilayers alone), float32,
    and ``labels`` (uint8, 1 = membrane), all ``(Z, Y, X)`` on the full (padded) grid; the
    output region is ``[..., pad_x : X - pad_x]``. ``objects`` lists what was placed."""

    density: np.ndarray
    membrane_density: np.ndarray
    labels: np.ndarray
    voxel_size: float
    pad_x: int = 0
    objects: list = field(default_factory=list)

    def crop(self, a: np.ndarray) -> np.ndarray:
        """The output region (without the lateral padding) of an array on this grid."""
        if self.pad_x == 0:
            return a
        return a[..., self.pad_x:a.shape[-1] - self.pad_x]


def bilayer_profile(d: np.ndarray, voxel_size: float, separation: float = 40.0,
                    fwhm: float = 17.5, peak: float = 1.0) -> np.ndarray:
    """Density of a bilayer at signed distance ``d`` (A) from its mid-surface: two Gaussian
    leaflets at ``+-separation/2``. The Gaussian is widened by the voxel's box
    (variance ``voxel^2 / 12``, mass kept) so that sampling on the grid does not alias."""
    s0 = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    s = math.sqrt(s0 ** 2 + voxel_size ** 2 / 12.0)
    a = peak * s0 / s
    h = separation / 2.0
    d = np.asarray(d, dtype=np.float32)
    return (a * (np.exp(-((d - h) ** 2) / (2 * s * s)) + np.exp(-((d + h) ** 2) / (2 * s * s)))
            ).astype(np.float32)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation matrix (acting on (x, y, z) vectors)."""
    q = rng.standard_normal(4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _box(center_vox, half_vox, shape):
    """Slices of a box around a centre (z, y, x voxels), clipped to the grid, and the
    coordinates (A-free voxel indices) of its axes."""
    sl, ax = [], []
    for c, h, n in zip(center_vox, half_vox, shape):
        lo = max(0, int(math.floor(c - h)))
        hi = min(n, int(math.ceil(c + h)) + 1)
        sl.append(slice(lo, hi))
        ax.append(np.arange(lo, hi, dtype=np.float32))
    return tuple(sl), ax


def read_label_map(path) -> np.ndarray:
    """Read an integer label map (``(Z, Y, X)``) from a volume file.

    Uses :func:`cet_monai.io.read_volume` when that module provides it, else ``mrcfile`` in
    permissive mode (files with a zero machine stamp, as some tools write, are accepted).
    """
    from ..errors import TomogramError

    path = Path(path)
    if not path.exists():
        raise TomogramError(path, "label map not found")
    data = None
    try:
        from ..io import read_volume  # type: ignore[attr-defined]
    except ImportError:
        read_volume = None
    if read_volume is not None:
        vol = read_volume(path)
        data = getattr(vol, "data", vol)
        data = np.asarray(data[0] if isinstance(data, tuple) else data)
    else:
        import warnings

        import mrcfile

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                with mrcfile.open(path, permissive=True) as m:
                    data = None if m.data is None else np.array(m.data)
        except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
            raise TomogramError(path, f"cannot read label map: {exc}") from exc
        if data is None:
            raise TomogramError(path, "cannot read label map: no data")
    data = np.squeeze(data)
    if data.ndim != 3:
        raise TomogramError(path, f"label map must be 3D, got shape {data.shape}")
    if not np.all(np.isfinite(data)) or not np.allclose(data, np.round(data)):
        raise TomogramError(path, "label map must hold integer labels")
    return np.round(data).astype(np.int16)


def label_map_distance(labels: np.ndarray, membrane: int = 1, lumen: int = 2,
                       smooth: float = 1.5) -> np.ndarray:
    """Signed distance (voxels of the label map) to the membrane mid-surface of a segmentation:
    negative in the lumen, positive outside.

    The mid-surface is where the distance to the lumen equals the distance to everything that
    is neither lumen nor membrane (``phi = (sd_lumen - sd_outside) / 2``); without an outside
    region, the lumen boundary shifted out by half the mean membrane thickness. The field is
    smoothed with a Gaussian of ``smooth`` voxels to remove the segmentation's staircases.
    """
    from scipy import ndimage

    lum = labels == lumen
    if not lum.any():
        raise ValueError(f"the label map has no lumen (label {lumen})")
    mem = labels == membrane
    out = ~lum & ~mem

    def sdist(mask):  # signed distance to the mask boundary, positive outside the mask
        return (ndimage.distance_transform_edt(~mask) - ndimage.distance_transform_edt(mask))

    sd_l = sdist(lum)
    if out.any():
        phi = 0.5 * (sd_l - sdist(out))
    else:
        t = float(sd_l[mem].mean()) if mem.any() else 0.0
        phi = sd_l - t
    if smooth > 0:  # voxel staircases of the segmentation -> a smooth surface
        phi = ndimage.gaussian_filter(phi, smooth, mode="nearest")
    return phi.astype(np.float32)


def _label_geometry(path, labels_voxel_size, shape, voxel_size, pad_x):
    """Membrane distance field (A) on the padded target grid from a real label map."""
    lab = read_label_map(path)
    try:
        phi = label_map_distance(lab)
    except ValueError as exc:
        from ..errors import TomogramError

        raise TomogramError(path, str(exc)) from exc
    lv = float(labels_voxel_size) if labels_voxel_size else float(voxel_size)
    phi_a = phi * lv
    scale = voxel_size / lv
    nz, ny, nxp = shape
    lz, ly, lx = phi.shape
    # target voxel -> label-map voxel, centres aligned
    cz = (np.arange(nz) - (nz - 1) / 2.0) * scale + (lz - 1) / 2.0
    cy = (np.arange(ny) - (ny - 1) / 2.0) * scale + (ly - 1) / 2.0
    cx = (np.arange(nxp) - (nxp - 1) / 2.0) * scale + (lx - 1) / 2.0
    # Z and Y: clamp (membranes crossing the slab continue straight); X beyond the map: none
    cz = np.clip(cz, 0, lz - 1)
    cy = np.clip(cy, 0, ly - 1)
    inside_x = (cx >= -0.5) & (cx <= lx - 0.5)
    far = np.float32(1e4)
    out = np.full((nz, ny, nxp), far, dtype=np.float32)
    xs = np.clip(cx[inside_x], 0, lx - 1)
    if xs.size:
        # separable linear resampling: cheaper than map_coordinates on the full grid
        tmp = _resample_axis(phi_a, cz, 0)
        tmp = _resample_axis(tmp, cy, 1)
        tmp = _resample_axis(tmp, xs, 2)
        out[:, :, inside_x] = tmp
    return out


def _resample_axis(a: np.ndarray, coords: np.ndarray, axis: int) -> np.ndarray:
    i0 = np.clip(np.floor(coords).astype(np.int64), 0, a.shape[axis] - 1)
    i1 = np.clip(i0 + 1, 0, a.shape[axis] - 1)
    f = (coords - i0).astype(np.float32)
    shape = [1] * a.ndim
    shape[axis] = -1
    f = f.reshape(shape)
    return (np.take(a, i0, axis=axis) * (1 - f) + np.take(a, i1, axis=axis) * f).astype(
        np.float32)


def _smooth_field(rng, shape, sigma_vox) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field with correlation length ``sigma_vox``."""
    w = rng.standard_normal(shape).astype(np.float32)
    spec = np.fft.rfftn(w)
    k = [np.fft.fftfreq(n) for n in shape[:-1]] + [np.fft.rfftfreq(shape[-1])]
    g = np.ones(spec.shape, dtype=np.float32)
    for i, ki in enumerate(k):
        s = [1] * len(shape)
        s[i] = -1
        g = g * np.exp(-2 * (math.pi * sigma_vox * ki) ** 2).astype(np.float32).reshape(s)
    f = np.fft.irfftn(spec * g, s=shape, axes=tuple(range(len(shape)))).astype(np.float32)
    f -= f.mean()
    sd = f.std()
    return f / sd if sd > 0 else f


def make_phantom(shape=(64, 128, 128), voxel_size: float = 10.0, seed=0, *,
                 n_vesicles: int | None = None, n_complexes: int | None = None,
                 sheet: bool | None = None, membrane_labels=None,
                 labels_voxel_size: float | None = None, pad_x: int = 0,
                 vesicle_radius=(120.0, 300.0), leaflet_separation: float = 40.0,
                 leaflet_fwhm: float = 17.5, leaflet_density: float = 1.0,
                 cytosol_density: float = 0.15, lumen_density: float = 0.08,
                 exterior_density: float = 0.03, background_std: float = 0.03,
                 complex_scale: float = 1.0) -> Phantom:
    """Generate a specimen phantom of ``shape = (Z, Y, X)`` voxels (plus ``pad_x`` voxels of
    specimen on each side of X).

    ``n_vesicles`` and ``n_complexes`` are the counts placed with their centres in the output
    region (as many again per the same area are placed in the padding); defaults: 4 vesicles
    and about 24 complexes per 64x128x128 voxels of 10 A (scaled with the volume), no random
    vesicles and no sheet when ``membrane_labels`` is given. ``seed`` is an int or a
    ``numpy.random.Generator``. Objects that cannot be placed without overlap after many
    tries are skipped (``Phantom.objects`` lists what was placed).
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    nz, ny, nx = (int(s) for s in shape)
    pad_x = int(pad_x)
    nxp = nx + 2 * pad_x
    gshape = (nz, ny, nxp)
    v = float(voxel_size)
    vol_nm3 = nz * ny * nx * (v / 10.0) ** 3
    ref_nm3 = 64 * 128 * 128 * 1.0
    if n_vesicles is None:
        n_vesicles = 0 if membrane_labels is not None else max(1, round(4 * vol_nm3 / ref_nm3))
    if n_complexes is None:
        n_complexes = round(24 * vol_nm3 / ref_nm3)
    if sheet is None:
        sheet = membrane_labels is None
    pad_frac = 2 * pad_x / nx

    half_bilayer = leaflet_separation / 2.0 + 0.6 * leaflet_fwhm  # label half-width (A)
    mem_reach = leaflet_separation / 2.0 + 2.0 * leaflet_fwhm  # where the profile is ~0
    # physical coordinates (A) of the grid axes, origin at the grid centre
    zc = (np.arange(nz, dtype=np.float32) - (nz - 1) / 2.0) * v
    yc = (np.arange(ny, dtype=np.float32) - (ny - 1) / 2.0) * v
    xc = (np.arange(nxp, dtype=np.float32) - (nxp - 1) / 2.0) * v
    z_half, y_half, x_half_out = nz * v / 2.0, ny * v / 2.0, nx * v / 2.0
    x_half_all = nxp * v / 2.0

    base = np.full(gshape, cytosol_density, dtype=np.float32)
    cyto = np.ones(gshape, dtype=np.float32)  # 1 in cytosol, 0 in lumen/exterior (smooth)
    mem = np.zeros(gshape, dtype=np.float32)
    labels = np.zeros(gshape, dtype=np.uint8)
    objects: list[dict] = []
    # obstacles for placement: functions (points (N,3) xyz A) -> clearance (A) to any membrane
    clearances = []

    def add_membrane(sl, d):
        prof = bilayer_profile(d, v, leaflet_separation, leaflet_fwhm, leaflet_density)
        np.maximum(mem[sl], prof, out=mem[sl])
        labels[sl] |= (np.abs(d) <= half_bilayer).astype(np.uint8)

    def sigmoid(d, width=5.0):
        return (1.0 / (1.0 + np.exp(-np.clip(d / width, -30, 30)))).astype(np.float32)

    # ---- real membrane geometry
    if membrane_labels is not None:
        phi = _label_geometry(membrane_labels, labels_voxel_size, gshape, v, pad_x)
        add_membrane((slice(None),) * 3, phi)
        inside = sigmoid(-phi)  # lumen
        base += (lumen_density - cytosol_density) * inside
        cyto *= 1.0 - inside

        def clr_labels(p, phi=phi):
            iz = np.clip(np.round(p[:, 2] / v + (nz - 1) / 2.0).astype(int), 0, nz - 1)
            iy = np.clip(np.round(p[:, 1] / v + (ny - 1) / 2.0).astype(int), 0, ny - 1)
            ix = np.clip(np.round(p[:, 0] / v + (nxp - 1) / 2.0).astype(int), 0, nxp - 1)
            return phi[iz, iy, ix]  # lumen is negative: never clear

        clearances.append(clr_labels)
        objects.append(dict(kind="label_map", path=str(membrane_labels),
                            labels_voxel_size=labels_voxel_size or v))

    # ---- curved sheet
    if sheet:
        az = rng.uniform(0, 2 * math.pi)
        el = math.radians(rng.uniform(-40, 40))
        n = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        t1 = np.cross(n, [0.0, 0.0, 1.0])
        t1 /= np.linalg.norm(t1)
        t2 = np.cross(n, t1)
        # the sheet passes 20-35 % of the lateral extent from the centre; cytosol around the centre
        off = rng.uniform(0.2, 0.35) * min(y_half, x_half_out) * 2
        p0 = n * off
        kappa1 = rng.choice([-1, 1]) / rng.uniform(1500.0, 5000.0)
        kappa2 = rng.choice([-1, 1]) / rng.uniform(2000.0, 8000.0)
        amp = rng.uniform(20.0, 60.0)
        lam = rng.uniform(600.0, 1500.0)
        psi = rng.uniform(0, 2 * math.pi)

        # python floats keep the float32 grid arithmetic in float32
        n, t1, t2, p0 = ([float(c) for c in vec] for vec in (n, t1, t2, p0))
        kappa1, kappa2, amp, lam, psi = (float(c) for c in (kappa1, kappa2, amp, lam, psi))

        def sheet_dist(px, py, pz, n=n, t1=t1, t2=t2, p0=p0):
            rx, ry, rz = px - p0[0], py - p0[1], pz - p0[2]
            w = n[0] * rx + n[1] * ry + n[2] * rz
            a = t1[0] * rx + t1[1] * ry + t1[2] * rz
            b = t2[0] * rx + t2[1] * ry + t2[2] * rz
            g = w - 0.5 * (kappa1 * a * a + kappa2 * b * b) - amp * np.sin(2 * math.pi * a / lam + psi)
            ga = kappa1 * a + amp * (2 * math.pi / lam) * np.cos(2 * math.pi * a / lam + psi)
            gb = kappa2 * b
            # positive on the exterior side (away from the centre); cytosol is negative
            return g / np.sqrt(1.0 + ga * ga + gb * gb)

        d = sheet_dist(xc[None, None, :], yc[None, :, None], zc[:, None, None]).astype(np.float32)
        add_membrane((slice(None),) * 3, d)
        ext = sigmoid(d)
        base += (exterior_density - cytosol_density) * ext
        cyto *= 1.0 - ext
        clearances.append(lambda p: -sheet_dist(p[:, 0], p[:, 1], p[:, 2]))
        objects.append(dict(kind="sheet", normal=[round(c, 4) for c in n], offset_A=round(off, 1)))
        del d, ext

    def clear_of_membranes(p, r):
        p = np.asarray(p, dtype=np.float64)[None]
        return all(float(c(p)[0]) > r for c in clearances)

    def rand_center(r, x_region):
        """Random centre (x, y, z A): inside the slab in Z when it fits; x in the output region
        (``x_region='out'``) or in the padding."""
        zlim = max(0.0, z_half - r)
        z = rng.uniform(-zlim, zlim)
        y = rng.uniform(-y_half, y_half)
        if x_region == "out":
            x = rng.uniform(-x_half_out, x_half_out)
        else:
            x = rng.uniform(x_half_out, x_half_all) * rng.choice([-1, 1])
        return np.array([x, y, z])

    placed = []  # (centre xyz, bounding radius)

    def free(c, r, margin):
        if not placed:
            return True
        cs = np.array([p[0] for p in placed])
        rs = np.array([p[1] for p in placed])
        return bool(np.all(np.linalg.norm(cs - c, axis=1) > rs + r + margin))

    # ---- vesicles
    r_hi = min(vesicle_radius[1], z_half - mem_reach - 10.0)
    r_lo = min(vesicle_radius[0], 0.6 * r_hi)
    n_ves_total = [(n_vesicles, "out"), (int(round(n_vesicles * pad_frac)), "pad")]
    if r_hi > 3 * v:
        for count, region in n_ves_total:
            for _ in range(count):
                for _try in range(200):
                    r = rng.uniform(r_lo, r_hi)
                    axes = r * np.array([1.0, rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.0)])
                    rb = axes.max() + mem_reach
                    c = rand_center(rb, region)
                    if free(c, rb, 20.0) and clear_of_membranes(c, rb + 20.0):
                        break
                else:
                    continue
                rot = _random_rotation(rng)
                placed.append((c, rb))
                cvox = (c[2] / v + (nz - 1) / 2.0, c[1] / v + (ny - 1) / 2.0,
                        c[0] / v + (nxp - 1) / 2.0)
                sl, (bz, by, bx) = _box(cvox, [rb / v + 1] * 3, gshape)
                # local coordinates q = R^T (p - c)
                pz = (bz[:, None, None] - (nz - 1) / 2.0) * v - c[2]
                py = (by[None, :, None] - (ny - 1) / 2.0) * v - c[1]
                px = (bx[None, None, :] - (nxp - 1) / 2.0) * v - c[0]
                q = [rot[0, i] * px + rot[1, i] * py + rot[2, i] * pz for i in range(3)]
                rho2 = sum((qi / ai) ** 2 for qi, ai in zip(q, axes))
                rho = np.sqrt(rho2)
                grad = np.sqrt(sum(qi ** 2 / ai ** 4 for qi, ai in zip(q, axes)))
                d = ((rho - 1.0) * rho / np.maximum(grad, 1e-12)).astype(np.float32)
                d = np.where(rho < 1e-6, -axes.min(), d).astype(np.float32)
                add_membrane(sl, d)
                inside = sigmoid(-d)
                base[sl] += (lumen_density - cytosol_density) * inside * cyto[sl]
                cyto[sl] *= 1.0 - inside
                objects.append(dict(kind="vesicle", center_A=c.round(1).tolist(),
                                    semi_axes_A=axes.round(1).tolist(),
                                    in_output=region == "out"))

    # ---- macromolecular complexes
    kinds = list(_COMPLEX_TYPES)
    fracs = np.array([_COMPLEX_TYPES[k]["fraction"] for k in kinds])
    fracs = fracs / fracs.sum()
    cplx = np.zeros(gshape, dtype=np.float32)
    s_vox2 = v * v / 12.0
    for count, region in [(n_complexes, "out"), (int(round(n_complexes * pad_frac)), "pad")]:
        for _ in range(count):
            kind = kinds[int(rng.choice(len(kinds), p=fracs))]
            spec = _COMPLEX_TYPES[kind]
            jit = rng.uniform(0.9, 1.1, size=len(spec["lobes"]))
            offs = np.array([o for o, _, _ in spec["lobes"]], dtype=np.float64) * complex_scale
            offs = offs * jit[:, None]
            offs -= offs.mean(axis=0)
            sig = np.array([s for _, s, _ in spec["lobes"]]) * complex_scale * jit
            wts = np.array([w for _, _, w in spec["lobes"]])
            rb = float(np.max(np.linalg.norm(offs, axis=1) + 1.5 * sig))
            for _try in range(100):
                c = rand_center(rb, region)
                if free(c, rb, 10.0) and clear_of_membranes(c, rb + mem_reach * 0.5):
                    break
            else:
                continue
            placed.append((c, rb))
            rot = _random_rotation(rng)
            lobes = offs @ rot.T + c  # xyz A
            cvox = (c[2] / v + (nz - 1) / 2.0, c[1] / v + (ny - 1) / 2.0,
                    c[0] / v + (nxp - 1) / 2.0)
            reach = rb + 1.5 * sig.max()
            sl, (bz, by, bx) = _box(cvox, [reach / v + 1] * 3, gshape)
            pz = (bz[:, None, None] - (nz - 1) / 2.0) * v
            py = (by[None, :, None] - (ny - 1) / 2.0) * v
            px = (bx[None, None, :] - (nxp - 1) / 2.0) * v
            dens = np.zeros(tuple(len(b) for b in (bz, by, bx)), dtype=np.float32)
            for (lx, ly, lz), s, w in zip(lobes, sig, wts):
                s2 = s * s + s_vox2
                dens += (w * (s * s / s2) ** 1.5) * np.exp(
                    -(((px - lx) ** 2 + (py - ly) ** 2 + (pz - lz) ** 2) / (2 * s2))
                ).astype(np.float32)
            dens *= spec["amplitude"] / max(float(dens.max()), 1e-6)
            np.maximum(cplx[sl], dens, out=cplx[sl])
            objects.append(dict(kind=kind, center_A=c.round(1).tolist(),
                                radius_A=round(rb, 1), in_output=region == "out"))

    # ---- background, assembly
    if background_std > 0:
        field_ = _smooth_field(rng, gshape, sigma_vox=max(1.0, 40.0 / v))
        base += background_std * field_ * cyto
    density = base + mem + cplx
    return Phantom(density=density.astype(np.float32), membrane_density=mem,
                   labels=labels, voxel_size=v, pad_x=pad_x, objects=objects)
