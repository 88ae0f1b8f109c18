"""How good are report pseudo-labels? Compare them, in each case's native grid, with ground truth.

For every case of a raw dataset that has an image, a report and a ground-truth label (``imagesTrTumor``
+ ``reportsTr`` + ``labelsTrTumor``, ``imagesTs`` + ``reportsTs`` + ``labelsTs``):

1. parse the report and draw its template-space mask (:func:`blogrr_nnu.reports.findings_to_mask`);
2. register the case to the template (channel from
   :func:`blogrr_nnu.planners.fingerprint.registration_channel`) with
   :func:`blogrr_nnu.registration.register_to_template`;
3. warp the mask onto the case grid (nearest neighbour, :func:`blogrr_nnu.registration.warp_to_case`)
   and keep it inside the brain (voxels where any channel is non-zero), as the trainer will;
4. score it against the label:

   * ``dice``: Dice(P, G);
   * ``coverage``: |P & G| / |G|, the fraction of tumour inside the pseudo-label. This is what the
     upper loop needs most: a lobe-sized P always has a low Dice with a tumour, but a P that misses
     the tumour teaches the threshold network the wrong region;
   * ``volume_ratio``: |P| / |G|;
   * ``registration_dice``: brain Dice of the registration (:class:`RegistrationResult.brain_dice`).

A report naming no lesion site gives an empty P: coverage, Dice and volume ratio 0, flagged ``no_site``.
"""
from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from blogrr_nnu.image_io import Geometry, array_to_sitk, read_image, sitk_to_array
from blogrr_nnu.planners.fingerprint import load_case_channels, registration_channel
from blogrr_nnu.raw_dataset import RawCase, list_cases, load_dataset_json
from blogrr_nnu.registration import dice, register_to_template, warp_to_case
from blogrr_nnu.reports.files import read_report
from blogrr_nnu.reports.masks import findings_to_mask
from blogrr_nnu.reports.parser import parse_report
from blogrr_nnu.reports.roles import DEFAULT_EXTENT, check_extent

logger = logging.getLogger(__name__)

METRICS = ("dice", "coverage", "volume_ratio", "registration_dice")
# SimpleITK reads a sampling seed of 0 as "seed from the wall clock" (sitkWallClock == 0), which makes
# registration, and so every number here, change from run to run. Default to a fixed non-zero seed.
DEFAULT_SEED = 1
SPLITS = {"tumor": "imagesTrTumor", "test": "imagesTs"}


def native_pseudo_label(report_text: str, channels: np.ndarray, geometry: Geometry, reg_channel: int, *,
                        dilate_mm: float = 0.0, seed: int = DEFAULT_SEED,
                        extent: str = DEFAULT_EXTENT) -> tuple[np.ndarray, dict[str, Any]]:
    """Report pseudo-label of one case on the case's own grid.

    Args:
        report_text: the report.
        channels: ``(C, X, Y, Z)`` skull-stripped images of the case (zero outside the brain).
        geometry: the case grid (:class:`blogrr_nnu.image_io.Geometry`).
        reg_channel: index of the channel registered to the T1 template.
        dilate_mm: grow the template mask by this distance in mm first.
        seed: seed of the registration's metric sampling (not 0: SimpleITK reads 0 as "wall clock").
        extent: ``whole_tumour`` or ``lesion`` (:mod:`blogrr_nnu.reports.roles`).

    Returns:
        ``(mask, info)``: bool ``(X, Y, Z)`` pseudo-label inside the brain, and ``{"sites": {term: side},
        "no_site": bool, "registration_dice": float, "warnings": [...]}``.
    """
    parsed = parse_report(report_text)
    template_mask, template_geometry = findings_to_mask(parsed, dilate_mm=dilate_mm, extent=extent)
    registration = register_to_template(channels[reg_channel], geometry, seed=seed)
    brain = np.any(channels != 0, axis=0)
    info = {"sites": parsed.site_sides(extent), "no_site": not template_mask.any(),
            "registration_dice": registration.brain_dice, "warnings": list(parsed.warnings)}
    if not template_mask.any():
        return np.zeros(brain.shape, bool), info
    warped = warp_to_case(array_to_sitk(template_mask, template_geometry), geometry,
                          registration.case_to_template, nearest=True)
    return (sitk_to_array(warped) > 0) & brain, info


def score(pseudo: np.ndarray, tumour: np.ndarray, spacing: tuple[float, float, float]) -> dict[str, float | None]:
    """Dice, coverage and volume ratio of a pseudo-label ``P`` against a tumour label ``G``.

    Args:
        pseudo: bool ``(X, Y, Z)``.
        tumour: bool ``(X, Y, Z)``, same grid.
        spacing: voxel size in mm (for the volumes).

    Returns:
        ``dice``, ``coverage`` (|P & G| / |G|), ``volume_ratio`` (|P| / |G|), ``pseudo_ml``, ``tumour_ml``;
        coverage and volume ratio are ``None`` when G is empty (undefined).
    """
    n_p, n_g = int(pseudo.sum()), int(tumour.sum())
    voxel_ml = float(np.prod(spacing)) / 1000.0
    return {
        "dice": dice(pseudo, tumour),
        "coverage": float(np.logical_and(pseudo, tumour).sum() / n_g) if n_g else None,
        "volume_ratio": n_p / n_g if n_g else None,
        "pseudo_ml": round(n_p * voxel_ml, 3),
        "tumour_ml": round(n_g * voxel_ml, 3),
    }


def case_quality(case: RawCase, reg_channel: int, dilate_mm: float = 0.0, seed: int = DEFAULT_SEED,
                 extent: str = DEFAULT_EXTENT) -> dict[str, Any]:
    """Quality of the report pseudo-label of one case (see module docstring).

    Returns:
        ``case``, ``split``, ``sites``, ``no_site``, ``dice``, ``coverage``, ``volume_ratio``,
        ``pseudo_ml``, ``tumour_ml``, ``registration_dice``, ``warnings``; or ``case``, ``split`` and
        ``error`` (one line naming the file) when the case cannot be scored.
    """
    out: dict[str, Any] = {"case": case.case_id, "split": case.role}
    try:
        text = read_report(case.report)
        channels, geometry = load_case_channels(case)
        label, label_geometry = read_image(case.label)
        if not label_geometry.close_to(geometry):
            raise ValueError(f"{case.label}: label grid differs from the image grid; run blogrr_verify_dataset")
        pseudo, info = native_pseudo_label(text, channels, geometry, reg_channel, dilate_mm=dilate_mm, seed=seed,
                                           extent=extent)
    except ValueError as exc:  # ReportReadError, unreadable image, empty image: one line naming the file
        out["error"] = str(exc).splitlines()[0]
        return out
    out.update(sites=info["sites"], no_site=info["no_site"])
    out.update(score(pseudo, label > 0, geometry.spacing))
    out.update(registration_dice=info["registration_dice"], warnings=info["warnings"])
    if out["coverage"] is None:
        out["warnings"].append(f"{case.label}: ground truth is empty; coverage and volume ratio undefined")
    return out


def _case_job(job: tuple[RawCase, int, float, int, str]) -> dict[str, Any]:
    return case_quality(*job)


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean and (population) standard deviation of each metric, per split and over all cases.

    Returns:
        ``{split or "all": {"n": int, "n_no_site": int, "<metric>": {"mean", "std", "n"}}}``; cases with an
        error, and undefined values (empty ground truth), are left out of the statistics.
    """
    out: dict[str, dict[str, Any]] = {}
    for split in [*SPLITS, "all"]:
        chosen = [r for r in rows if "error" not in r and (split == "all" or r["split"] == split)]
        if not chosen:
            continue
        stats: dict[str, Any] = {"n": len(chosen), "n_no_site": sum(bool(r["no_site"]) for r in chosen)}
        for m in METRICS:
            values = np.array([r[m] for r in chosen if r[m] is not None], float)
            stats[m] = {"mean": float(values.mean()) if values.size else None,
                        "std": float(values.std()) if values.size else None, "n": int(values.size)}
        out[split] = stats
    return out


def dataset_quality(folder: str | Path, *, num_processes: int = 1, dilate_mm: float = 0.0, seed: int = DEFAULT_SEED,
                    progress: bool = True, extent: str = DEFAULT_EXTENT,
                    splits: tuple[str, ...] = ("tumor",)) -> dict[str, Any]:
    """Score the report pseudo-labels of every case with image, report and label in a raw dataset.

    Args:
        folder: the ``DatasetXXX_Name`` folder.
        num_processes: worker processes (one case each; registration itself runs single-threaded).
        dilate_mm: grow every template mask by this distance in mm.
        seed: registration seed (same non-zero seed, same numbers; 0 means "wall clock" to SimpleITK).
        progress: show a progress bar.
        extent: pseudo-label extent, ``whole_tumour`` or ``lesion`` (:mod:`blogrr_nnu.reports.roles`).
        splits: which of :data:`SPLITS` to score (default: tumour training cases only; ``"test"`` reads test labels,
            which must never guide a choice).

    Returns:
        ``{"dataset": str, "registration_channel": int, "dilate_mm", "seed", "extent", "cases": [per-case dicts of
        :func:`case_quality`], "summary": :func:`summarize` of the cases}``.

    Raises:
        DatasetJsonError: dataset.json is missing or malformed.
        ValueError: no case has image, report and label together, or an unknown extent.
    """
    check_extent(extent)
    folder = Path(folder)
    dj = load_dataset_json(folder)
    reg_channel = registration_channel(dj["channel_names"])
    cases_by_role, _ = list_cases(folder, dj)
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; choose from {', '.join(SPLITS)}")
    cases = [c for role in splits for c in cases_by_role.get(role, []) if c.report is not None and c.label is not None]
    if not cases:
        raise ValueError(f"{folder}: no case has an image, a report and a ground-truth label "
                         f"(imagesTrTumor + reportsTr + labelsTrTumor"
                         + (", or imagesTs + reportsTs + labelsTs)" if "test" in splits else "; --include_test adds "
                            "imagesTs + reportsTs + labelsTs)"))
    logger.info("scoring %d case(s), registration channel %d (%s)", len(cases), reg_channel,
                dj["channel_names"][str(reg_channel)])
    jobs = [(c, reg_channel, float(dilate_mm), int(seed), extent) for c in cases]
    bar = dict(total=len(jobs), desc="register + score", unit="case", disable=not progress)
    if num_processes > 1 and len(jobs) > 1:
        # fork where available: workers inherit the imported atlas stack instead of re-importing it
        ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(min(num_processes, len(jobs)), mp_context=ctx) as pool:
            rows = list(tqdm(pool.map(_case_job, jobs), **bar))
    else:
        rows = [_case_job(j) for j in tqdm(jobs, **bar)]
    return {"dataset": str(folder), "registration_channel": reg_channel, "dilate_mm": float(dilate_mm),
            "seed": int(seed), "extent": extent, "cases": rows, "summary": summarize(rows)}


def format_table(result: dict[str, Any]) -> str:
    """Per-case table and per-split mean +- std of a :func:`dataset_quality` result."""
    def num(v: float | None, width: int = 8) -> str:
        return f"{'n/a':>{width}}" if v is None else f"{v:{width}.3f}"

    head = f"{'case':<24} {'split':<6} {'dice':>8} {'coverage':>8} {'vol.ratio':>9} {'reg.dice':>8}  sites"
    lines = [head, "-" * len(head)]
    for r in result["cases"]:
        if "error" in r:
            lines.append(f"{r['case']:<24} {r['split']:<6} ERROR {r['error']}")
            continue
        sites = ", ".join(f"{s} {t}" for t, s in r["sites"].items()) or "NO SITE (coverage counted as 0)"
        lines.append(f"{r['case']:<24} {r['split']:<6} {num(r['dice'])} {num(r['coverage'])} "
                     f"{num(r['volume_ratio'], 9)} {num(r['registration_dice'])}  {sites}")
    lines.append("")
    for split, s in result["summary"].items():
        parts = [f"{m} {s[m]['mean']:.3f} +- {s[m]['std']:.3f}" if s[m]["mean"] is not None else f"{m} n/a"
                 for m in METRICS]
        note = f", {s['n_no_site']} without a site (counted as coverage 0)" if s["n_no_site"] else ""
        lines.append(f"{split} (n={s['n']}{note}): " + "; ".join(parts))
    return "\n".join(lines)
