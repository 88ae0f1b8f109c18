"""Parsed report -> pseudo-label mask in template (Hammers atlas, 1 mm MNI) space.

The mask is the union of the atlas regions of every lesion site:

* paired site, side ``left`` / ``right``: that side's labels; ``bilateral``, ``unspecified`` and
  ``midline`` use both sides (an unstated side cannot be guessed, and missing the lesion costs the
  upper loop more than a too-large region);
* unpaired structure (corpus callosum, brainstem, vermis, third ventricle): the whole structure;
  with a stated side ("left side of the pons") the half on that side of x = 0;
* a finding that crosses the midline adds the contralateral homologue of each of its paired sites
  and the corpus callosum (label 44), the route by which gliomas cross;
* derived regions (``derived`` in ``vocabulary.yaml``): callosal thirds along the anterior-posterior
  axis, periventricular white matter (white matter within ``distance_mm`` of that side's lateral
  ventricle) and centrum semiovale (white matter above that side's lateral ventricle body, within
  its anterior-posterior extent). White matter = tissue-map WM probability >= ``wm_probability``.

Registration of the mask to case space is done elsewhere.
"""
from __future__ import annotations

import functools
import logging
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from blogrr_nnu.atlas import hammers_regions, load_hammers, load_tissue_maps
from blogrr_nnu.image_io import Geometry, array_to_sitk, sitk_to_array
from blogrr_nnu.reports.parser import ParsedReport, Site
from blogrr_nnu.reports.roles import DEFAULT_EXTENT, check_extent, refine_hemispheres, role_summary
from blogrr_nnu.reports.vocabulary import Term, Vocabulary, load_vocabulary

logger = logging.getLogger(__name__)
CORPUS_CALLOSUM_LABEL = 44


@functools.lru_cache(maxsize=1)
def _atlas() -> tuple[np.ndarray, Geometry]:
    return load_hammers()


@functools.lru_cache(maxsize=1)
def _physical() -> np.ndarray:
    """LPS millimetre coordinates of every atlas voxel centre, ``(3, X, Y, Z)`` float32."""
    _, geometry = _atlas()
    idx = np.indices(geometry.shape, dtype=np.float32)
    affine = geometry.affine_lps().astype(np.float32)
    return np.einsum("ij,jxyz->ixyz", affine[:3, :3], idx) + affine[:3, 3, None, None, None]


@functools.lru_cache(maxsize=1)
def _white_matter_probability() -> np.ndarray:
    """Tissue-map WM probability resampled (linear) onto the atlas grid, ``(X, Y, Z)`` float32."""
    maps, tissue_geometry = load_tissue_maps()
    _, geometry = _atlas()
    wm = array_to_sitk(maps[1], tissue_geometry)
    reference = array_to_sitk(np.zeros(geometry.shape, np.uint8), geometry)
    resampled = sitk.Resample(wm, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk_to_array(resampled)


def _half(side: str) -> np.ndarray:
    """Voxels on one side of x = 0 (LPS: +x is the patient's left); the x = 0 plane is in both."""
    x = _physical()[0]
    return x >= 0 if side == "left" else x <= 0


def _labels_mask(labels: tuple[int, ...], side: str | None) -> np.ndarray:
    """Union of ``labels``; midline labels are cut to the ``side`` half when a side is given."""
    atlas, _ = _atlas()
    regions = hammers_regions()
    mask = np.zeros(atlas.shape, bool)
    for label in labels:
        region = atlas == label
        if side in ("left", "right") and regions[label].side == "midline":
            region &= _half(side)
        mask |= region
    return mask


def _derived_mask(term: Term, side: str) -> np.ndarray:
    """Atlas-derived region of one side (``left``/``right``) or of the whole structure (``midline``)."""
    spec, atlas = term.derived or {}, _atlas()[0]
    if spec["kind"] == "label_part":
        base = np.isin(atlas, spec["source_labels"])
        # LPS y grows posteriorly, so the anterior part (index 0) has the smallest y.
        y = _physical()[1][base]
        edges = np.linspace(y.min(), y.max(), int(spec["parts"]) + 1)
        lo, hi = edges[int(spec["index"])], edges[int(spec["index"]) + 1]
        part = np.zeros_like(base)
        part[base] = (y >= lo) & (y <= hi)
        return part & _half(side) if side in ("left", "right") else part
    sides = [side] if side in ("left", "right") else ["left", "right"]
    wm = _white_matter_probability() >= float(spec["wm_probability"])
    out = np.zeros(atlas.shape, bool)
    for s in sides:
        ventricle = np.isin(atlas, spec["ventricle_labels"][s])
        if spec["kind"] == "wm_near_ventricles":
            spacing = _atlas()[1].spacing
            near = ndimage.distance_transform_edt(~ventricle, sampling=spacing) <= float(spec["distance_mm"])
            region = wm & near & ~ventricle
        else:  # wm_above_ventricles: centrum semiovale
            z, y = _physical()[2], _physical()[1]
            top = z[ventricle].max() + float(spec["margin_mm"])
            region = wm & (z > top) & (y >= y[ventricle].min()) & (y <= y[ventricle].max())
            region &= ~np.isin(atlas, [CORPUS_CALLOSUM_LABEL, 17, 18, 0])  # cerebral white matter only
        out |= region & _half(s)
    return out


def _compute_site_mask(term: Term, side: str) -> np.ndarray:
    sides = [side] if side in ("left", "right") else (["left", "right"] if term.paired else ["midline"])
    mask = np.zeros(_atlas()[0].shape, bool)
    for s in sides:
        mask |= _derived_mask(term, s) if term.derived else _labels_mask(term.labels_for(s), s)
    return mask


@functools.lru_cache(maxsize=256)
def _default_site_mask(term_key: str, side: str) -> np.ndarray:
    mask = _compute_site_mask(load_vocabulary()[term_key], side)
    mask.flags.writeable = False  # shared by the cache: callers must copy
    return mask


def site_mask(term_key: str, side: str, *, vocabulary: Vocabulary | None = None) -> np.ndarray:
    """Region of one site in template space.

    Args:
        term_key: vocabulary term, e.g. ``"frontal"``.
        side: ``left``, ``right``, ``bilateral``, ``midline`` or ``unspecified``.
        vocabulary: site table (the package's, with cached masks, when ``None``).

    Returns:
        Boolean mask ``(X, Y, Z)`` on the Hammers grid (read-only; copy before modifying).
    """
    if vocabulary is None:
        return _default_site_mask(term_key, side)
    return _compute_site_mask(vocabulary[term_key], side)


def drawn_sites(parsed: ParsedReport, extent: str = DEFAULT_EXTENT,
                vocabulary: Vocabulary | None = None) -> list[tuple[str, str]]:
    """(term, side) pairs a mask of ``extent`` draws: the extent's sites, midline-crossing findings widened to
    both sides + callosum, hemispheres only where no part of them is drawn (:func:`roles.refine_hemispheres`).

    Raises:
        ValueError: unknown extent.
    """
    vocabulary = vocabulary or load_vocabulary()
    wanted = check_extent(extent)
    pairs = []
    for finding in parsed.findings:
        sites = [s for s in finding.sites if s.role in wanted]
        for site in sites:
            side = "bilateral" if finding.crosses_midline and site.side in ("left", "right") else site.side
            pairs.append((site.term, side))
        if finding.crosses_midline and sites:
            pairs.append(("corpus_callosum", "midline"))
    return refine_hemispheres(list(dict.fromkeys(pairs)), vocabulary)


def findings_to_mask(parsed: ParsedReport, *, extent: str = DEFAULT_EXTENT, dilate_mm: float = 0.0,
                     vocabulary: Vocabulary | None = None) -> tuple[np.ndarray, Geometry]:
    """Pseudo-label of a parsed report in template space.

    Args:
        parsed: output of :func:`blogrr_nnu.reports.parse_report`.
        extent: ``"whole_tumour"`` (default: lesion + oedema + necrosis sites) or ``"lesion"`` (lesion sites
            only); see :mod:`blogrr_nnu.reports.roles`.
        dilate_mm: grow the union by this distance (mm, Euclidean), kept inside the atlas brain.
        vocabulary: site table (the package's when ``None``).

    Returns:
        ``(mask, geometry)``: uint8 ``(X, Y, Z)`` in {0, 1} on the 1 mm Hammers grid, and that grid.
        A report without sites gives an all-zero mask (the parser has already warned).

    Raises:
        ValueError: ``dilate_mm`` is negative or not finite, or ``extent`` is unknown.
    """
    if not np.isfinite(dilate_mm) or dilate_mm < 0:
        raise ValueError(f"dilate_mm must be a finite number >= 0, got {dilate_mm}")
    atlas, geometry = _atlas()
    mask = np.zeros(atlas.shape, bool)
    for term, side in drawn_sites(parsed, extent, vocabulary or load_vocabulary()):
        mask |= site_mask(term, side, vocabulary=vocabulary)
    if dilate_mm > 0 and mask.any():
        mask = (ndimage.distance_transform_edt(~mask, sampling=geometry.spacing) <= dilate_mm) & (atlas > 0)
    if not mask.any():
        logger.warning("report yields an empty template mask (no lesion site)")
    return mask.astype(np.uint8), geometry


def _term_labels(term: Term, side: str) -> list[int]:
    if term.derived:
        return [CORPUS_CALLOSUM_LABEL] if term.derived["kind"] == "label_part" else []
    sides = [side] if side in ("left", "right") else (["left", "right"] if term.paired else ["midline"])
    return sorted({label for s in sides for label in term.labels_for(s)})


def matched_labels(parsed: ParsedReport, *, extent: str = DEFAULT_EXTENT,
                   vocabulary: Vocabulary | None = None) -> list[int]:
    """Hammers label ids the mask is made of (sorted).

    Label-list sites give their labels (a midline label cut to one half is still listed); callosal
    thirds give 44; white-matter regions (periventricular, centrum semiovale) are derived from
    tissue maps, not labels, and add none (see :func:`explain`).
    """
    vocabulary = vocabulary or load_vocabulary()
    out: set[int] = set()
    for term, side in drawn_sites(parsed, extent, vocabulary):
        out.update(_term_labels(vocabulary[term], side))
    return sorted(out)


def _site_dict(site: Site, vocabulary: Vocabulary) -> dict[str, Any]:
    regions = hammers_regions()
    term = vocabulary[site.term]
    return {
        "term": site.term, "side": site.side, "side_source": site.side_source, "role": site.role, "text": site.text,
        "span": list(site.span), "side_span": list(site.side_span) if site.side_span else None,
        "labels": [{"id": i, "name": regions[i].name} for i in _term_labels(term, site.side)],
        "derived": dict(term.derived) if term.derived else None,
    }


def explain(parsed: ParsedReport, *, extent: str = DEFAULT_EXTENT,
            vocabulary: Vocabulary | None = None) -> dict[str, Any]:
    """JSON-serialisable account of how the report became a mask.

    Returns:
        ``{"findings": [{text, span, role, size_mm, size_span, count, crosses_midline, sites: [... role ...]}],
        "extent", "drawn": ["<side> <term>", ...], "roles": {role: [...]}, "matched_labels": [{id, name}],
        "size_mm", "count", "crosses_midline", "excluded": [{term, text, span, reason}], "warnings": [...]}``;
        ``drawn`` are the (term, side) pairs the mask of ``extent`` is made of, ``roles`` lists every site
        mention by role (lesion, oedema, necrosis, and the undrawn mass_effect and hedged ones).
    """
    vocabulary = vocabulary or load_vocabulary()
    regions = hammers_regions()
    return {
        "findings": [{
            "text": f.text, "span": list(f.span), "role": f.role, "size_mm": list(f.size_mm) if f.size_mm else None,
            "size_span": list(f.size_span) if f.size_span else None, "count": f.count,
            "crosses_midline": f.crosses_midline, "sites": [_site_dict(s, vocabulary) for s in f.sites],
        } for f in parsed.findings],
        "extent": extent,
        "drawn": [f"{side} {term}" for term, side in drawn_sites(parsed, extent, vocabulary)],
        "roles": role_summary(parsed.findings, parsed.excluded),
        "matched_labels": [{"id": i, "name": regions[i].name}
                           for i in matched_labels(parsed, extent=extent, vocabulary=vocabulary)],
        "size_mm": list(parsed.size_mm) if parsed.size_mm else None,
        "count": parsed.count,
        "crosses_midline": parsed.crosses_midline,
        "excluded": [{"term": e.term, "text": e.text, "span": list(e.span), "reason": e.reason} for e in parsed.excluded],
        "warnings": list(parsed.warnings),
    }
