"""How well does report reading find the lesion sites a labelled report corpus states?

For a folder of reports ``<id>.txt`` and an ``expected.json`` (``{id: [{"side": "L"|"R"|"M", "site": ...}]}``,
the format of ``../shared/real_reports``), every report is parsed and drawn as
:func:`blogrr_nnu.reports.findings_to_mask` draws it (the same mask ``blogrr_report_to_mask`` writes), and
compared in template space with the *expected* mask:

* **expected mask**: each expected site is the union of its Hammers atlas labels (the atlas's own grouping,
  independent of the parser's vocabulary: lobes by the ``FL``/``TL``/``PL``/``OL``/``insula``/``CG`` label
  prefixes, deep structures by name, see :data:`SITE_STRUCTURES`); side ``L``/``R`` keeps that side's
  labels, ``M`` both sides (a midline structure is whole);
* **atlas Dice** of the report mask against the expected mask, averaged over the reports that expect at least
  one site; a report that expects none is a *control*, passed when it gives no mask;
* **side error**: more than :data:`SIDE_ERROR_FRACTION` of the report mask lies more than
  :data:`SIDE_ERROR_MM` into a hemisphere (LPS x, 0 = midline) that no expected site names. ``L``/``R`` name
  their hemisphere; ``M`` names both (a midline or unlateralised site says nothing against either side).
"""
from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from blogrr_nnu.atlas import hammers_regions, load_hammers
from blogrr_nnu.registration import dice
from blogrr_nnu.reports.files import ReportReadError, read_report
from blogrr_nnu.reports.masks import drawn_sites, findings_to_mask
from blogrr_nnu.reports.parser import parse_report
from blogrr_nnu.reports.roles import EXTENTS

logger = logging.getLogger(__name__)

SIDE_ERROR_MM = 5.0
SIDE_ERROR_FRACTION = 0.05
SIDES = ("L", "R", "M")
# Expected site -> Hammers atlas lobe (``HammersRegion.lobe``) or structure names.
SITE_LOBES = {"frontal": "frontal", "temporal": "temporal", "parietal": "parietal", "occipital": "occipital",
              "insula": "insula", "cingulate": "cingulate"}
SITE_STRUCTURES = {
    "thalamus": ("thalamus",),
    "cerebellum": ("cerebellum",),
    "brainstem": ("brainstem excluding substantia nigra", "substantia nigra"),
    "corpus callosum": ("corpus callosum",),
    "basal ganglia": ("caudate nucleus", "nucleus accumbens", "putamen", "pallidum"),
}
KNOWN_SITES = tuple(SITE_LOBES) + tuple(SITE_STRUCTURES)


class ExpectedLabelsError(ValueError):
    """An expected-sites file is missing, not JSON, or not in the ``{id: [{side, site}]}`` format."""


def load_expected(path: str | os.PathLike) -> dict[str, list[tuple[str, str]]]:
    """Read an expected-sites file.

    Args:
        path: JSON ``{report id: [{"side": "L"|"R"|"M", "site": one of KNOWN_SITES}, ...]}``.

    Returns:
        ``{report id: [(side, site), ...]}`` (an empty list: the report states no lesion site).

    Raises:
        ExpectedLabelsError: the file cannot be read, is not JSON, or an entry is malformed (the message
            names the entry and what is allowed).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ExpectedLabelsError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ExpectedLabelsError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise ExpectedLabelsError(f"{path}: expected a non-empty JSON object {{report id: [{{side, site}}, ...]}}")
    out: dict[str, list[tuple[str, str]]] = {}
    for rid, entries in data.items():
        if not isinstance(entries, list):
            raise ExpectedLabelsError(f"{path}: {rid!r} must map to a list of {{side, site}} objects")
        sites = []
        for e in entries:
            if not isinstance(e, dict) or e.get("side") not in SIDES or e.get("site") not in KNOWN_SITES:
                raise ExpectedLabelsError(f"{path}: {rid!r} has entry {e!r}; need side in {SIDES} and site in "
                                          f"{KNOWN_SITES}")
            sites.append((e["side"], e["site"]))
        out[str(rid)] = sites
    return out


@functools.lru_cache(maxsize=1)
def _lps_x() -> np.ndarray:
    """LPS x (mm) of every Hammers voxel centre, ``(X, Y, Z)``; x > 0 is the patient's left."""
    atlas, geometry = load_hammers()
    affine = geometry.affine_lps()
    return (affine[0, :3] @ np.indices(atlas.shape).reshape(3, -1) + affine[0, 3]).reshape(atlas.shape)


def _site_labels(site: str) -> list[int]:
    regions = hammers_regions()
    if site in SITE_LOBES:
        return [k for k, r in regions.items() if r.lobe == SITE_LOBES[site]]
    return [k for k, r in regions.items() if r.structure in SITE_STRUCTURES[site]]


def expected_mask(sites: list[tuple[str, str]]) -> np.ndarray:
    """Union of the Hammers labels of expected sites, bool ``(X, Y, Z)`` on the Hammers grid.

    ``L``/``R`` keep the labels of that side (a midline label is cut to that half); ``M`` keeps both sides.
    """
    atlas, _ = load_hammers()
    regions = hammers_regions()
    mask = np.zeros(atlas.shape, bool)
    for side, site in sites:
        for label in _site_labels(site):
            region_side = regions[label].side
            if side == "M" or region_side == {"L": "left", "R": "right"}[side]:
                mask |= atlas == label
            elif region_side == "midline":
                mask |= (atlas == label) & ((_lps_x() >= 0) if side == "L" else (_lps_x() <= 0))
    return mask


def side_error(mask: np.ndarray, sites: list[tuple[str, str]]) -> tuple[bool, float]:
    """Whether ``mask`` reaches into a hemisphere that no expected site names (see module docstring).

    Returns:
        ``(error, fraction)``: the fraction of mask voxels more than :data:`SIDE_ERROR_MM` into an unnamed
        hemisphere, and whether it exceeds :data:`SIDE_ERROR_FRACTION`.
    """
    named = {s for s, _ in sites}
    if "M" in named:
        named |= {"L", "R"}
    n = int(mask.sum())
    if n == 0:
        return False, 0.0
    x = _lps_x()
    far = np.zeros(mask.shape, bool)
    if "L" not in named:
        far |= x > SIDE_ERROR_MM
    if "R" not in named:
        far |= x < -SIDE_ERROR_MM
    fraction = float(np.logical_and(mask, far).sum() / n)
    return fraction > SIDE_ERROR_FRACTION, fraction


def _report_masks(folder: Path, ids: list[str], extents: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Parse each report once and draw it for every extent: ``{id: {"masks": {extent: mask}, ...}}``."""
    out: dict[str, dict[str, Any]] = {}
    for rid in ids:
        try:
            parsed = parse_report(read_report(folder / f"{rid}.txt"))
        except ReportReadError as exc:
            out[rid] = {"error": str(exc)}
            continue
        out[rid] = {"masks": {e: findings_to_mask(parsed, extent=e)[0].astype(bool) for e in extents},
                    "sites": {e: sorted(f"{side} {term}" for term, side in drawn_sites(parsed, e)) for e in extents}}
    return out


def score_corpus(folder: str | os.PathLike, expected_files: list[str | os.PathLike] | None = None, *,
                 extents: tuple[str, ...] = EXTENTS) -> dict[str, Any]:
    """Score report reading on a labelled report folder.

    Args:
        folder: the reports, ``<id>.txt`` (UTF-8).
        expected_files: expected-sites files; default every ``expected*.json`` of ``folder``
            (``expected.json`` first).
        extents: mask extents to score (see :data:`blogrr_nnu.reports.roles.EXTENTS`).

    Returns:
        ``{"corpus": str, "rows": [{"labels", "extent", "n_reports", "n_scored", "mean_dice", "side_errors":
        [ids], "controls": [ids], "controls_with_mask": [ids], "errors": [lines]}], "reports": {id: {labels file:
        {extent: {"dice", "side_error", "side_fraction", "found", "expected"}}}}}``.

    Raises:
        FileNotFoundError: ``folder`` is not a folder, or it holds no ``expected*.json`` and none was given.
        ExpectedLabelsError: an expected file is malformed or names a report with no ``<id>.txt``.
        ValueError: an unknown extent.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of reports")
    bad = [e for e in extents if e not in EXTENTS]
    if bad or not extents:
        raise ValueError(f"extents must be among {EXTENTS}, got {list(extents)}")
    if expected_files is None:
        expected_files = sorted(folder.glob("expected*.json"), key=lambda p: (p.name != "expected.json", p.name))
        if not expected_files:
            raise FileNotFoundError(f"{folder}: no expected*.json; give the labels file with --expected")
    labels = {Path(p).name: load_expected(p) for p in expected_files}
    ids = sorted({rid for table in labels.values() for rid in table})
    missing = [rid for rid in ids if not (folder / f"{rid}.txt").is_file()]
    if missing:
        raise ExpectedLabelsError(f"{folder}: no report file for {len(missing)} labelled id(s): "
                                  f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    drawn = _report_masks(folder, ids, tuple(extents))
    rows, reports = [], {rid: {} for rid in ids}
    for name, table in labels.items():
        for extent in extents:
            row = {"labels": name, "extent": extent, "n_reports": len(table), "side_errors": [], "controls": [],
                   "controls_with_mask": [], "errors": []}
            dices = []
            for rid, sites in table.items():
                if "error" in drawn[rid]:
                    row["errors"].append(drawn[rid]["error"])
                    continue
                mask = drawn[rid]["masks"][extent]
                entry = {"expected": [f"{s} {t}" for s, t in sites], "found": drawn[rid]["sites"][extent]}
                if not sites:
                    row["controls"].append(rid)
                    if mask.any():
                        row["controls_with_mask"].append(rid)
                    entry.update(dice=None, side_error=False, side_fraction=0.0)
                else:
                    d = dice(mask, expected_mask(sites))
                    err, fraction = side_error(mask, sites)
                    dices.append(d)
                    if err:
                        row["side_errors"].append(rid)
                    entry.update(dice=d, side_error=err, side_fraction=fraction)
                reports[rid].setdefault(name, {})[extent] = entry
            row["n_scored"] = len(dices)
            row["mean_dice"] = float(np.mean(dices)) if dices else None
            rows.append(row)
    return {"corpus": str(folder), "rows": rows, "reports": reports}


def format_corpus_table(result: dict[str, Any], *, details: bool = False) -> str:
    """Markdown table of :func:`score_corpus` (one row per labels file and extent), then the side errors and
    controls with a mask; with ``details``, every report whose Dice is below 0.9 or that has a side error."""
    lines = [f"corpus: {result['corpus']}", "",
             "| labels | extent | reports | mean atlas Dice | side errors | controls without a mask |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        mean = "n/a" if r["mean_dice"] is None else f"{r['mean_dice']:.3f}"
        controls = f"{len(r['controls']) - len(r['controls_with_mask'])}/{len(r['controls'])}"
        lines.append(f"| {r['labels']} | {r['extent']} | {r['n_reports']} | {mean} (n={r['n_scored']}) | "
                     f"{len(r['side_errors'])} | {controls} |")
    lines.append("")
    for r in result["rows"]:
        if r["side_errors"] or r["controls_with_mask"] or r["errors"]:
            lines.append(f"{r['labels']} / {r['extent']}: side errors {', '.join(r['side_errors']) or '-'}; "
                         f"controls with a mask {', '.join(r['controls_with_mask']) or '-'}"
                         + (f"; unreadable {len(r['errors'])}" if r["errors"] else ""))
    if details:
        for rid, by_labels in result["reports"].items():
            for name, by_extent in by_labels.items():
                for extent, e in by_extent.items():
                    if (e["dice"] is not None and e["dice"] < 0.9) or e["side_error"]:
                        lines.append(f"  {rid} {name} {extent}: Dice {e['dice']:.3f}"
                                     f"{' SIDE ERROR' if e['side_error'] else ''}; expected {e['expected']}, "
                                     f"found {e['found']}")
    return "\n".join(lines)
