"""English radiology reports generated from a phantom tumour's final ground truth.

Location is *measured*, not intended: :func:`measure_findings` overlaps the whole-tumour label with
the Hammers atlas warped onto the subject (with the mass effect), so a lesion drawn in the insula
that spills into the frontal lobe is reported there too. Sites (lobes, insula, cingulate gyrus,
basal ganglia, thalamus, corpus callosum, ...) holding >= 10 % of the lesion are listed, largest
first; a side is reported when it holds >= 15 %. Like real reports, the wording and sentence order
vary (several templates, synonyms, UK/US spelling) and a report is sometimes imprecise: with
probability 0.3 one minor site (< 30 % of the lesion) is left out. The dominant site and side are
always named.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from blogrr_nnu.atlas import hammers_regions
from blogrr_nnu.image_io import Geometry
from blogrr_nnu.phantom.template import LATERAL_VENTRICLES, VENTRICLES

SITE_MIN_FRACTION = 0.10
SIDE_MIN_FRACTION = 0.15
_LOBE_SITE = {"frontal": "frontal lobe", "temporal": "temporal lobe", "parietal": "parietal lobe",
              "occipital": "occipital lobe", "insula": "insula", "cingulate": "cingulate gyrus"}
_STRUCT_SITE = {"caudate nucleus": "basal ganglia", "putamen": "basal ganglia", "pallidum": "basal ganglia",
                "nucleus accumbens": "basal ganglia", "thalamus": "thalamus", "corpus callosum": "corpus callosum",
                "cerebellum": "cerebellum", "brainstem excluding substantia nigra": "brainstem",
                "substantia nigra": "brainstem"}


def site_of(label: int) -> str | None:
    """Report site of a Hammers label (``"frontal lobe"``, ``"basal ganglia"``, ...), ``None`` for ventricles."""
    if label in VENTRICLES or label == 0:
        return None
    reg = hammers_regions()[label]
    if reg.lobe is not None:
        return _LOBE_SITE[reg.lobe]
    return _STRUCT_SITE.get(reg.structure)


@dataclass
class Findings:
    """What the ground truth shows, measured on the native grid.

    Attributes:
        volume_ml: whole-tumour volume.
        diameters_mm: extents along the anatomical AP, transverse and craniocaudal axes.
        sides: side -> fraction of the atlas-labelled lesion ("left", "right"; midline excluded).
        sites: ``(side, site, fraction)`` sorted by fraction, each >= :data:`SITE_MIN_FRACTION`.
        dominant_label: Hammers label holding most of the lesion.
        ventricle_side: side of a compressed lateral ventricle, or ``None``.
        midline_shift_mm: modelled midline shift.
        necrotic, subtle, mass_amplitude: copied from the lesion model (signal description).
        wmh, caps: confounders present (mentioned as normal/incidental findings).
    """

    volume_ml: float
    diameters_mm: tuple[float, float, float]
    sides: dict[str, float]
    sites: list[tuple[str, str, float]]
    dominant_label: int
    ventricle_side: str | None = None
    midline_shift_mm: float = 0.0
    necrotic: bool = True
    subtle: bool = False
    mass_amplitude: float = 0.0
    wmh: bool = False
    caps: bool = False
    omitted: list[str] = field(default_factory=list)

    @property
    def main_side(self) -> str:
        """Side holding most of the lesion."""
        return max(self.sides, key=self.sides.get) if self.sides else "midline"


def lesion_sites(label: np.ndarray, hammers: np.ndarray) -> tuple[dict[str, float], list[tuple[str, str, float]], int]:
    """Sides and sites of a binary lesion from the (subject-space) Hammers labels under it.

    Args:
        label: ``(X, Y, Z)`` binary lesion.
        hammers: ``(X, Y, Z)`` Hammers labels on the same grid.

    Returns:
        ``(sides, sites, dominant_label)`` as in :class:`Findings`.
    """
    regions = hammers_regions()
    counts = np.bincount(hammers[label > 0].ravel(), minlength=256)
    site_counts: dict[tuple[str, str], int] = {}
    side_counts = {"left": 0, "right": 0}
    for lab in np.nonzero(counts)[0]:
        site = site_of(int(lab))
        if site is None:
            continue
        side = regions[int(lab)].side
        site_counts[(side, site)] = site_counts.get((side, site), 0) + int(counts[lab])
        if side in side_counts:
            side_counts[side] += int(counts[lab])
    total = max(sum(site_counts.values()), 1)
    sides = {s: c / total for s, c in side_counts.items() if c / total >= SIDE_MIN_FRACTION}
    sites = sorted(((s, site, c / total) for (s, site), c in site_counts.items() if c / total >= SITE_MIN_FRACTION),
                   key=lambda t: -t[2])
    valid = [lab for lab in np.nonzero(counts)[0] if site_of(int(lab)) is not None]
    dominant = int(max(valid, key=lambda lab: counts[lab])) if valid else 0
    return sides, sites, dominant


def measure_findings(label: np.ndarray, hammers: np.ndarray, geometry: Geometry, rotation: np.ndarray) -> Findings:
    """Measure size, sides, sites and ventricle contact of a lesion (signal fields left default).

    Args:
        label: ``(X, Y, Z)`` binary whole-tumour mask on the native grid.
        hammers: ``(X, Y, Z)`` Hammers labels warped onto the native grid (with mass effect).
        geometry: the native grid.
        rotation: 3x3 rotation from native mm to anatomical (template-aligned) axes.
    """
    idx = np.argwhere(label > 0)
    a = geometry.affine_lps()
    pts = idx @ a[:3, :3].T
    anat = pts @ rotation.T  # anatomical axes: x = left-right, y = AP, z = CC
    sp = geometry.spacing[0]
    ext = anat.max(0) - anat.min(0) + sp
    sides, sites, dominant = lesion_sites(label, hammers)
    # Lateral ventricle within ~6 mm of the lesion on either side counts as compressed (if mass effect).
    near = ndi.binary_dilation(label > 0, iterations=max(1, int(round(6.0 / sp))))
    vent = {"right": int(np.sum(near & (hammers == LATERAL_VENTRICLES[0]))),
            "left": int(np.sum(near & (hammers == LATERAL_VENTRICLES[1])))}
    vside = max(vent, key=vent.get) if max(vent.values()) > 0 else None
    return Findings(volume_ml=float(len(idx) * np.prod(geometry.spacing) / 1000.0),
                    diameters_mm=(float(ext[1]), float(ext[0]), float(ext[2])),
                    sides=sides, sites=sites, dominant_label=dominant, ventricle_side=vside)


# ---------------------------------------------------------------------------------------------- text
def _site_phrase(side: str, site: str, with_side: bool = True) -> str:
    if site in ("corpus callosum", "brainstem") or side == "midline" or not with_side:
        return f"the {site}"
    return f"the {side} {site}"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _size(rng: np.random.Generator, d: tuple[float, float, float]) -> str:
    style = rng.integers(4)
    if style == 0:
        return "measuring approximately {:.1f} x {:.1f} x {:.1f} cm (AP x TR x CC)".format(*(x / 10 for x in d))
    if style == 1:
        return "measuring {:.0f} x {:.0f} x {:.0f} mm".format(*d)
    if style == 2:
        return "of about {:.1f} x {:.1f} x {:.1f} cm".format(*(x / 10 for x in d))
    return "approximately {:.0f} x {:.0f} x {:.0f} mm in size (AP x transverse x craniocaudal)".format(*d)


def write_report(f: Findings, rng: np.random.Generator) -> tuple[str, list[str]]:
    """Compose a varied free-text report.

    Args:
        f: measured findings (with signal fields filled in).
        rng: the case's generator (wording choices).

    Returns:
        ``(text, omitted_sites)``.
    """
    uk = rng.random() < 0.5
    oedema = "oedema" if uk else "edema"
    haem = "haemorrhage" if uk else "hemorrhage"
    mass_word = str(rng.choice(["mass", "lesion", "space-occupying lesion", "intra-axial mass"]))
    article = "an" if mass_word[0] in "aeiou" else "a"
    sites = list(f.sites) or [(f.main_side, "cerebral hemisphere", 1.0)]
    omitted = []
    minor = [s for s in sites[1:] if s[2] < 0.3]
    if minor and rng.random() < 0.3:
        drop = minor[rng.integers(len(minor))]
        sites.remove(drop)
        omitted.append(f"{drop[0]} {drop[1]}")
    main_side, main_site = sites[0][0], sites[0][1]
    midline_main = main_side == "midline"
    if midline_main:
        main_side = f.main_side
    # After a midline main site (corpus callosum) every further site needs its side.
    others = [_site_phrase(s, site, with_side=midline_main or s != main_side) for s, site, _ in sites[1:]]
    ext = ""
    if others:
        ext = str(rng.choice([", extending into {}", " with extension into {}", ", also involving {}"])).format(_join(others))
    reg = hammers_regions().get(f.dominant_label)
    struct = ""
    if reg is not None and reg.lobe in ("frontal", "temporal", "parietal", "occipital") and rng.random() < 0.4:
        struct = f" (centred on the {reg.structure})"
    loc = f"{_site_phrase(main_side, main_site)}{struct}"
    size = _size(rng, f.diameters_mm)
    lesion = str(rng.choice([
        "There is {a} {m} in {loc}{ext}, {size}.",
        "{A} {m} is seen in {loc}{ext}, {size}.",
        "{Loc} {m}{ext}, {size}.",
    ])).format(m=mass_word, a=article, A=article.capitalize(), loc=loc, ext=ext, size=size, Loc=loc[4:].capitalize() if loc.startswith("the ") else loc)

    hyper = str(rng.choice(["hyperintense", "high signal", "bright"]))
    if f.necrotic:
        signal = str(rng.choice([
            f"It has a central T1-hypointense, T2-hyperintense necrotic core surrounded by T2/FLAIR {hyper} {oedema}.",
            f"The lesion shows central necrosis (low T1 signal) with surrounding FLAIR {hyper} vasogenic {oedema}.",
            f"Heterogeneous signal: necrotic centre, dark on T1, and extensive surrounding FLAIR/T2 {hyper} {oedema}.",
        ]))
    else:
        signal = str(rng.choice([
            f"It is T1 hypointense and T2/FLAIR {hyper}, without a discrete necrotic component.",
            f"The lesion is mildly T1 hypointense and FLAIR {hyper}; no necrosis is seen.",
        ]))
    if f.subtle:
        signal += " " + str(rng.choice(["The FLAIR abnormality is subtle and ill-defined at its margins.",
                                        "Margins are indistinct; the signal change is only mildly conspicuous."]))
    other = "left" if main_side == "right" else "right"
    if f.mass_amplitude > 0.15:
        mass = "There is local mass effect with effacement of the adjacent sulci"
        if f.ventricle_side:
            mass += f" and compression of the {f.ventricle_side} lateral ventricle"
        mass += "."
        if f.midline_shift_mm >= 2.0:
            mass += f" Midline shift of approximately {f.midline_shift_mm:.0f} mm to the {other}."
        else:
            mass += " No midline shift."
    else:
        mass = str(rng.choice(["There is mild local mass effect without midline shift.",
                               "No significant mass effect. No midline shift."]))

    normal = [f"No intracranial {haem}.", "No extra-axial collection.",
              "Major intracranial flow voids are preserved.", "No other focal parenchymal lesion is identified."]
    if len(f.sides) == 1:
        normal.append(str(rng.choice([f"The {other} cerebral hemisphere is unremarkable.",
                                      "The contralateral hemisphere is unremarkable."])))
    if not any(site in ("cerebellum", "brainstem") for _, site, _ in f.sites):
        normal.append("The posterior fossa structures are unremarkable.")
    if not f.ventricle_side:
        normal.append("The ventricles are normal in size; no hydrocephalus.")
    if f.wmh:
        normal.append("A few punctate T2/FLAIR hyperintensities in the deep white matter, nonspecific, "
                      "likely small vessel change.")
    elif rng.random() < 0.5:
        normal.append("No significant white matter disease.")
    if f.caps:
        normal.append("Periventricular FLAIR caps, a normal finding.")
    rng.shuffle(normal)
    normal = normal[: int(rng.integers(3, len(normal) + 1))]

    kind = "high-grade glioma" if f.necrotic else str(rng.choice(["glial neoplasm", "low-grade glioma"]))
    side_word = main_side.capitalize() if main_site not in ("corpus callosum", "brainstem") else ""
    impression = f"{side_word} {main_site} intra-axial mass with surrounding {oedema}".strip()
    impression = impression[0].upper() + impression[1:] + f", most in keeping with {kind}."

    body = [lesion, signal, mass]
    if rng.random() < 0.4:
        body = [lesion, mass, signal]
    style = rng.integers(3)
    if style == 0:
        text = "FINDINGS:\n" + " ".join(body) + "\n" + " ".join(normal) + "\n\nIMPRESSION:\n" + impression
    elif style == 1:
        text = ("Technique: Multiplanar T1, T2 and FLAIR MRI of the brain.\n\nFindings: " + " ".join(body + normal)
                + "\n\nConclusion: " + impression)
    else:
        text = impression + "\n\n" + " ".join(body) + " " + " ".join(normal)
    return text + "\n", omitted
