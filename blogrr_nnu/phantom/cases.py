"""One phantom case, from ``(seed, role, index)`` to images, label, report and metadata.

Each case draws from its own generators, ``SeedSequence(seed, spawn_key=(role, index))`` split
into anatomy / lesion / contrast / noise / report streams, so a case depends only on the seed and
its own id: generating cases in any order, in parallel, or a different number of them, gives the
same files for the same ids.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from blogrr_nnu.image_io import Geometry
from blogrr_nnu.phantom.anatomy import SubjectSpec, sample_subject, warp_template
from blogrr_nnu.phantom.contrast import finish, sample_contrast, tissue_images
from blogrr_nnu.phantom.lesion import LesionSpec, blend_lesion, choose_centre, draw_lesion, sample_lesion
from blogrr_nnu.phantom.report_writer import Findings, measure_findings, write_report
from blogrr_nnu.phantom.template import smoothing_for_spacing, template_model

logger = logging.getLogger(__name__)

GENERATOR_VERSION = "1.0"
ROLE_CODES = {"healthy": 0, "tumor": 1, "test": 2}
ROLE_PREFIX = {"healthy": "healthy", "tumor": "tumor", "test": "test"}


@dataclass
class PhantomCase:
    """A generated case.

    Attributes:
        case_id: e.g. ``"tumor_003"``.
        role: ``"healthy"``, ``"tumor"`` or ``"test"``.
        images: ``(3, X, Y, Z)`` int16, channels T1, T2, FLAIR; 0 outside the brain.
        geometry: the native grid shared by all channels and the label.
        label: ``(X, Y, Z)`` uint8 {0, 1} whole tumour, ``None`` for healthy cases.
        report: report text, ``None`` for healthy cases.
        meta: JSON-ready metadata (transform, lesion, findings, contrast).
    """

    case_id: str
    role: str
    images: np.ndarray
    geometry: Geometry
    label: np.ndarray | None
    report: str | None
    meta: dict


def case_id(role: str, index: int) -> str:
    """``"<role>_<index:03d>"``."""
    return f"{ROLE_PREFIX[role]}_{index:03d}"


def case_rngs(seed: int, role: str, index: int) -> dict[str, np.random.Generator]:
    """Independent generators of one case (see module docstring)."""
    ss = np.random.SeedSequence(int(seed), spawn_key=(ROLE_CODES[role], int(index)))
    names = ("anatomy", "lesion", "contrast", "noise", "report")
    return {n: np.random.default_rng(s) for n, s in zip(names, ss.spawn(len(names)))}


def midline_shift(spec: SubjectSpec, lesion: LesionSpec) -> float:
    """Modelled midline shift (mm): the mass-effect displacement at the template midline plane."""
    c = spec.affine @ np.append(np.asarray(lesion.centre), 1.0)
    # Distance to the midline in subject mm: template x is mm of the (larger) template brain.
    d = abs(float(c[0])) * float(spec.scale[0])
    return lesion.mass_effect().shift_at(d)


def generate_case(seed: int, role: str, index: int, spacing: float) -> PhantomCase:
    """Synthesise one case.

    Args:
        seed: dataset seed.
        role: ``"healthy"``, ``"tumor"`` or ``"test"`` (test cases are tumour cases).
        index: case number within its role.
        spacing: isotropic native voxel size, mm.

    Returns:
        The :class:`PhantomCase`.
    """
    if role not in ROLE_CODES:
        raise ValueError(f"role must be one of {sorted(ROLE_CODES)}, got {role!r}")
    rngs = case_rngs(seed, role, index)
    model = template_model(smoothing_for_spacing(spacing))
    spec = sample_subject(rngs["anatomy"], spacing, model)
    geo = spec.geometry
    lesion = None
    if role != "healthy":
        maps0, ham0 = warp_template(model, spec, with_mass=False)
        region, centre = choose_centre(rngs["lesion"], ham0, maps0, geo)
        lesion = sample_lesion(rngs["lesion"], region, centre)
        spec.mass = lesion.mass_effect()
    maps, hammers = warp_template(model, spec)
    contrast = sample_contrast(rngs["contrast"], maps, geo)
    images = tissue_images(maps, hammers, contrast, geo)
    label = report = None
    findings: Findings | None = None
    omitted: list[str] = []
    if lesion is not None:
        label, w_core, w_oed = draw_lesion(rngs["lesion"], lesion, maps, geo, hammers)
        images = blend_lesion(images, lesion, w_core, w_oed)
        findings = measure_findings(label, hammers, geo, spec.rotation)
        findings.necrotic, findings.subtle = lesion.necrotic, lesion.subtle
        findings.mass_amplitude = lesion.mass_amplitude
        findings.midline_shift_mm = midline_shift(spec, lesion) if lesion.mass_amplitude > 0.15 else 0.0
        findings.wmh, findings.caps = bool(contrast.wmh), contrast.cap_amp > 0.5
        report, omitted = write_report(findings, rngs["report"])
    mask = maps["mask"] > 0.5
    arr = finish(images, mask, contrast, geo, rngs["noise"])
    cid = case_id(role, index)
    meta = {
        "case": cid, "role": role, "seed": int(seed), "generator_version": GENERATOR_VERSION,
        "subject": spec.to_meta(),
        "brain_ml": float(mask.sum() * np.prod(geo.spacing) / 1000.0),
        "contrast": contrast.summary(),
        "lesion": None if lesion is None else lesion.to_meta(),
        "findings": None if findings is None else {
            "volume_ml": findings.volume_ml, "diameters_mm": list(findings.diameters_mm),
            "sides": findings.sides, "sites": [list(s) for s in findings.sites],
            "dominant_label": findings.dominant_label, "ventricle_side": findings.ventricle_side,
            "midline_shift_mm": findings.midline_shift_mm, "omitted_in_report": omitted},
    }
    logger.debug("case %s: brain %.0f ml, lesion %s", cid, meta["brain_ml"],
                 None if findings is None else f"{findings.volume_ml:.1f} ml")
    return PhantomCase(cid, role, arr, geo, label, report, meta)
