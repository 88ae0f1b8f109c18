"""``run_benchmark``: every method of :mod:`blogrr_nnu.benchmarks.methods.comparison` on one dataset's test cases."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from blogrr_nnu.benchmarks.methods import comparison as C
from blogrr_nnu.metrics import evaluate_folders

logger = logging.getLogger(__name__)

# The intensity baseline keeps one label-free rule (the others add rows, not insight: docs/benchmark.md).
INTENSITY_RULES = ("sb_p99",)


def test_case_ids(raw: Path, ending: str) -> list[str]:
    """Cases with both an image (channel 0) in imagesTs/ and a label in labelsTs/.

    Raises:
        ValueError: no test labels (the benchmark scores against them).
    """
    labels = raw / "labelsTs"
    ids = sorted(p.name[: -len(ending)] for p in labels.glob(f"*{ending}")) if labels.is_dir() else []
    ids = [c for c in ids if (raw / "imagesTs" / f"{c}_0000{ending}").is_file()]
    if not ids:
        raise ValueError(f"{raw}: no test case with a label (imagesTs/ + labelsTs/); the benchmark scores predictions "
                         "against test labels, add them (docs/data_format.md)")
    return ids


def run_benchmark(s: C.Setting) -> dict:
    """Train/reuse, predict, threshold and score every method in ``s.methods``; returns the raw results."""
    from blogrr_nnu.splits import case_roles, fold_keys, load_or_create_splits
    from blogrr_nnu.planners.api import load_plans
    from blogrr_nnu.trainers.supervised import NoLabelsError

    dj = json.loads((s.raw / "dataset.json").read_text())
    ending, n_ch = dj["file_ending"], len(dj["channel_names"])
    if dj.get("channel_names_healthy", dj["channel_names"]) != dj["channel_names"]:
        # the SB rows predict held-out healthy cases with the tumour scans' channel numbering
        raise ValueError(f"{s.raw / 'dataset.json'}: healthy scans have other channels than the tumour scans "
                         "(channel_names_healthy); blogrr_benchmark needs both with the same channels: convert the "
                         "dataset with only the shared channels (blogrr_convert_brats --healthy_channel ...)")
    test_ids = test_case_ids(s.raw, ending)
    plans = load_plans(s.preprocessed)
    data = s.preprocessed / plans["configurations"][s.configuration]["data_identifier"]
    keys = fold_keys(load_or_create_splits(s.preprocessed, data), s.fold, case_roles(data))
    healthy_ids = keys["healthy_val"]
    notes = []
    if s.fold == "all" or not healthy_ids:
        notes.append("fold has no held-out healthy cases: the SB rules were set on training cases")
        healthy_ids = keys["healthy_val"] or keys["healthy_train"]
    print(f"{len(test_ids)} test case(s); label-free thresholds from {len(healthy_ids)} held-out healthy case(s)")
    images_ts, labels_ts, images_tr = s.raw / "imagesTs", s.raw / "labelsTs", s.raw / "imagesTr"
    test = C.read_native_cases(images_ts, labels_ts, test_ids, n_ch, ending)
    healthy = C.read_native_cases(images_tr, None, healthy_ids, n_ch, ending)
    rows: list[dict] = []
    curves: list[dict] = []
    timing: dict[str, dict] = {}
    thresholds_root = s.work / "thresholds"
    for key in [k for k in C.GROUPS if k in s.methods and k in C.TRAINED]:
        m = C.TRAINED[key]
        try:
            folder, now = C.ensure_trained(s, key)
        except NoLabelsError as exc:  # full supervision needs labelsTrTumor/; the other rows do not
            notes.append(f"no full-supervision row: {exc}")
            continue
        pred_dir = s.work / "predictions" / key
        print(f"  predicting {m.label} ...", flush=True)
        secs = C.predict(s, key, folder, images_ts, pred_dir)
        timing[key] = {**C.training_time(folder, s.fold), "trained_now": now,
                       "predict_seconds_per_case": float(np.median([secs[c] for c in test_ids if c in secs]))}
        if m.own_masks:
            rows.append({"key": key, "label": m.label, "group": key, "oracle": False, "twins": [],
                         "folder": str(pred_dir)})
        if not m.reconstruction:
            continue
        maps = {c.case_id: C.anomaly_map(pred_dir, c, ending) for c in test}
        hv = None
        if m.healthy_rules:
            hdir = s.work / "predictions" / f"{key}_healthy_heldout"
            C.predict(s, key, folder, C.link_inputs(images_tr, healthy_ids, n_ch, ending, s.work / "inputs_healthy"),
                      hdir)
            hv = C.healthy_values({c.case_id: C.anomaly_map(hdir, c, ending) for c in healthy})
        learned = C.learned_taus(pred_dir, test_ids) if m.own_masks else None
        r, curve = C.threshold_rows(key, m.label, maps, hv, test, thresholds_root, ending,
                                    learned=learned)
        rows += r
        curves.append(curve)
    if "gmm" in s.methods:
        pred_dir = s.work / "predictions" / "gmm"
        print("  predicting GMM w/ threshold ...", flush=True)
        secs = C.predict(s, "gmm", None, images_ts, pred_dir)
        timing["gmm"] = {"predict_seconds_per_case": float(np.median([secs[c] for c in test_ids if c in secs]))}
        rows.append({"key": "gmm", "label": "GMM w/ threshold (no network)", "group": "gmm", "oracle": False,
                     "twins": [], "folder": str(pred_dir)})
    if "intensity" in s.methods:
        channels = C.intensity_channels(dj["channel_names"])
        if not channels:
            notes.append("no FLAIR or T2 channel (by name in dataset.json): no intensity baseline")
        for ch, name in channels:
            group = f"intensity_{name.lower()}"
            maps = {c.case_id: C.intensity_map(images_ts, c, ch, ending) for c in test}
            hv = C.healthy_values({c.case_id: C.intensity_map(images_tr, c, ch, ending) for c in healthy})
            r, curve = C.threshold_rows(group, f"{name} intensity", maps, hv or None, test, thresholds_root, ending,
                                        rules=INTENSITY_RULES)
            rows += r
            curves.append({**curve, "units": "z-score within the brain"})
    print(f"  scoring {len(rows)} row(s) with blogrr_evaluate's metrics ...", flush=True)
    for r in rows:
        ev = evaluate_folders(labels_ts, r["folder"], ending, num_processes=s.num_processes)
        if ev["missing"] or ev["errors"]:
            raise RuntimeError(f"{r['folder']}: cannot be scored (missing {ev['missing']}, errors {ev['errors'][:1]})")
        r["per_case"] = {p["case"]: {"dice": p["dice"], "hd95_mm": p["hd95_mm"]} for p in ev["per_case"]}
        r["summary"] = ev["summary"]["metrics"]
    return {"rows": rows, "curves": curves, "timing": timing, "test_cases": test_ids, "healthy_heldout": healthy_ids,
            "notes": notes}
