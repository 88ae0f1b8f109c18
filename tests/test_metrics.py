"""Metrics against analytic values and brute force; ``blogrr_evaluate`` in-process on tiny NIfTI folders."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from blogrr_nnu.commands.evaluate import main
from blogrr_nnu.image_io import Geometry, read_image, write_image
from blogrr_nnu.metrics import METRICS, binary_metrics, evaluate_folders, format_table, summarise

SHAPE = (20, 22, 24)
SPACING = (0.7, 1.3, 2.5)
NAN = float("nan")


def box(lo: tuple[int, int, int], hi: tuple[int, int, int], shape=SHAPE) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return mask


def surface_points(mask: np.ndarray, spacing) -> np.ndarray:
    """(N, 3) mm coordinates of voxels with a face neighbour outside the mask (outside the array counts)."""
    p = np.pad(mask, 1)
    interior = p[1:-1, 1:-1, 1:-1].copy()
    for axis in range(3):
        for step in (-1, 1):
            interior &= np.roll(p, step, axis=axis)[1:-1, 1:-1, 1:-1]
    return np.argwhere(mask & ~interior) * np.asarray(spacing)


def brute_directed(a: np.ndarray, b: np.ndarray, spacing) -> np.ndarray:
    return cdist(surface_points(a, spacing), surface_points(b, spacing)).min(axis=1)


def same(a: float | None, b: float) -> bool:
    """JSON ``null`` stands for NaN."""
    return (a is None and math.isnan(b)) or (a is not None and not math.isnan(b) and a == b)


# --------------------------------------------------------------------------- binary_metrics


def test_overlap_and_volumes_of_two_boxes_are_analytic():
    ref = box((4, 4, 4), (12, 12, 12))     # 8*8*8 = 512 voxels
    pred = box((4, 4, 6), (12, 12, 16))    # 8*8*10 = 640 voxels, overlap 8*8*6 = 384
    m = binary_metrics(pred.astype(np.uint8) * 2, ref.astype(np.uint8), SPACING)  # any value > 0 is foreground
    assert (m["tp"], m["fp"], m["fn"]) == (384, 256, 128)
    assert m["dice"] == pytest.approx(2 * 384 / (512 + 640))
    assert m["sensitivity"] == pytest.approx(384 / 512)
    assert m["precision"] == pytest.approx(384 / 640)
    voxel_ml = 0.7 * 1.3 * 2.5 / 1000
    assert m["volume_ref_ml"] == pytest.approx(512 * voxel_ml)
    assert m["volume_pred_ml"] == pytest.approx(640 * voxel_ml)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 3])
def test_hd95_of_shifted_cube_is_shift_times_spacing_along_that_axis(axis, k):
    # Every voxel of the trailing face (a sixth of the surface, well over 5 %) is exactly k voxels from the
    # other cube's surface along `axis` and no surface voxel is farther, so both 95th percentiles are k * s.
    ref = box((4, 4, 4), (12, 12, 12))
    pred = np.roll(ref, k, axis=axis)
    m = binary_metrics(pred, ref, SPACING)
    assert m["hd95_mm"] == pytest.approx(k * SPACING[axis], abs=1e-6)
    assert binary_metrics(ref, pred, SPACING)["hd95_mm"] == pytest.approx(k * SPACING[axis], abs=1e-6)
    assert m["dice"] == pytest.approx((8 - k) / 8)


def test_hd95_is_max_of_directed_percentiles_like_brute_force_and_not_pooled():
    # A spurious blob is ~8 % of the predicted surface: the directed pred -> ref 95th percentile sees it,
    # the pooled percentile (MedPy) does not. The reference touches the array border (border voxels are surface).
    ref = box((0, 2, 2), (9, 10, 11))
    pred = ref | box((15, 17, 19), (18, 20, 22))
    d_pr, d_rp = brute_directed(pred, ref, SPACING), brute_directed(ref, pred, SPACING)
    expected = max(np.percentile(d_pr, 95), np.percentile(d_rp, 95))
    pooled = np.percentile(np.hstack([d_pr, d_rp]), 95)
    got = binary_metrics(pred, ref, SPACING)["hd95_mm"]
    assert got == pytest.approx(expected, abs=1e-6)
    assert got > pooled + 5.0
    assert binary_metrics(ref, pred, SPACING)["hd95_mm"] == pytest.approx(expected, abs=1e-6)  # symmetric


def test_hd95_of_irregular_masks_matches_brute_force():
    rng = np.random.default_rng(0)
    grid = np.indices(SHAPE).transpose(1, 2, 3, 0) * np.asarray(SPACING)
    centre = np.asarray(SHAPE) * np.asarray(SPACING) / 2
    ref = np.linalg.norm(grid - centre, axis=-1) < 9.0
    pred = (np.linalg.norm(grid - centre - (2.0, -1.5, 3.0), axis=-1) < 8.0) & (rng.random(SHAPE) > 0.05)
    d_pr, d_rp = brute_directed(pred, ref, SPACING), brute_directed(ref, pred, SPACING)
    expected = max(np.percentile(d_pr, 95), np.percentile(d_rp, 95))
    assert binary_metrics(pred, ref, SPACING)["hd95_mm"] == pytest.approx(expected, abs=1e-6)


def test_surface_distances_equal_brute_force_in_both_directions():
    # The building block of HD95, compared as whole sorted sets (a percentile alone can hide a wrong
    # surface definition): surface = voxels with a face neighbour outside the mask or the array.
    from blogrr_nnu.metrics import _directed_distances

    rng = np.random.default_rng(1)
    ref = box((0, 3, 2), (11, 15, 14)) & (rng.random(SHAPE) > 0.1)
    pred = box((4, 6, 5), (16, 22, 20)) & (rng.random(SHAPE) > 0.1)
    for a, b in ((pred, ref), (ref, pred)):
        got = np.sort(_directed_distances(a, b, SPACING))
        np.testing.assert_allclose(got, np.sort(brute_directed(a, b, SPACING)), atol=1e-9)


@pytest.mark.parametrize("ref_empty, pred_empty, expected", [
    (True, True, {"dice": 1.0, "hd95_mm": 0.0, "sensitivity": 1.0, "precision": 1.0}),
    (True, False, {"dice": 0.0, "hd95_mm": NAN, "sensitivity": NAN, "precision": 0.0}),
    (False, True, {"dice": 0.0, "hd95_mm": NAN, "sensitivity": 0.0, "precision": NAN}),
])
def test_empty_mask_conventions(ref_empty, pred_empty, expected):
    cube = box((3, 3, 3), (7, 7, 7))
    empty = np.zeros(SHAPE, bool)
    m = binary_metrics(empty if pred_empty else cube, empty if ref_empty else cube, SPACING)
    for key, value in expected.items():
        assert (math.isnan(m[key]) and math.isnan(value)) or m[key] == value, key
    assert m["volume_ref_ml"] == (0.0 if ref_empty else pytest.approx(64 * 0.7 * 1.3 * 2.5 / 1000))


def test_bad_inputs_raise_value_errors_that_say_what_to_do():
    with pytest.raises(ValueError, match="resample the prediction"):
        binary_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="positive numbers"):
        binary_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="3 positive"):
        binary_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), (1.0, 1.0))


def test_summarise_uses_finite_values_only_and_counts_nans():
    rows = [{m: v for m in METRICS} for v in (1.0, 0.5, NAN, 0.0)] + [{"case": "x", "error": "unreadable"}]
    for r in rows[:4]:
        r["precision"] = NAN
    s = summarise(rows)
    assert s["n_cases"] == 4
    dice = s["metrics"]["dice"]
    assert dice["n"] == 3 and dice["n_nan"] == 1
    assert dice["mean"] == pytest.approx(0.5) and dice["median"] == pytest.approx(0.5)
    assert dice["std"] == pytest.approx(np.std([1.0, 0.5, 0.0]))
    assert s["metrics"]["precision"] == {"mean": None, "std": None, "median": None, "n": 0, "n_nan": 4}


# --------------------------------------------------------------------------- folders and CLI


def geometry(spacing=SPACING, origin=(-5.0, 3.0, 10.0)) -> Geometry:
    return Geometry(tuple(spacing), tuple(origin), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), SHAPE)


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """labels/ and preds/: a, b, e, f scorable; c on another grid; d without prediction; x without label."""
    ref_dir, pred_dir = tmp_path / "labels", tmp_path / "preds"
    geo = geometry()
    empty = np.zeros(SHAPE, np.uint8)
    pairs = {
        "a": (box((4, 4, 4), (12, 12, 12)), box((5, 4, 6), (12, 13, 14))),
        "b": (box((2, 3, 4), (9, 9, 9)), np.roll(box((2, 3, 4), (9, 9, 9)), 2, axis=2) * 2),  # label 2 is foreground
        "e": (empty, empty),                                   # both empty: a perfect case
        "f": (box((6, 6, 6), (10, 10, 10)), empty),            # missed lesion: HD95 undefined
    }
    scored = {}
    for case, (ref, pred) in pairs.items():
        write_image(ref_dir / f"{case}.nii.gz", ref.astype(np.uint8), geo)
        write_image(pred_dir / f"{case}.nii.gz", pred.astype(np.uint8), geo)
        scored[case] = (ref, pred)
    write_image(ref_dir / "c.nii.gz", box((4, 4, 4), (8, 8, 8)).astype(np.uint8), geo)
    write_image(pred_dir / "c.nii.gz", box((4, 4, 4), (8, 8, 8)).astype(np.uint8), geometry(origin=(0.0, 0.0, 0.0)))
    write_image(ref_dir / "d.nii.gz", box((4, 4, 4), (8, 8, 8)).astype(np.uint8), geo)
    write_image(pred_dir / "x.nii.gz", box((4, 4, 4), (8, 8, 8)).astype(np.uint8), geo)
    return ref_dir, pred_dir, scored


def test_cli_writes_results_for_scorable_cases_and_flags_missing_extra_and_grid_mismatch(folders, capsys):
    ref_dir, pred_dir, scored = folders
    assert main(["-ref", str(ref_dir), "-pred", str(pred_dir)]) == 1
    out, err = capsys.readouterr()
    result = json.loads((pred_dir / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"JSON {c}"))
    assert result["missing"] == ["d"] and result["extra"] == ["x"]
    (error,) = result["errors"]
    assert error["case"] == "c"
    assert str(pred_dir / "c.nii.gz") in error["error"] and str(ref_dir / "c.nii.gz") in error["error"]
    assert "origin (-5, 3, 10) vs (0, 0, 0)" in error["error"] and "spacing" not in error["error"]
    assert "predict again from the same input or resample the prediction onto the label's grid" in error["error"]
    assert [r["case"] for r in result["per_case"]] == ["a", "b", "e", "f"]
    expected = {}
    for case, (ref, pred) in scored.items():
        # the arrays as read back; the spacing as stored (NIfTI holds float32: 0.7 -> 0.69999998...)
        ref_read, geo = read_image(ref_dir / f"{case}.nii.gz")
        pred_read, _ = read_image(pred_dir / f"{case}.nii.gz")
        assert np.array_equal(ref_read > 0, ref) and np.array_equal(pred_read > 0, pred > 0)
        expected[case] = binary_metrics(pred_read, ref_read, geo.spacing)
    for row in result["per_case"]:
        for key, value in expected[row["case"]].items():
            assert same(row[key], value), (row["case"], key, row[key], value)
    assert result["per_case"][0]["hd95_mm"] > 0 and 0 < result["per_case"][0]["dice"] < 1
    # Summary over finite values: f's HD95 (and precision) are undefined, left out and counted.
    hd = result["summary"]["metrics"]["hd95_mm"]
    values = [m["hd95_mm"] for c, m in expected.items() if c != "f"]
    assert hd["n"] == 3 and hd["n_nan"] == 1 and hd["mean"] == pytest.approx(np.mean(values))
    assert result["summary"]["n_cases"] == 4
    with open(pred_dir / "summary_per_case.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["case"] for r in rows] == ["a", "b", "e", "f"]
    assert float(rows[0]["dice"]) == pytest.approx(result["per_case"][0]["dice"])
    assert math.isnan(float(rows[3]["hd95_mm"]))
    dice = result["summary"]["metrics"]["dice"]
    assert f"{dice['mean']:.4f} +- {dice['std']:.4f}" in out and "1 missing, 1 extra, 1 error(s)" in out
    assert f"wrote {pred_dir / 'summary.json'}" in out
    lines = err.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("MISSING d:") and lines[1].startswith("EXTRA x:") and lines[2].startswith("ERROR c:")


def test_cli_exit_0_with_explicit_outputs_and_parallel_workers_match_sequential(folders, tmp_path, capsys):
    ref_dir, pred_dir, _ = folders
    for name in ("c", "d"):
        (ref_dir / f"{name}.nii.gz").unlink()
    (pred_dir / "c.nii.gz").unlink()
    out_json, out_csv = tmp_path / "res" / "eval.json", tmp_path / "res" / "rows.csv"
    assert main(["-ref", str(ref_dir), "-pred", str(pred_dir), "-o", str(out_json), "--csv", str(out_csv),
                 "-np", "2"]) == 0
    parallel = json.loads(out_json.read_text())
    sequential = json.loads(json.dumps(evaluate_folders(ref_dir, pred_dir)).replace("NaN", "null"))
    assert parallel["per_case"] == sequential["per_case"] and parallel["extra"] == ["x"]
    assert len(out_csv.read_text().strip().splitlines()) == 1 + 4
    assert "0 missing, 1 extra, 0 error(s)" in format_table(parallel)
    assert "EXTRA x" in capsys.readouterr().err


@pytest.mark.parametrize("problem", ["no_ref_dir", "no_pred_dir", "no_labels"])
def test_cli_usage_errors_exit_2_with_one_line(problem, folders, tmp_path, capsys):
    ref_dir, pred_dir, _ = folders
    if problem == "no_ref_dir":
        ref_dir = tmp_path / "nowhere"
    elif problem == "no_pred_dir":
        pred_dir = tmp_path / "nowhere"
    else:
        ref_dir = tmp_path / "empty_labels"
        ref_dir.mkdir()
    assert main(["-ref", str(ref_dir), "-pred", str(pred_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("blogrr_evaluate: ")
    assert ("no *.nii.gz label file" in err) if problem == "no_labels" else ("does not exist" in err)
    assert not (pred_dir / "summary.json").exists()


def test_quick_dice_matches_binary_metrics_on_numpy_and_torch():
    """The one quick Dice (validation, pseudo-label quality, registration, diagnostics) equals blogrr_evaluate's."""
    import torch

    from blogrr_nnu.metrics import dice

    rng = np.random.default_rng(3)
    for _ in range(5):
        a, b = rng.random((6, 7, 8)) > 0.6, rng.random((6, 7, 8)) > 0.3
        ref = binary_metrics(a, b, (1.0, 1.0, 1.0))["dice"]
        assert dice(a, b) == ref
        assert dice(torch.from_numpy(a), torch.from_numpy(b.astype(np.float32))) == ref
    assert dice(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0
    assert dice(np.ones((2, 2)), np.zeros((2, 2))) == 0.0
