"""The second preprocessing pass: GMM and fused pseudo-labels, and how good each pseudo-label is.

After every case of a configuration is preprocessed, a :class:`~blogrr_nnu.gmm.HealthyModel` is fitted
to brain voxels of the healthy training cases (``healthy_intensity_model.json`` in the configuration
folder), and every tumour training case gets two more seg channels (test cases are never preprocessed): ``pseudo_gmm`` (image only) and
``pseudo_fused`` (report region x image atypicality, with the report's size as the volume; see
:mod:`blogrr_nnu.gmm`). Cases are rewritten atomically and skipped when already done with the same
model. The upper loop of ``BlogrrTrainer`` picks its target with ``--pseudo_label report|gmm|fused``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from blogrr_nnu import gmm as G
from blogrr_nnu.cases import read_stored_case
from blogrr_nnu.image_io import atomic_write
from blogrr_nnu.parallel import process_pool
from blogrr_nnu.planners.preprocessing import NO_LABEL, SEG_CHANNELS, save_case_atomic
from blogrr_nnu.splits import case_roles
from blogrr_nnu.metrics import dice as mask_dice

logger = logging.getLogger(__name__)

MODEL_FILE = "healthy_intensity_model.json"
SOURCES = {"report": "pseudo_report", "gmm": "pseudo_gmm", "fused": "pseudo_fused"}
SAMPLES_TOTAL = 120000  # healthy voxels pooled for the healthy model (spread evenly over the cases)


def read_case(folder: Path, case_id: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(data (C, *S) float32, seg (K, *S) int8 with every SEG_CHANNELS channel, props)`` of a stored case."""
    data, seg, props = read_stored_case(folder, case_id)
    names = list(props["seg_channels"])
    if names != list(SEG_CHANNELS):  # written by an older version: bring the channels into today's order
        full = np.zeros((len(SEG_CHANNELS),) + seg.shape[1:], np.int8)
        for i, n in enumerate(SEG_CHANNELS):
            if n in names:
                full[i] = seg[names.index(n)]
            elif n == "label":
                full[i] = NO_LABEL
        seg = full
        props["seg_channels"] = list(SEG_CHANNELS)
        props.setdefault("image_pseudo_labels", None)
    return np.asarray(data, np.float32), seg, props


def healthy_model(folder: Path, healthy: list[str], overwrite: bool = False, seed: int = 0,
                  fusion_margin_mm: float = G.DEFAULT_FUSION_MARGIN_MM) -> tuple[G.HealthyModel, str]:
    """Load or fit the configuration's healthy intensity model; returns it and a short hash of it and the margin
    (a case whose labels were made with another model or margin is redone)."""
    path = folder / MODEL_FILE
    if path.is_file() and not overwrite:
        d = json.loads(path.read_text())
    else:
        if not healthy:
            raise ValueError(f"{folder}: no healthy case to learn healthy intensities from")
        per_case = max(1000, SAMPLES_TOTAL // len(healthy))
        samples = []
        for i, k in enumerate(healthy):
            data, seg, _ = read_case(folder, k)
            samples.append(G.brain_samples(data, seg[0], per_case, seed=seed + i))
        d = G.fit_healthy_model(np.concatenate(samples), seed=seed).to_dict()
        d["healthy_cases"] = len(healthy)
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(d, indent=1)))
    key = json.dumps(d, sort_keys=True) + f"|fusion_margin_mm={float(fusion_margin_mm)}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return G.HealthyModel.from_dict(d), digest


def _one(args) -> tuple[str, str]:
    folder, case_id, model_dict, digest, patch, overwrite, margin = args
    data, seg, props = read_case(folder, case_id)
    if props.get("image_pseudo_labels") == digest and not overwrite:
        return case_id, "skipped"
    if props["role"] == "tumor":
        model = G.HealthyModel.from_dict(model_dict)
        brain = seg[0] > 0
        gmm, ginfo = G.gmm_pseudo_label(data, brain, model, props["spacing"])
        fused, finfo = _fused(seg, props, gmm, G.atypicality_map(data, brain, model), margin)
        if not props.get("has_report_pseudo_label"):
            logger.info("%s: no report region; its fused pseudo-label is the GMM label", case_id)
        seg[SEG_CHANNELS.index("pseudo_gmm")] = gmm
        seg[SEG_CHANNELS.index("pseudo_fused")] = fused
        props["gmm"], props["fused"] = ginfo, finfo
    props["image_pseudo_labels"] = digest
    save_case_atomic(folder, case_id, data, seg, props, patch)
    return case_id, "done"


def _fused(seg: np.ndarray, props: dict, gmm: np.ndarray, atyp: np.ndarray, margin_mm: float) -> tuple[np.ndarray, dict]:
    """The fused pseudo-label of a stored case (``read_case`` order) from its GMM label and atypicality map."""
    brain = seg[0] > 0
    report = seg[SEG_CHANNELS.index("pseudo_report")] if props.get("has_report_pseudo_label") else None
    volume = G.ellipsoid_volume_ml((props.get("report") or {}).get("size_mm"))
    return G.fuse_report_and_image(report, gmm, atyp, props["spacing"], volume, brain=brain, margin_mm=margin_mm)


def add_image_pseudo_labels(folder: str | Path, patch_size, *, num_processes: int = 1, overwrite: bool = False,
                            seed: int = 0, fusion_margin_mm: float = G.DEFAULT_FUSION_MARGIN_MM) -> dict[str, str]:
    """Fit (or load) the healthy model of a configuration folder and write GMM / fused labels of every case.

    Args:
        fusion_margin_mm: growth of the report region for the fused label (:func:`blogrr_nnu.gmm.fuse_report_and_image`).

    Returns:
        case id -> ``"done"`` or ``"skipped"``.
    """
    folder = Path(folder)
    if fusion_margin_mm < 0:
        raise ValueError(f"the fusion margin must be >= 0 mm, got {fusion_margin_mm}")
    roles = case_roles(folder)
    model, digest = healthy_model(folder, [k for k, r in roles.items() if r == "healthy"], overwrite, seed,
                                  fusion_margin_mm)
    jobs = [(folder, k, model.to_dict(), digest, list(patch_size), overwrite, float(fusion_margin_mm)) for k in roles]
    try:
        return _run(jobs, num_processes)
    finally:
        shutil.rmtree(folder / ".tmp", ignore_errors=True)  # save_case_atomic's staging folder


def _run(jobs: list, num_processes: int) -> dict[str, str]:
    if num_processes > 1 and len(jobs) > 1:
        with process_pool(num_processes) as pool:
            return dict(tqdm(pool.map(_one, jobs), total=len(jobs), desc="GMM / fused pseudo-labels"))
    return dict(_one(j) for j in tqdm(jobs, desc="GMM / fused pseudo-labels"))


def margin_sweep(folder: str | Path, case_ids: list[str], margins: list[float]) -> dict:
    """Dice against the label of the fused pseudo-label made with each margin, on the given (labelled) cases.

    Nothing is written. Meant for the fold's tumour *training* cases (``blogrr_pseudo_labels --margin_sweep``):
    the margin is the one constant of the fused label chosen with labels, so it must never see a test label.

    Returns:
        ``{"margins", "mean_dice" (per margin), "cases": [{case_id, dice: [...]}], "best_margin"}``.
    """
    folder = Path(folder)
    model = G.HealthyModel.from_dict(json.loads((folder / MODEL_FILE).read_text()))
    rows = []
    for cid in case_ids:
        data, seg, props = read_case(folder, cid)
        label = seg[SEG_CHANNELS.index("label")]
        if (label < 0).all():
            continue
        gmm = seg[SEG_CHANNELS.index("pseudo_gmm")] > 0
        atyp = G.atypicality_map(data, seg[0] > 0, model)
        dice = [mask_dice(_fused(seg, props, gmm, atyp, m)[0] > 0, label > 0) for m in margins]
        rows.append({"case_id": cid, "dice": dice})
    if not rows:
        raise ValueError(f"{folder}: none of the {len(case_ids)} case(s) has a label; the sweep needs labelsTrTumor/")
    mean = [float(np.mean([r["dice"][i] for r in rows])) for i in range(len(margins))]
    return {"margins": [float(m) for m in margins], "mean_dice": mean, "cases": rows,
            "best_margin": float(margins[int(np.argmax(mean))])}


def quality(folder: str | Path) -> dict:
    """Dice of each pseudo-label source against the ground truth, on cases that have both.

    Returns:
        ``{"cases": [{case_id, role, report, gmm, fused, label_ml}], "summary": {source: {mean, std, n}}}``.
    """
    folder = Path(folder)
    rows = []
    for case_id, role in case_roles(folder).items():
        if role != "tumor":  # healthy cases have no label; test cases must never be scored here
            continue
        _, seg, props = read_case(folder, case_id)
        label = seg[SEG_CHANNELS.index("label")]
        if (label < 0).all():
            continue
        ref = label > 0
        row = {"case_id": case_id, "role": role,
               "label_ml": float(ref.sum() * np.prod(props["spacing"]) / 1000.0)}
        for name, channel in SOURCES.items():
            row[name] = mask_dice(seg[SEG_CHANNELS.index(channel)] > 0, ref)
        rows.append(row)
    summary = {s: {"mean": float(np.mean([r[s] for r in rows])) if rows else float("nan"),
                   "std": float(np.std([r[s] for r in rows])) if rows else float("nan"), "n": len(rows)}
               for s in SOURCES}
    return {"cases": rows, "summary": summary}


def quality_table(result: dict) -> str:
    """Markdown table of :func:`quality`."""
    lines = ["| pseudo-label | Dice vs ground truth (mean +- std) | cases |", "|---|---|---|"]
    for s, v in result["summary"].items():
        lines.append(f"| {s} | {v['mean']:.3f} +- {v['std']:.3f} | {v['n']} |")
    return "\n".join(lines)
