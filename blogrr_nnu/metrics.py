"""Segmentation metrics per case and over a folder of predictions (``blogrr_evaluate``).

Foreground is ``value > 0`` (multi-label maps score "any tumour"; pass labels, not probabilities). Empty
masks follow the table of :func:`binary_metrics` and ``docs/evaluation.md``; NaN means "undefined":
:func:`summarise` leaves NaNs out of the statistics and counts them; JSON holds them as ``null``.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from blogrr_nnu.image_io import Geometry, atomic_write, read_image

logger = logging.getLogger(__name__)

METRICS = ("dice", "hd95_mm", "sensitivity", "precision", "volume_pred_ml", "volume_ref_ml")
CSV_COLUMNS = ("case", *METRICS, "tp", "fp", "fn", "reference", "prediction")
REGRID_FIX = "predict again from the same input or resample the prediction onto the label's grid"


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it (or on the array border)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _directed_distances(src: np.ndarray, dst: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Distance (mm) from every surface voxel of ``src`` to the nearest surface voxel of ``dst``."""
    return ndimage.distance_transform_edt(~_surface(dst), sampling=spacing)[_surface(src)]


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> float:
    """95th percentile Hausdorff distance in mm between two non-empty boolean masks.

    Convention: the maximum of the two *directed* 95th percentiles (pred -> ref and ref -> pred), as the
    BraTS evaluation (DeepMind ``surface-distance``, ``compute_robust_hausdorff``) does. MedPy's ``hd95``
    pools both directed sets before taking one percentile (no larger, up to percentile interpolation).
    Surface voxels are mask minus its 6-connected erosion; percentiles interpolate linearly (numpy).

    Args:
        pred: boolean ``(X, Y, Z)``, non-empty.
        ref: boolean ``(X, Y, Z)``, non-empty, same shape.
        spacing: voxel size in mm along each axis.
    """
    # Crop to the union's bounding box (less EDT work): a voxel on the box edge borders the outside of
    # both masks, so it is a surface voxel with or without the crop, and no surface voxel is cut off.
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(pred | ref))
    p, r = pred[box], ref[box]
    return float(max(np.percentile(_directed_distances(p, r, spacing), 95),
                     np.percentile(_directed_distances(r, p, spacing), 95)))


def dice(a, b) -> float:
    """Dice of two masks, numpy arrays or torch tensors (foreground: non-zero); 1.0 when both are empty.

    The one Dice of the package's quick checks (validation, pseudo-label quality, registration, diagnostics);
    :func:`binary_metrics` gives it with the other metrics and NaN conventions of ``blogrr_evaluate``.

    >>> dice(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]))
    0.6666666666666666
    >>> dice(np.zeros(3), np.zeros(3))
    1.0
    """
    a, b = (np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x).astype(bool) for x in (a, b))
    denom = int(a.sum()) + int(b.sum())
    return 1.0 if denom == 0 else 2.0 * int(np.logical_and(a, b).sum()) / denom


def binary_metrics(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, float, float]) -> dict[str, float]:
    """Overlap, surface distance and volume of a predicted mask against a reference mask.

    Args:
        pred: predicted mask ``(X, Y, Z)``; foreground is ``value > 0``.
        ref: reference mask ``(X, Y, Z)``, same shape; foreground is ``value > 0``.
        spacing: voxel size in mm along X, Y, Z (use the reference's).

    Returns:
        ``dice`` (2TP / (2TP + FP + FN)), ``hd95_mm`` (see :func:`hd95`), ``sensitivity`` (TP / (TP + FN)),
        ``precision`` (TP / (TP + FP)), ``volume_pred_ml`` and ``volume_ref_ml`` (voxels x voxel volume /
        1000) and the voxel counts ``tp``, ``fp``, ``fn``. Empty masks (NaN = undefined):

        =========  =========  ====  =======  ===========  =========
        reference  predicted  dice  hd95_mm  sensitivity  precision
        =========  =========  ====  =======  ===========  =========
        empty      empty      1.0   0.0      1.0          1.0        (as the BraTS evaluation)
        empty      non-empty  0.0   NaN      NaN (0/0)    0.0
        non-empty  empty      0.0   NaN      0.0          NaN (0/0)
        =========  =========  ====  =======  ===========  =========

    Raises:
        ValueError: shapes differ or ``spacing`` is not one positive number per axis.
    """
    pred, ref = np.asarray(pred) > 0, np.asarray(ref) > 0
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}; {REGRID_FIX}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != ref.ndim or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be {ref.ndim} positive numbers (mm per voxel), got {spacing}")
    tp = int(np.count_nonzero(pred & ref))
    fp, fn = int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(ref)) - tp
    nan = float("nan")
    if tp + fp == 0 and tp + fn == 0:
        dice, dist = 1.0, 0.0
    elif tp + fp == 0 or tp + fn == 0:
        dice, dist = 0.0, nan
    else:
        dice, dist = 2 * tp / (2 * tp + fp + fn), hd95(pred, ref, spacing)
    ml = float(np.prod(spacing)) / 1000.0
    return {
        "dice": float(dice), "hd95_mm": dist,
        "sensitivity": tp / (tp + fn) if tp + fn else (1.0 if fp == 0 else nan),
        "precision": tp / (tp + fp) if tp + fp else (1.0 if fn == 0 else nan),
        "volume_pred_ml": (tp + fp) * ml, "volume_ref_ml": (tp + fn) * ml, "tp": tp, "fp": fp, "fn": fn,
    }


def summarise(per_case: list[dict[str, Any]]) -> dict[str, Any]:
    """Statistics of each metric over the cases, finite values only.

    Args:
        per_case: rows with the keys of :func:`binary_metrics` (rows with ``"error"`` are skipped).

    Returns:
        ``{"n_cases": int, "metrics": {metric: {"mean", "std", "median", "n", "n_nan"}}}``; ``std`` is the
        population standard deviation (ddof=0), ``n`` counts the finite values used and ``n_nan`` the cases
        left out because the metric is undefined for them. Statistics of no values are ``None``.
    """
    rows = [r for r in per_case if "error" not in r]
    out: dict[str, Any] = {"n_cases": len(rows), "metrics": {}}
    for m in METRICS:
        values = np.array([np.nan if r.get(m) is None else r[m] for r in rows], float)
        finite = values[np.isfinite(values)]
        stat = lambda fn: float(fn(finite)) if finite.size else None  # noqa: E731
        out["metrics"][m] = {"mean": stat(np.mean), "std": stat(np.std), "median": stat(np.median),
                             "n": int(finite.size), "n_nan": int(values.size - finite.size)}
    return out


def _grid_difference(ref: Geometry, pred: Geometry) -> str:
    fmt = lambda t: "(" + ", ".join(f"{v:g}" for v in t) + ")"  # noqa: E731  (float32 headers: 0.7, not 0.69999)
    parts = [f"{name} {fmt(getattr(ref, name))} vs {fmt(getattr(pred, name))}"
             for name, tol in (("shape", 0), ("spacing", 1e-4), ("origin", 1e-3), ("direction", 1e-4))
             if not np.allclose(getattr(ref, name), getattr(pred, name), atol=tol)]
    return "; ".join(parts) or "grids differ"


def _evaluate_case(job: tuple[str, str, str]) -> dict[str, Any]:
    case, ref_path, pred_path = job
    row: dict[str, Any] = {"case": case, "reference": ref_path, "prediction": pred_path}
    try:
        (ref, ref_geo), (pred, pred_geo) = read_image(ref_path), read_image(pred_path)
        if ref_geo.shape != pred_geo.shape or not ref_geo.close_to(pred_geo):
            raise ValueError(f"prediction {pred_path} and reference {ref_path} are on different grids "
                             f"(reference vs prediction: {_grid_difference(ref_geo, pred_geo)}); {REGRID_FIX}")
        row.update(binary_metrics(pred, ref, ref_geo.spacing))
    except ValueError as exc:
        row["error"] = str(exc)
    return row


def _list_cases(folder: Path, file_ending: str) -> dict[str, Path]:
    # Hidden files are skipped: atomic_write's temporary files start with "."
    return {p.name[: -len(file_ending)]: p for p in sorted(folder.iterdir())
            if p.is_file() and p.name.endswith(file_ending) and not p.name.startswith(".")
            and len(p.name) > len(file_ending)}


def evaluate_folders(ref_dir: str | os.PathLike, pred_dir: str | os.PathLike, file_ending: str = ".nii.gz",
                     num_processes: int = 1) -> dict[str, Any]:
    """Score every prediction in ``pred_dir`` against the label of the same case in ``ref_dir``.

    Files are paired by case id (file name minus ``file_ending``); metrics use the reference's spacing.

    Args:
        ref_dir: folder of reference labels ``<case><file_ending>``.
        pred_dir: folder of predictions with the same names.
        file_ending: file name ending of both folders.
        num_processes: cases scored in parallel (a process pool when > 1).

    Returns:
        ``{"ref_dir", "pred_dir", "file_ending", "per_case": [{"case", "reference", "prediction", metrics of
        :func:`binary_metrics`}], "summary": :func:`summarise` of per_case, "missing": [case ids with a
        reference but no prediction], "extra": [case ids with a prediction but no reference], "errors":
        [{"case", "reference", "prediction", "error"}]}``. Missing, extra and errored cases are not in the
        summary. A prediction on another grid than its label is an error naming both files and the fix.

    Raises:
        ValueError: a folder does not exist, ``ref_dir`` has no ``*<file_ending>`` file, num_processes < 1.
    """
    ref_dir, pred_dir = Path(ref_dir), Path(pred_dir)
    for name, folder in (("reference", ref_dir), ("prediction", pred_dir)):
        if not folder.is_dir():
            raise ValueError(f"{name} folder {folder} does not exist or is not a folder; check the path")
    if not file_ending or num_processes < 1:
        raise ValueError(f"need a file ending such as .nii.gz (got {file_ending!r}) and num_processes >= 1 "
                         f"(got {num_processes})")
    refs, preds = _list_cases(ref_dir, file_ending), _list_cases(pred_dir, file_ending)
    if not refs:
        raise ValueError(f"no *{file_ending} label file in {ref_dir}; point -ref at the labels folder "
                         f"(e.g. labelsTs) or set --file_ending")
    missing, extra = sorted(set(refs) - set(preds)), sorted(set(preds) - set(refs))
    jobs = [(c, str(refs[c]), str(preds[c])) for c in sorted(set(refs) & set(preds))]
    logger.info("evaluating %d case(s); %d missing, %d extra prediction(s)", len(jobs), len(missing), len(extra))
    if num_processes > 1 and len(jobs) > 1:
        # fork where available (as the rest of the package): no __main__ guard needed by callers
        ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(min(num_processes, len(jobs)), mp_context=ctx) as pool:
            rows = list(pool.map(_evaluate_case, jobs))
    else:
        rows = [_evaluate_case(j) for j in jobs]
    per_case, errors = [r for r in rows if "error" not in r], [r for r in rows if "error" in r]
    return {"ref_dir": str(ref_dir), "pred_dir": str(pred_dir), "file_ending": file_ending, "per_case": per_case,
            "summary": summarise(per_case), "missing": missing, "extra": extra, "errors": errors}


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


def write_results(result: dict[str, Any], json_path: str | os.PathLike,
                  csv_path: str | os.PathLike | None = None) -> None:
    """Atomically write an :func:`evaluate_folders` result as JSON (NaN as ``null``) and per-case CSV.

    The CSV has one row per evaluated case, columns :data:`CSV_COLUMNS`, undefined values as ``nan``.
    """
    text = json.dumps(_nan_to_none(result), indent=1, allow_nan=False)
    atomic_write(json_path, lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))
    if csv_path is not None:
        atomic_write(csv_path, lambda tmp: _write_csv(tmp, result["per_case"]))


def _write_csv(path: str, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def format_table(result: dict[str, Any]) -> str:
    """Text table of an :func:`evaluate_folders` result: per metric mean +- std, median, n, NaN count."""
    fmt = {"dice": ".4f", "sensitivity": ".4f", "precision": ".4f"}
    summary = result["summary"]
    head = f"{'metric':<16} {'mean +- std':>22} {'median':>10} {'n':>5} {'n_nan':>6}"
    lines = [f"{summary['n_cases']} case(s) evaluated, {len(result['missing'])} missing, "
             f"{len(result['extra'])} extra, {len(result['errors'])} error(s)", head, "-" * len(head)]
    for m, s in summary["metrics"].items():
        f = fmt.get(m, ".2f")
        mean_std = "n/a" if s["mean"] is None else f"{s['mean']:{f}} +- {s['std']:{f}}"
        median = "n/a" if s["median"] is None else f"{s['median']:{f}}"
        lines.append(f"{m:<16} {mean_std:>22} {median:>10} {s['n']:>5} {s['n_nan']:>6}")
    return "\n".join(lines)
