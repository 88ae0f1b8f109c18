"""Does a pseudo-label's best threshold track the ground truth's? The diagnostic behind T's training target.

For every tumour *training* case of a fold that has a label (``labelsTrTumor``; test cases are never
read), on the anomaly maps of a trained reconstruction network:

- tau*_GT: the exact Dice-optimal threshold against the label;
- tau*_P for each target: the report region (Dice-optimal against the atlas regions the report names: what
  the reference's soft Dice pulls towards), the report's stated size read as diameters
  (:func:`blogrr_nnu.tau.report_size_threshold`) and as a volume (:func:`blogrr_nnu.tau.report_volume_threshold`),
  their geometric mean (:func:`blogrr_nnu.tau.report_threshold`, the default target), the GMM and the fused
  pseudo-label (Dice-optimal against each);
- Spearman rho(tau*_P, tau*_GT) over cases and the Dice against the label of thresholding at tau*_P;
- what the default threshold network (the contrast T) learns from each target when fitted with the trainer's fit
  (:func:`blogrr_nnu.tau.fit_threshold_regression`, its default steps, optimiser and slope prior, from a fresh start
  rather than the previous epoch's weights) on the *other* cases (leave-one-out): its rho against tau*_GT and its Dice on the
  left-out case.

A target whose tau*_P does not track tau*_GT cannot teach any T a per-case threshold, however T is built.

The run's maps are read as its method uses them: a run trained on normative maps (BLOGRR's default,
``blogrr_train --maps normative``: :mod:`blogrr_nnu.normative`) has the mean map of its checkpoint subtracted
(:func:`run_normative_map`); on a run trained on plain maps (the DAE's default), ``blogrr_threshold_targets
--normative`` subtracts the mean map of its fold's healthy training cases, voxel by voxel on the template grid that
every case is registered to (:func:`healthy_mean_map`): the study behind the normative default. The leave-one-out
fit uses the slope prior of the kind of map (:func:`blogrr_nnu.tau.slope_prior`) and reports how well its taus are
calibrated: the slope of log tau*_GT on log tau_T over the cases (1: T's taus spread as much as the labels' optima
along T's line; above 1: T too flat).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from blogrr_nnu.networks import MapStatsThresholdNet, build_reconstruction_network
from blogrr_nnu.tau import (case_features, contrast_features, dice_optimal_threshold, fit_threshold_regression,
                            map_features, report_size_threshold, report_volume_threshold, slope_prior,
                            target_threshold)
from blogrr_nnu.cases import case_anomaly_map, load_whole_case
from blogrr_nnu.checkpoint import load_checkpoint
from blogrr_nnu.splits import case_roles, fold_keys, load_or_create_splits
from blogrr_nnu.trainers.upper_loop import StatsUpperLoop
from blogrr_nnu.metrics import dice as mask_dice
from blogrr_nnu.normative import mean_map_on_grid, subtract
from blogrr_nnu.spatial import Crop

# target name -> (seg channel, how tau*_P is read off it)
TARGETS = {
    "report region": ("pseudo_report", "dice"),
    "report size as diameters": ("pseudo_report", "size"),
    "report size as a volume (ABC/3)": ("pseudo_report", "volume"),
    "report size, both readings (default)": ("pseudo_report", "report"),
    "GMM": ("pseudo_gmm", "dice"),
    "fused": ("pseudo_fused", "dice"),
}


def _dice(amap: np.ndarray, brain: np.ndarray, label: np.ndarray, t: float) -> float:
    return mask_dice((amap > t) & brain, label)


def _rho(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    return float(spearmanr(a[ok], b[ok])[0]) if ok.sum() >= 3 else float("nan")


def _reconstruction(run_folder: Path, fold: str):
    """The run's trained reconstruction network (eval mode, CPU) and a function: stored case -> ``(1, *S)`` map.

    Raises:
        FileNotFoundError: no final checkpoint in the run folder's fold.
    """
    ckpt_path = run_folder / f"fold_{fold}" / "checkpoint_final.pth"
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"{ckpt_path}: not found; train the run first (blogrr_train ... -tr dae)")
    plans = json.loads((run_folder / "plans.json").read_text())
    dj = json.loads((run_folder / "dataset.json").read_text())
    cfg = plans["configurations"][run_folder.name.split("__")[-1]]
    net = build_reconstruction_network(cfg, len(dj["channel_names"]))
    net.load_state_dict(load_checkpoint(ckpt_path, "cpu")["network_weights"])
    net.eval()

    def amap_of(case):
        with torch.no_grad():
            return case_anomaly_map(net, case, cfg["patch_size"], cfg["blogrr"], torch.device("cpu"),
                                    strides=cfg["architecture"]["arch_kwargs"]["strides"])[1]
    return amap_of


def case_maps(run_folder: Path, data_folder: Path, preprocessed_base: Path, fold: str) -> list[dict]:
    """Anomaly map, brain, label and every pseudo-label of each labelled tumour training case of the fold.

    Raises:
        FileNotFoundError: no final checkpoint in the run folder's fold.
        ValueError: no tumour training case with a label in the fold.
    """
    amap_of = _reconstruction(run_folder, fold)
    keys = fold_keys(load_or_create_splits(preprocessed_base, data_folder), fold, case_roles(data_folder))
    out = []
    for k in keys["tumor_train"]:
        case = load_whole_case(data_folder, k, "pseudo_report")
        if case.label is None:
            continue
        entry = {"case": k, "amap": amap_of(case), "brain": case.brain, "label": case.label[0].numpy(),
                 "size_mm": (case.props.get("report") or {}).get("size_mm"), "spacing": case.props["spacing"],
                 "case_space": case.props.get("case_space")}
        for channel in {c for c, _ in TARGETS.values()}:
            entry[channel] = load_whole_case(data_folder, k, channel).target[0].numpy()
        out.append(entry)
    if not out:
        raise ValueError(f"{data_folder}: no tumour training case of fold {fold} has a label (labelsTrTumor/); the "
                         "diagnostic compares pseudo-labels with training labels")
    return out


def healthy_mean_map(run_folder: Path, data_folder: Path, preprocessed_base: Path, fold: str) -> np.ndarray:
    """The normative map: :func:`~blogrr_nnu.normative.mean_map_on_grid` of the run's maps of the fold's healthy *training* cases (the
    cases its reconstruction network was trained on), on the configuration's template grid.

    Raises:
        ValueError: the fold has no healthy training case, or a case was preprocessed without its case space.
    """
    amap_of = _reconstruction(run_folder, fold)
    keys = fold_keys(load_or_create_splits(preprocessed_base, data_folder), fold, case_roles(data_folder))
    if not keys["healthy_train"]:
        raise ValueError(f"{data_folder}: fold {fold} has no healthy training case for a normative map")
    maps, brains, spaces = [], [], []
    for k in keys["healthy_train"]:
        case = load_whole_case(data_folder, k, "pseudo_report")
        maps.append(amap_of(case)[0].numpy())
        brains.append(case.brain[0].numpy())
        spaces.append(Crop.of(case.props.get("case_space"), k))
    return mean_map_on_grid(maps, brains, spaces)


def run_normative_map(run_folder: Path, fold: str) -> np.ndarray | None:
    """The mean map (template grid) a run trained on normative maps subtracts, from its final checkpoint; ``None``
    for a run on plain maps."""
    ckpt = load_checkpoint(run_folder / f"fold_{fold}" / "checkpoint_final.pth", "cpu")
    if not ckpt.get("normative"):
        return None
    mean = ckpt["normative_map"]
    return mean.numpy() if torch.is_tensor(mean) else np.asarray(mean)


def subtract_normative(cases: list[dict], mean_grid: np.ndarray) -> list[dict]:
    """:func:`case_maps`' cases with the normative map (template grid) subtracted from each map, on its own crop."""
    out = []
    for c in cases:
        out.append({**c, "amap": subtract(c["amap"], mean_grid, c.get("case_space"), torch.as_tensor(c["brain"]),
                                          c["case"])})
    return out


def _arrays(cases: list[dict]) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Anomaly maps (float64), brains and labels (boolean) of :func:`case_maps`' cases, as numpy arrays."""
    return ([c["amap"][0].numpy().astype(np.float64) for c in cases], [c["brain"][0].numpy() > 0 for c in cases],
            [c["label"] > 0 for c in cases])


def leave_one_out(features: torch.Tensor, targets: np.ndarray, seed: int = 0, hidden: int = 0,
                  slope_prior: float | None = None) -> np.ndarray:
    """tau of every case from the default T (``hidden`` > 0: with a hidden layer; ``slope_prior``: the trainer's
    prior of a one-feature T) fitted on the other cases with a target (NaN targets skipped)."""
    out = np.full(len(targets), np.nan)
    ok = np.isfinite(targets)
    for i in range(len(targets)):
        train = ok.copy()
        train[i] = False
        if train.sum() < 2:
            continue
        torch.manual_seed(seed)
        net = MapStatsThresholdNet(features.shape[1], hidden)
        fit_threshold_regression(net, StatsUpperLoop.make_optimizer(net), features[train],
                                 torch.tensor(targets[train], dtype=torch.float32), StatsUpperLoop.default_iterations[0],
                                 slope_prior=slope_prior)
        with torch.no_grad():
            out[i] = float(net(features[i:i + 1])[0])
    return out


def calibration_slope(learned, tau_gt) -> float:
    """Slope of log tau*_GT on log learned tau over the cases with both (1: calibrated spread; above 1: too flat)."""
    learned, tau_gt = np.asarray(learned, float), np.asarray(tau_gt, float)
    ok = np.isfinite(learned) & np.isfinite(tau_gt) & (learned > 0) & (tau_gt > 0)
    if ok.sum() < 3 or np.ptp(np.log(learned[ok])) == 0:
        return float("nan")
    return float(np.polyfit(np.log(learned[ok]), np.log(tau_gt[ok]), 1)[0])


def diagnose(cases: list[dict], model: str = "contrast", normative: bool = False, prior: float | None = None) -> dict:
    """The table's numbers (module docstring) and every case's thresholds (``model``: the map T whose leave-one-out
    fit is shown, the trainer's default; ``normative``: the maps are normative, which sets T's slope prior unless
    ``prior`` is given; a prior applies to the contrast T only)."""
    contrast_prior = slope_prior("contrast", normative) if prior is None else prior
    prior = contrast_prior if model == "contrast" else slope_prior(model, normative)
    amaps, brains, labels = _arrays(cases)
    gt = [dice_optimal_threshold(a, lab, b) for a, lab, b in zip(amaps, labels, brains)]
    tau_gt = np.array([g[0] if g else np.nan for g in gt])
    feats = torch.stack([case_features(model, c["amap"], c["brain"]) for c in cases])
    per_case = [{"case": c["case"], "tau_gt": float(t), "dice_at_tau_gt": float(g[1]) if g else float("nan")}
                for c, t, g in zip(cases, tau_gt, gt)]
    rows = []
    for name, (channel, how) in TARGETS.items():
        taus = []
        for c, a, b in zip(cases, amaps, brains):
            if how == "report":
                t = target_threshold(a, b, c[channel], "pseudo_report", size_mm=c["size_mm"], spacing=c["spacing"])
            elif how == "size":
                t = report_size_threshold(a, b, c[channel], c["size_mm"], c["spacing"])
            elif how == "volume":
                t = report_volume_threshold(a, b, c["size_mm"], c["spacing"])
            else:
                best = dice_optimal_threshold(a, c[channel] > 0, b)
                t = None if best is None else best[0]
            taus.append(np.nan if t is None else t)
        taus = np.asarray(taus)
        dice = [_dice(a, b, lab, t) for a, b, lab, t in zip(amaps, brains, labels, taus) if np.isfinite(t)]
        loo = leave_one_out(feats, taus, slope_prior=prior)
        loo_dice = [_dice(a, b, lab, t) for a, b, lab, t in zip(amaps, brains, labels, loo) if np.isfinite(t)]
        rows.append({"target": name, "cases": int(np.isfinite(taus).sum()), "rho": _rho(taus, tau_gt),
                     "dice_at_tau_p": float(np.mean(dice)) if dice else float("nan"),
                     "tau_p_range": [float(np.nanmin(taus)), float(np.nanmax(taus))] if np.isfinite(taus).any()
                     else [float("nan")] * 2,
                     "loo_rho": _rho(loo, tau_gt), "loo_calibration": calibration_slope(loo, tau_gt),
                     "loo_dice": float(np.mean(loo_dice)) if loo_dice else float("nan"),
                     "loo_range": [float(np.nanmin(loo)), float(np.nanmax(loo))] if np.isfinite(loo).any()
                     else [float("nan")] * 2})
        for p, t, lt in zip(per_case, taus, loo):
            p[f"tau_p[{name}]"], p[f"tau_T_loo[{name}]"] = float(t), float(lt)
    grid = np.unique(np.concatenate([np.quantile(a[b], np.linspace(0.5, 0.9999, 400)) for a, b in zip(amaps, brains)]))
    mean_dice = np.array([np.mean([_dice(a, b, lab, t) for a, b, lab in zip(amaps, brains, labels)]) for t in grid])
    best_global = float(grid[int(np.argmax(mean_dice))])
    ok = np.isfinite(tau_gt) & (tau_gt > 0)
    # what the contrast T's slope prior is made of (tau.slope_prior): log tau*_GT on T's one log input
    gt_slope = (float(np.polyfit(feats[ok, 0].numpy().astype(np.float64), np.log(tau_gt[ok]), 1)[0])
                if feats.shape[1] == 1 and ok.sum() >= 3 else None)
    return {"rows": rows, "per_case": per_case, "n_cases": len(cases), "gt_slope": gt_slope, "model": model,
            "normative": bool(normative), "slope_prior": prior, "contrast_slope_prior": contrast_prior,
            "oracle_dice": float(np.nanmean([p["dice_at_tau_gt"] for p in per_case])),
            "tau_gt_range": [float(np.nanmin(tau_gt)), float(np.nanmax(tau_gt))],
            "best_global_tau": best_global, "best_global_dice": float(mean_dice.max())}


# candidate inputs of a map T compared by --feature_study: (in-brain quantiles, with the log half-contrast threshold,
# hidden units); () = no quantile
FEATURE_STUDY = [((), True, 0), ((0.90, 0.999, 1.0), True, 0), ((0.999,), False, 0), ((1.0,), False, 0),
                 ((0.99, 0.999, 1.0), False, 0), ((0.90, 0.999, 1.0), False, 0), ((0.90, 1.0), False, 0),
                 ((0.5, 0.9, 0.99, 0.999, 1.0), False, 0), ((0.5, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 1.0), False, 0),
                 ((0.90, 0.999, 1.0), False, 16), ((0.5, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 1.0), False, 16)]


def _study_features(case: dict, quantiles, contrast: bool) -> torch.Tensor:
    parts = [contrast_features(case["amap"], case["brain"])] if contrast else []
    if quantiles:
        parts.append(map_features(case["amap"], case["brain"], quantiles))
    return torch.cat(parts)


def feature_study(cases: list[dict], result: dict) -> list[dict]:
    """Leave-one-out Dice vs label of a map T with each input set of :data:`FEATURE_STUDY`, fitted to the
    report target (the default) and (as a ceiling of the inputs) to tau*_GT itself."""
    amaps, brains, labels = _arrays(cases)
    tau_gt = np.array([p["tau_gt"] for p in result["per_case"]])
    tau_size = np.array([p["tau_p[report size, both readings (default)]"] for p in result["per_case"]])
    rows = []
    for quantiles, contrast, hidden in FEATURE_STUDY:
        feats = torch.stack([_study_features(c, quantiles, contrast) for c in cases])
        row = {"quantiles": list(quantiles), "half_contrast": contrast, "hidden": hidden}
        # the contrast T's own inputs are fitted as the trainer fits them (with its slope prior, or --slope_prior)
        prior = result.get("contrast_slope_prior") if contrast and not quantiles and not hidden else None
        for name, target in (("report_size", tau_size), ("tau_gt", tau_gt)):
            loo = leave_one_out(feats, target, hidden=hidden, slope_prior=prior)
            row[f"{name}_dice"] = float(np.mean([_dice(a, b, lab, t) for a, b, lab, t in zip(amaps, brains, labels, loo)
                                                 if np.isfinite(t)]))
            row[f"{name}_rho"] = _rho(loo, tau_gt)
        rows.append(row)
    return rows


def feature_markdown(rows: list[dict]) -> str:
    """The --feature_study table."""
    lines = ["| T's inputs (log) | hidden units | fitted to the report target: Dice (LOO) | rho vs tau*_GT | "
             "fitted to tau*_GT: Dice (LOO) | rho vs tau*_GT |", "|---|---|---|---|---|---|"]
    for r in rows:
        q = ", ".join((["half-contrast threshold (contrast T)"] if r.get("half_contrast") else [])
                      + ["max" if x == 1.0 else f"{100 * x:g} % quantile" for x in r["quantiles"]])
        q += " (stats T)" if r["quantiles"] == [0.9, 0.999, 1.0] and not r.get("half_contrast") and not r["hidden"] else ""
        lines.append(f"| {q} | {r['hidden']} | {r['report_size_dice']:.3f} | {r['report_size_rho']:.2f} | "
                     f"{r['tau_gt_dice']:.3f} | {r['tau_gt_rho']:.2f} |")
    return "\n".join(lines)


def markdown(result: dict) -> str:
    """The diagnostic table."""
    lo, hi = result["tau_gt_range"]
    lines = [f"{result['n_cases']} labelled tumour training cases of the fold; per-case oracle tau*_GT "
             f"{lo:.2f}-{hi:.2f}, Dice {result['oracle_dice']:.3f}; best single threshold on these cases "
             f"{result['best_global_tau']:.2f}, Dice {result['best_global_dice']:.3f} (both use the training labels)."
             + ("" if result.get("gt_slope") is None else
                f" Slope of log tau*_GT on the {result['model']} T's log input: {result['gt_slope']:.2f} (the contrast "
                f"T's slope prior on {'normative' if result.get('normative') else 'plain'} maps, "
                f"{slope_prior('contrast', result.get('normative', False)):.2f}, is the mean of the demo's three "
                "seeds'; this leave-one-out fit: "
                + ("no prior" if result.get("slope_prior") is None else f"prior {result['slope_prior']:.2f}") + ")."),
             "",
             "| target | cases with tau*_P | Spearman rho(tau*_P, tau*_GT) | Dice vs label at tau*_P | tau*_P range | "
             "T fitted on the other cases: rho vs tau*_GT | T (leave-one-out): Dice vs label | T range | "
             "T's calibration: slope of log tau*_GT on log tau_T |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['target']} | {r['cases']} | {r['rho']:.2f} | {r['dice_at_tau_p']:.3f} | "
                     f"{r['tau_p_range'][0]:.2f}-{r['tau_p_range'][1]:.2f} | {r['loo_rho']:.2f} | {r['loo_dice']:.3f} | "
                     f"{r['loo_range'][0]:.2f}-{r['loo_range'][1]:.2f} | {r.get('loo_calibration', float('nan')):.2f} |")
    return "\n".join(lines)
