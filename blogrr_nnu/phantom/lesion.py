"""Tumour model: where it grows, its shape (necrotic core + oedema) and its signal.

1. A lobe is drawn (frontal 35 %, temporal 25 %, parietal 20 %, occipital 7 %, insula 5 %,
   cingulate 4 %, deep grey 4 %), then a Hammers region inside it (probability ~ volume), then the
   centre: a voxel of that region in the subject (atlas warped without mass effect), >= 10 mm
   inside the brain when possible, preferring white matter (gliomas are white-matter centred).
2. Shape, on the native grid after the mass effect has been applied: an ellipsoid (axes 0.75-1.25,
   random orientation, outer radius 16-34 mm) whose radius is modulated by smooth noise (irregular
   margin) and by white-matter fraction (oedema spreads along white matter and spares cortex and
   CSF). The core is a noisy inner ellipsoid (30-65 % of the radius); 20 % of the lesions have no
   necrotic core (low-grade-like, little mass effect). Whole tumour = oedema + core, restricted to
   the brain and to the lesion's compartment (own hemisphere + midline structures; never the
   other hemisphere, cerebellum or brainstem), the component that holds the centre.
3. Signal (relative to WM = 1): oedema FLAIR 1.45-2.1 (subtle lesions, 35 %: 1.3-1.55; GM is
   ~1.18), T2 1.6-2.4, T1 0.75-0.9; its signal fades towards the margin (margin weight 0.25-0.8),
   the core is T1-dark (0.30-0.50), T2-bright (0.7-0.95 of CSF) and variable on FLAIR (0.6-1.9:
   necrotic fluid is often partly suppressed), with +-12 % smooth heterogeneity.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi

from blogrr_nnu.atlas import hammers_regions
from blogrr_nnu.image_io import Geometry
from blogrr_nnu.phantom.anatomy import MassEffect, _rotation, physical_points
from blogrr_nnu.phantom.contrast import CHANNELS

LOBE_PROBS = {"frontal": 0.35, "temporal": 0.25, "parietal": 0.20, "occipital": 0.07,
              "insula": 0.05, "cingulate": 0.04, "deep": 0.04}
DEEP_LABELS = (34, 35, 38, 39, 40, 41)  # caudate, putamen, thalamus
MIN_DEPTH_MM = 10.0
INFRATENTORIAL = ("cerebellum", "brainstem excluding substantia nigra", "substantia nigra")


@dataclass
class LesionSpec:
    """A tumour's parameters (native LPS mm; signal levels relative to WM = 1).

    Attributes:
        region: Hammers label the centre was drawn in.
        centre: lesion centre, native LPS mm.
        radius: outer (oedema) radius, mm.
        axes: ellipsoid axis ratios.
        angles: ellipsoid orientation, degrees.
        core_fraction: core radius / outer radius.
        necrotic: whether the core is necrotic (T1-dark, mass effect).
        subtle: low-conspicuity oedema.
        edge_weight: oedema signal weight at the margin (1 = as bright as inside).
        oedema: channel -> oedema level.
        core: channel -> core level.
        mass_amplitude, mass_sigma: see :class:`~blogrr_nnu.phantom.anatomy.MassEffect`.
    """

    region: int
    centre: tuple[float, float, float]
    radius: float
    axes: tuple[float, float, float]
    angles: tuple[float, float, float]
    core_fraction: float
    necrotic: bool
    subtle: bool
    edge_weight: float
    oedema: dict[str, float]
    core: dict[str, float]
    mass_amplitude: float
    mass_sigma: float

    def mass_effect(self) -> MassEffect:
        """The mass effect this lesion exerts."""
        return MassEffect(self.centre, self.mass_amplitude, self.mass_sigma)

    def to_meta(self) -> dict:
        """JSON-ready dict."""
        d = asdict(self)
        d["region_name"] = hammers_regions()[self.region].name
        return d


def _region_pool() -> dict[str, list[int]]:
    pool: dict[str, list[int]] = {k: [] for k in LOBE_PROBS}
    for label, reg in hammers_regions().items():
        if reg.lobe in pool:
            pool[reg.lobe].append(label)
    pool["deep"] = list(DEEP_LABELS)
    return pool


def choose_centre(rng: np.random.Generator, hammers: np.ndarray, maps: dict[str, np.ndarray],
                  geometry: Geometry) -> tuple[int, tuple[float, float, float]]:
    """Draw the host region and the lesion centre on the native grid.

    Args:
        rng: the case's generator.
        hammers: Hammers labels warped to the native grid *without* mass effect, ``(X, Y, Z)``.
        maps: warped template maps without mass effect.
        geometry: the native grid.

    Returns:
        ``(label, centre)`` with ``centre`` a voxel centre (LPS mm) whose label is ``label``.
    """
    pool = _region_pool()
    brain = maps["mask"] > 0.5
    depth = ndi.distance_transform_edt(brain, sampling=geometry.spacing)
    counts = np.bincount(hammers[brain].ravel(), minlength=256)
    lobes = list(LOBE_PROBS)
    for _ in range(50):
        lobe = lobes[rng.choice(len(lobes), p=np.array(list(LOBE_PROBS.values())))]
        labels = [lab for lab in pool[lobe] if counts[lab] > 0]
        if not labels:
            continue
        w = counts[labels].astype(float)
        label = int(labels[rng.choice(len(labels), p=w / w.sum())])
        region = (hammers == label) & brain & (maps["csf"] < 0.3)
        for min_depth in (MIN_DEPTH_MM, 5.0, 0.0):
            cand = np.argwhere(region & (depth >= min_depth))
            if len(cand):
                break
        if not len(cand):
            continue
        weights = 0.3 + maps["wm"][tuple(cand.T)]
        pick = cand[rng.choice(len(cand), p=weights / weights.sum())]
        a = geometry.affine_lps()
        centre = a[:3, :3] @ pick + a[:3, 3]
        return label, tuple(float(c) for c in centre)
    raise RuntimeError("could not place a lesion: no Hammers region of the pool is inside this subject's brain")


def sample_lesion(rng: np.random.Generator, region: int, centre: tuple[float, float, float]) -> LesionSpec:
    """Draw the lesion's size, shape, signal and mass effect."""
    necrotic = bool(rng.random() < 0.8)
    subtle = bool(rng.random() < 0.35)
    radius = float(rng.uniform(16.0, 34.0))
    if subtle:
        flair = float(rng.uniform(1.3, 1.55))
    else:
        flair = float(rng.uniform(1.45, 2.1))
    oedema = {"T1": float(rng.uniform(0.75, 0.9)), "T2": float(rng.uniform(1.6, 2.4)), "FLAIR": flair}
    if necrotic:
        core = {"T1": float(rng.uniform(0.30, 0.50)), "T2": float(rng.uniform(0.7, 0.95)) * 2.6,
                "FLAIR": float(rng.uniform(0.6, 1.9))}
        amplitude = float(rng.uniform(0.25, 0.6))
    else:  # solid non-necrotic tumour: signal close to the oedema, little mass effect
        core = {"T1": float(rng.uniform(0.6, 0.8)), "T2": float(rng.uniform(1.8, 2.6)),
                "FLAIR": float(rng.uniform(1.3, 2.1))}
        amplitude = float(rng.uniform(0.05, 0.2))
    return LesionSpec(
        region=int(region), centre=centre, radius=radius,
        axes=tuple(float(a) for a in rng.uniform(0.75, 1.25, 3)),
        angles=tuple(float(a) for a in rng.uniform(-90, 90, 3)),
        core_fraction=float(rng.uniform(0.3, 0.65)), necrotic=necrotic, subtle=subtle,
        edge_weight=float(rng.uniform(0.25, 0.8)), oedema=oedema, core=core,
        mass_amplitude=amplitude, mass_sigma=float(radius * rng.uniform(0.6, 0.9)),
    )


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: float) -> np.ndarray:
    n = ndi.gaussian_filter(rng.normal(size=shape), sigma_vox, mode="wrap")
    return n / max(float(n.std()), 1e-6)


def allowed_labels(region: int) -> np.ndarray:
    """Lookup table (256,) bool: Hammers labels a lesion grown from ``region`` may occupy.

    Gliomas respect the tentorium and cross the midline only through white-matter commissures, so
    a supratentorial lesion may cover its own hemisphere, unpaired midline structures and unlabelled
    brain, but not the other hemisphere, the cerebellum or the brainstem.
    """
    regions = hammers_regions()
    side = regions[region].side
    ok = np.zeros(256, bool)
    ok[0] = True
    for label, reg in regions.items():
        infratentorial = reg.structure in INFRATENTORIAL
        ok[label] = not infratentorial and (reg.side == side or reg.side == "midline")
    return ok


def draw_lesion(rng: np.random.Generator, spec: LesionSpec, maps: dict[str, np.ndarray], geometry: Geometry,
                hammers: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rasterise the lesion on the native grid (maps already include the mass effect).

    ``hammers`` (the warped atlas, with mass effect) confines the lesion to its compartment, see
    :func:`allowed_labels`.

    Returns:
        ``(label, w_core, w_oedema)``: the whole-tumour mask ``(X, Y, Z)`` uint8 {0, 1} and the
        signal weights of core and oedema ``(X, Y, Z)`` float32 (``w_core + w_oedema <= 1``,
        zero outside the label).
    """
    spacing = float(geometry.spacing[0])
    shape = tuple(geometry.shape)
    a = geometry.affine_lps()
    centre_idx = np.linalg.solve(a[:3, :3], np.asarray(spec.centre) - a[:3, 3])
    half = int(np.ceil(1.9 * spec.radius * max(spec.axes) / spacing)) + 2
    lo = np.maximum(np.round(centre_idx).astype(int) - half, 0)
    hi = np.minimum(np.round(centre_idx).astype(int) + half + 1, shape)
    crop = tuple(slice(int(l), int(h)) for l, h in zip(lo, hi))
    cshape = tuple(int(h - l) for l, h in zip(lo, hi))

    pts = physical_points(geometry)[crop] - np.asarray(spec.centre)
    rot = _rotation(np.asarray(spec.angles))
    local = pts @ rot / np.asarray(spec.axes)
    rho = np.sqrt(np.sum(local ** 2, axis=-1)) / spec.radius
    sigma = max(0.35 * spec.radius / spacing, 1.0)
    n1, n2, n3 = (_smooth_noise(rng, cshape, sigma) for _ in range(3))

    brain = maps["mask"][crop] > 0.5
    if hammers is not None:
        brain &= allowed_labels(spec.region)[hammers[crop]]
    wm, csf = maps["wm"][crop], maps["csf"][crop]
    rho_o = rho - 0.3 * n1 - 0.35 * (wm - 0.5)
    # Multiplicative noise keeps the centre inside the core (an additive term could erase it).
    rho_c = (rho / spec.core_fraction) / (1.0 + 0.35 * np.clip(n2, -2.0, 2.0))
    oed = (rho_o < 1.0) & brain & (csf < 0.5)
    core = (rho_c < 1.0) & brain & (csf < 0.8)
    whole = oed | core
    lab, n = ndi.label(whole)
    if n > 1:  # keep the component holding (or nearest to) the centre
        c = tuple(np.clip(np.round(centre_idx).astype(int) - lo, 0, np.array(cshape) - 1))
        keep = lab[c] if lab[c] else int(np.argmax(np.bincount(lab.ravel())[1:]) + 1)
        whole = lab == keep
    core &= whole

    w_core = np.clip((1.0 - rho_c) / 0.15, 0.0, 1.0) * core
    w_oed = spec.edge_weight + (1.0 - spec.edge_weight) * np.clip((1.0 - rho_o) / 0.5, 0.0, 1.0)
    w_oed = np.clip(w_oed * whole - w_core, 0.0, 1.0)
    # Heterogeneity is stored in the weights' companion texture, applied in blend_lesion.
    texture = 1.0 + 0.12 * n3

    label = np.zeros(shape, np.uint8)
    wc = np.zeros(shape, np.float32)
    wo = np.zeros(shape, np.float32)
    label[crop] = whole
    wc[crop] = w_core * texture
    wo[crop] = w_oed * texture
    return label, wc, wo


def blend_lesion(images: dict[str, np.ndarray], spec: LesionSpec, w_core: np.ndarray, w_oed: np.ndarray
                 ) -> dict[str, np.ndarray]:
    """Replace tissue signal by lesion signal: ``I = I_tissue (1 - w) + w_c L_core + w_o L_oedema``.

    The weights carry the +-12 % texture, so ``w`` is clipped to 1 for the tissue share.
    """
    w = np.clip(w_core + w_oed, 0.0, 1.0)
    return {ch: (images[ch] * (1.0 - w) + w_core * spec.core[ch] + w_oed * spec.oedema[ch]).astype(np.float32)
            for ch in CHANNELS}
