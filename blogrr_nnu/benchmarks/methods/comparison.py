"""The comparison behind ``blogrr_benchmark``: train what is missing, predict the test cases, pick thresholds, evaluate.

Every row of the table is a folder of native-grid masks scored by :func:`blogrr_nnu.metrics.evaluate_folders`
(what ``blogrr_evaluate`` runs), so any number in the table can be re-checked with ``blogrr_evaluate -ref
labelsTs -pred <row folder>``. Rows:

- trained runs predicted by :class:`~blogrr_nnu.inference.predictor.BlogrrPredictor`: BLOGRR (report, GMM, fused
  upper-loop targets; learned per-case tau), CGC (GMM and fused pseudo-labels), full supervision (stock
  ``nnUNetTrainer``, :mod:`blogrr_nnu.trainers.supervised`), GMM w/ threshold (no network);
- thresholds on native anomaly maps (DAE, and each BLOGRR run's own reconstruction network) and on native
  FLAIR/T2 intensities (z-score within each case's brain): label-free rules on held-out healthy cases ("SB"), the best
  global threshold on the test labels ("UB", oracle) and every case's own best threshold (oracle), see
  :mod:`blogrr_nnu.benchmarks.methods.thresholds`. These rows are ``map > t`` without post-processing, as in the
  papers the baselines come from.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from blogrr_nnu.benchmarks.methods import thresholds as T
from blogrr_nnu.image_io import atomic_write, read_image, write_image
from blogrr_nnu.nnunet_output import prints_as_log

logger = logging.getLogger(__name__)

GROUPS = ("blogrr", "blogrr_plain", "blogrr_gmm", "blogrr_fused", "blogrr_stats", "blogrr_reference", "dae",
          "dae_normative", "intensity", "gmm", "cgc", "cgc_fused", "supervised", "supervised_10x")
# the converged full-supervision row trains this many times our trainer's step budget
CONVERGED_BUDGET = 10
QUICK_SCHEDULE = {"epochs": 2, "iters": 3, "upper_iters": 2}
# label-free ("SB") threshold rules: row suffix -> (what, rule over held-out healthy cases' values)
SB_RULES = {
    "sb_p99": ("99th percentile of healthy voxels", lambda h: T.percentile(h, 99.0)),
    "sb_p95": ("95th percentile of healthy voxels", lambda h: T.percentile(h, 95.0)),
    "sb_fpr1": ("1 % false-positive rate on healthy cases", lambda h: T.fpr_threshold(h, 0.01)),
    "sb_fpr5": ("5 % false-positive rate on healthy cases", lambda h: T.fpr_threshold(h, 0.05)),
}


@dataclass(frozen=True)
class Trained:
    """A method that is a trained run."""

    label: str
    trainer: str  # key of trainers.api.TRAINERS, or "nnunet"
    pseudo_label: str | None = None
    reconstruction: bool = False  # its anomaly maps get threshold rows and a sensitivity curve
    own_masks: bool = True  # its predicted masks are a row (False: no threshold of its own, only threshold rows)
    healthy_rules: bool = False  # label-free (SB) threshold rows from its maps of held-out healthy cases
    threshold_model: str | None = None  # BLOGRR: None = the trainer's default (contrast)
    budget: int = 1  # full supervision: multiple of our trainer's step budget
    normative: bool = False  # maps minus the healthy training cases' mean map (blogrr_train --maps normative)


# The default BLOGRR row is on normative maps (blogrr_train's default); its variants (targets, threshold networks)
# were measured on plain maps, and are compared with the plain row.
TRAINED = {
    "blogrr": Trained("BLOGRR (report target)", "blogrr", "report", True, normative=True),
    "blogrr_plain": Trained("BLOGRR, plain maps (report target)", "blogrr", "report", True),
    "blogrr_gmm": Trained("BLOGRR, plain maps (GMM target)", "blogrr", "gmm", True),
    "blogrr_fused": Trained("BLOGRR, plain maps (fused target)", "blogrr", "fused", True),
    "blogrr_stats": Trained("BLOGRR, plain maps, quantile T (report target)", "blogrr", "report", True,
                            threshold_model="stats"),
    "blogrr_reference": Trained("BLOGRR, reference T (report regions, plain maps: as published)", "blogrr", "report",
                                True, threshold_model="reference"),
    "dae": Trained("DAE", "dae", None, True, own_masks=False, healthy_rules=True),
    "dae_normative": Trained("DAE, normative maps", "dae", None, True, own_masks=False, healthy_rules=True,
                             normative=True),
    "cgc": Trained("CGC (GMM pseudo-labels)", "cgc", "gmm"),
    "cgc_fused": Trained("CGC (fused pseudo-labels)", "cgc", "fused"),
    "supervised": Trained("Full supervision (stock nnUNetTrainer), our step budget", "nnunet"),
    "supervised_10x": Trained(f"Full supervision (stock nnUNetTrainer), {CONVERGED_BUDGET}x our step budget", "nnunet",
                              budget=CONVERGED_BUDGET),
}


@dataclass
class Setting:
    """What one benchmark run compares, and where."""

    dataset: str
    configuration: str
    fold: str
    methods: list[str]
    device: str = "cpu"
    quick: bool = False
    num_processes: int = 2
    work: Path = Path(".")
    raw: Path = Path(".")
    preprocessed: Path = Path(".")
    schedule: dict = field(default_factory=dict)


# -- trained runs ----------------------------------------------------------------------------------------
def run_folder(s: Setting, key: str) -> Path:
    from blogrr_nnu.paths import results_root
    from blogrr_nnu.trainers.api import TRAINERS, variant_class
    from blogrr_nnu.trainers.supervised import supervised_run_folder

    m = TRAINED[key]
    if m.trainer == "nnunet":
        return supervised_run_folder(s.dataset, s.configuration, m.budget)
    cls = variant_class(TRAINERS[m.trainer], pseudo_label=m.pseudo_label, threshold_model=m.threshold_model,
                        normative=m.normative)
    return results_root() / s.preprocessed.name / f"{cls.__name__}__blogrr_plans__{s.configuration}"


def ensure_trained(s: Setting, key: str) -> tuple[Path, bool]:
    """Train ``key`` unless its fold has a final checkpoint (a killed run resumes); returns (run folder, trained now)."""
    folder = run_folder(s, key)
    m = TRAINED[key]
    final = folder / f"fold_{s.fold}" / "checkpoint_final.pth"
    if final.is_file():
        if m.trainer in ("blogrr", "dae"):  # a run folder of an older blogrr-nnu can hold another variant
            from blogrr_nnu.checkpoint import load_checkpoint
            from blogrr_nnu.trainers.api import TRAINERS

            ckpt = load_checkpoint(final)
            have = ckpt.get("threshold_model", "reference")
            want = m.threshold_model or TRAINERS["blogrr"].threshold_model
            if m.trainer == "blogrr" and have != want:
                raise ValueError(f"{final}: trained with the {have!r} threshold network, this row needs {want!r} "
                                 "(made by an older blogrr-nnu); remove the run folder or use another --results root")
            if bool(ckpt.get("normative", False)) != m.normative:
                need = "normative" if m.normative else "plain"
                raise ValueError(f"{final}: trained on other maps than this row's {need} ones; remove the run folder "
                                 "or use another --results root")
        return folder, False
    print(f"  training {m.label} ({folder.name}, fold {s.fold}) ...", flush=True)
    if m.trainer == "nnunet":
        from blogrr_nnu.trainers.supervised import train_supervised

        with prints_as_log(logger):  # nnU-Net prints every log line (its log file keeps them too)
            train_supervised(s.dataset, s.fold, s.configuration, device=s.device, epochs=s.schedule.get("epochs"),
                             iters=s.schedule.get("iters"), budget=m.budget)
    else:
        from blogrr_nnu.trainers.api import run

        run(s.dataset, s.fold, s.configuration, trainer=m.trainer, pseudo_label=m.pseudo_label, device=s.device,
            threshold_model=m.threshold_model, normative=m.normative if m.trainer in ("blogrr", "dae") else None,
            continue_training=True, **s.schedule)
    return folder, True


def training_time(folder: Path, fold: str) -> dict:
    """Seconds and lower-loop (training) iterations recorded in the final checkpoint of a run."""
    ckpt_path = folder / f"fold_{fold}" / "checkpoint_final.pth"
    if folder.name.startswith("nnUNetTrainer"):
        from blogrr_nnu.checkpoint import load_stock_checkpoint

        log = load_stock_checkpoint(ckpt_path)["logging"]
        seconds = float(np.sum(np.subtract(log["epoch_end_timestamps"], log["epoch_start_timestamps"])))
        debug = json.loads((folder / f"fold_{fold}" / "debug.json").read_text())
        iters = int(debug["num_iterations_per_epoch"]) * len(log["epoch_end_timestamps"])
        ema = [float(v) for v in log.get("ema_fg_dice", [])]
        # did it converge? nnU-Net's own validation pseudo-Dice (EMA, on the fold's held-out labelled cases)
        curve = {"half": ema[len(ema) // 2 - 1], "end": ema[-1], "max": max(ema)} if len(ema) >= 2 else None
        return {"seconds": seconds, "iterations": iters, "seconds_per_iteration": seconds / max(iters, 1),
                "lower_seconds": seconds, "val_ema_dice": curve}
    from blogrr_nnu.checkpoint import load_checkpoint

    ckpt = load_checkpoint(ckpt_path)
    p = ckpt["progress"]
    lower = float(np.nansum(p.get("time_lower", [])))
    seconds = lower + float(np.nansum(p.get("time_upper", []))) + float(np.nansum(p.get("time_val", [])))
    iters = int(ckpt["num_iterations_per_epoch"]) * len(p.get("time_lower", []))
    return {"seconds": seconds, "iterations": iters, "seconds_per_iteration": lower / max(iters, 1),
            "lower_seconds": lower}


# -- prediction --------------------------------------------------------------------------------------------
def predict(s: Setting, key: str, folder: Path | None, in_dir: Path, out_dir: Path) -> dict[str, float]:
    """Predict ``in_dir`` with a run (or the GMM baseline, ``folder=None``) into ``out_dir``; seconds per case.

    Finished cases are reused (their seconds come from ``timing.json`` written when they were predicted) as long
    as the model file they were made with is unchanged (size and modification time in ``timing.json``); a
    retrained run is predicted again.
    """
    import torch

    from blogrr_nnu.inference.predict_folder import predict_folder
    from blogrr_nnu.inference.predictor import BlogrrPredictor

    # a run without a threshold of its own (the DAE): its masks are not used (the threshold rows are), any value does
    own = key not in TRAINED or TRAINED[key].own_masks
    predictor = BlogrrPredictor(device=torch.device(s.device), fixed_threshold=None if own else 0.0,
                                allow_tqdm=False)
    if folder is None:
        predictor.initialize_gmm_from_preprocessed(s.preprocessed, s.configuration)
    else:
        predictor.initialize_from_run_folder(folder, [s.fold])
    stamp = ";".join(f"{f}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in predictor.model_files)
    timing_file = out_dir / "timing.json"
    saved = json.loads(timing_file.read_text()) if timing_file.is_file() else {}
    fresh = saved.get("model") != stamp
    timing = {} if fresh else saved.get("seconds", {})
    result = predict_folder(predictor, in_dir, out_dir, save_anomaly_maps=True, overwrite=fresh)
    if result.failed:
        raise RuntimeError("; ".join(f"{k}: {v}" for k, v in result.failed.items()))
    timing.update(result.seconds)
    text = json.dumps({"model": stamp, "seconds": timing}, indent=1)
    atomic_write(timing_file, lambda tmp: Path(tmp).write_text(text))
    return timing


# -- native maps and threshold rows -----------------------------------------------------------------------
@dataclass
class NativeCase:
    """A case's native brain mask, label and geometry (read once)."""

    case_id: str
    brain: np.ndarray
    label: np.ndarray | None
    geometry: object


def read_native_cases(image_dir: Path, label_dir: Path | None, ids: list[str], n_channels: int, ending: str
                      ) -> list[NativeCase]:
    """Brain = voxels non-zero in any channel (inputs are skull-stripped)."""
    out = []
    for cid in ids:
        chans = [read_image(image_dir / f"{cid}_{c:04d}{ending}") for c in range(n_channels)]
        brain = np.any(np.stack([c[0] for c in chans]) != 0, axis=0)
        label = read_image(label_dir / f"{cid}{ending}")[0] > 0 if label_dir is not None else None
        out.append(NativeCase(cid, brain, label, chans[0][1]))
    return out


def anomaly_map(pred_dir: Path, case: NativeCase, ending: str) -> np.ndarray:
    """A native anomaly map written by the predictor, ``-inf`` outside the brain (never above a threshold)."""
    amap = read_image(pred_dir / "anomaly_maps" / f"{case.case_id}_anomaly{ending}")[0].astype(np.float64)
    return np.where(case.brain, amap, -np.inf)


def intensity_map(image_dir: Path, case: NativeCase, channel: int, ending: str) -> np.ndarray:
    """A native channel standardised within its own brain (mean 0, std 1), ``-inf`` outside the brain.

    Mean/std rather than our preprocessing's median/IQR on purpose: a large bright tumour inflates the std
    and so lowers its own z-scores, which adapts one global threshold to the case a little. That is the
    stronger baseline (demo test cases, best global FLAIR threshold: 0.660 with mean/std, 0.598 with
    median/IQR; two runs of ``blogrr_benchmark -d 501``, docs/benchmark.md), and a baseline should be given
    its best honest form.
    """
    x = read_image(image_dir / f"{case.case_id}_{channel:04d}{ending}")[0].astype(np.float64)
    v = x[case.brain]
    z = (x - v.mean()) / max(float(v.std()), 1e-12) if v.size else x
    return np.where(case.brain, z, -np.inf)


def write_masks(maps: dict[str, np.ndarray], cases: list[NativeCase], taus: dict[str, float], out_dir: Path,
                ending: str) -> None:
    """``map > tau`` per case, uint8 on the native grid (atomic writes)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for c in cases:
        write_image(out_dir / f"{c.case_id}{ending}", (maps[c.case_id] > taus[c.case_id]).astype(np.uint8), c.geometry)
    atomic_write(out_dir / "thresholds.json", lambda tmp: Path(tmp).write_text(json.dumps(taus, indent=1)))


def threshold_rows(group: str, label: str, maps: dict[str, np.ndarray], healthy: list[T.CaseValues] | None,
                   cases: list[NativeCase], out_root: Path, ending: str, *, learned: dict[str, float] | None = None,
                   rules: tuple[str, ...] = SB_RULES) -> tuple[list[dict], dict]:
    """Rows (SB rules, UB, per-case oracle) of one family of maps, their mask folders, and its Dice curve.

    Args:
        maps: case id -> native map (``-inf`` outside the brain).
        healthy: held-out healthy cases' in-brain values for the label-free rules (None: no SB rows).
        learned: case id -> learned tau (BLOGRR runs): added to the candidates and to the curve record.
        rules: which label-free rules of :data:`SB_RULES` to add (P99, P95, FPR 1 %, FPR 5 %) when ``healthy``
            is given.

    Returns:
        ``(rows, curve)``; each row: key, label, group, oracle, twins (keys it must be >= to), folder, thresholds.
    """
    values = [T.CaseValues.from_arrays(maps[c.case_id], c.label, floor=-np.inf) for c in cases]
    unknown = set(rules) - set(SB_RULES)
    if unknown:
        raise ValueError(f"unknown label-free rule(s) {sorted(unknown)}; choose from {', '.join(SB_RULES)}")
    sb = {k: (SB_RULES[k][0], SB_RULES[k][1](healthy)) for k in SB_RULES if k in rules} if healthy else {}
    extra = [v for _, v in sb.values()] + list((learned or {}).values())
    grid = T.candidate_grid(values, extra=extra)
    dice = T.dice_matrix(values, grid)
    ub, _ = T.best_global(dice, grid)
    oracle = T.per_case_oracle(dice, grid)
    rows = []
    for suffix, (what, t) in sb.items():
        rows.append({"key": f"{group}_{suffix}", "label": f"{label} + fixed threshold, SB ({what})", "oracle": False,
                     "twins": [], "taus": {c.case_id: t for c in cases}})
    rows.append({"key": f"{group}_ub", "label": f"{label} + best global threshold, UB (oracle)", "oracle": True,
                 "twins": [r["key"] for r in rows], "taus": {c.case_id: ub for c in cases}})
    rows.append({"key": f"{group}_oracle_case", "label": f"{label} + per-case oracle threshold (oracle)",
                 "oracle": True, "twins": [f"{group}_ub"],
                 "taus": {c.case_id: float(t) for c, t in zip(cases, oracle)}})
    for r in rows:
        r.update(group=group, folder=str(out_root / r["key"]))
        write_masks(maps, cases, r["taus"], Path(r["folder"]), ending)
    curve = {"group": group, "label": label, "thresholds": grid.tolist(), "mean_dice": dice.mean(0).tolist(),
             "sb": {k: v for k, (_, v) in sb.items()}, "ub": ub}
    if learned:
        lt = np.asarray([learned[c.case_id] for c in cases])
        curve["learned_taus"] = lt.tolist()
        curve["learned_raw_dice"] = float(np.mean([v.dice(np.asarray([t]))[0] for v, t in zip(values, lt)]))
    return rows, curve


def healthy_values(maps: dict[str, np.ndarray]) -> list[T.CaseValues]:
    return [T.CaseValues.from_arrays(m, None, floor=-np.inf) for m in maps.values()]


def learned_taus(pred_dir: Path, ids: list[str]) -> dict[str, float]:
    """The predictor's per-case tau (``anomaly_maps/<case>.json``)."""
    return {cid: float(json.loads((pred_dir / "anomaly_maps" / f"{cid}.json").read_text())["tau"]) for cid in ids}


def link_inputs(src: Path, ids: list[str], n_channels: int, ending: str, dst: Path) -> Path:
    """A folder of symbolic links to some cases' channels (to predict a subset of ``imagesTr``)."""
    dst.mkdir(parents=True, exist_ok=True)
    for cid in ids:
        for c in range(n_channels):
            link = dst / f"{cid}_{c:04d}{ending}"
            if not link.exists():
                os.symlink((src / link.name).resolve(), link)
    return dst


def intensity_channels(channel_names: dict) -> list[tuple[int, str]]:
    """Channels the intensity baseline thresholds: FLAIR and T2 (by name), FLAIR first."""
    out = []
    for want in ("flair", "t2"):
        for k, v in sorted(channel_names.items(), key=lambda kv: int(kv[0])):
            name = v.lower().replace("-", "").replace("_", "")
            hit = "flair" in name if want == "flair" else (name.startswith("t2") and "flair" not in name)
            if hit and int(k) not in [c for c, _ in out]:
                out.append((int(k), v))
    return out

