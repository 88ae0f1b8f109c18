"""``blogrr_demo``: the README's main job, the whole pipeline on the embedded demo dataset.

Stages: make the demo dataset (if missing) -> verify -> plan and preprocess -> train one fold of the
CPU configuration (3d_fullres with a GPU) -> predict the test cases -> evaluate against their labels
-> PNG overlays. Every stage that is already done is reused (a second run is quick; ``--c``-style
resume of a killed training is automatic).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from blogrr_nnu.commands._cli import add_processes, command_parser, start_logging

DEMO_ID = 501
DEMO_NAME = "BlogrrDemo"


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "blogrr_demo",
        "Run blogrr-nnu end to end on the embedded BraTS-like demo phantom (made on first use): "
        "plan and preprocess, train BLOGRR (one fold), predict the test cases, evaluate (Dice, HD95, sensitivity) "
        "and write PNG overlays. Stages already done are reused.",
        "examples:\n  blogrr_demo\n  blogrr_demo --epochs 4          # quicker, weaker\n"
        "  blogrr_demo --pseudo_label fused   # BLOGRR with report + image pseudo-labels\n"
        "  BLOGRR_raw=/data/raw BLOGRR_preprocessed=/data/pre BLOGRR_results=/data/res blogrr_demo")
    parser.add_argument("--raw", default=None, help="raw root (default: $BLOGRR_raw, $nnUNet_raw, ./blogrr_data/raw)")
    parser.add_argument("--preprocessed", default=None, help="preprocessed root (default: $BLOGRR_preprocessed, ...)")
    parser.add_argument("--results", default=None, help="results root (default: $BLOGRR_results, ...)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the demo dataset (default 0)")
    add_processes(parser, 2, "worker processes")
    parser.add_argument("-c", "--configuration", default=None, help="default: 3d_cpu without a GPU, 3d_fullres with")
    parser.add_argument("--fold", default="0", help="fold to train (default 0)")
    parser.add_argument("--epochs", type=int, default=None, help="outer epochs (default: the trainer's, 12 on CPU)")
    parser.add_argument("--pseudo_label", default="report", choices=["report", "gmm", "fused"],
                        help="upper-loop target: report regions (default, as the paper) or report + image fused "
                        "(docs/pseudo_labels.md)")
    parser.add_argument("-device", default=None, choices=["cpu", "cuda", "mps"], help="default: cuda if available")
    return parser


def _stage(i: int, n: int, text: str) -> float:
    print(f"\n[{i}/{n}] {text}", flush=True)
    return time.perf_counter()


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    start_logging()
    import torch

    from blogrr_nnu.paths import dataset_folder_name, preprocessed_root, raw_root, results_root
    from blogrr_nnu.phantom.dataset import make_demo_dataset
    from blogrr_nnu.verify import verify_dataset

    # resolve once and hand the same folders to every stage (and to nnU-Net code that reads the environment)
    roots = {"BLOGRR_raw": raw_root(args.raw), "BLOGRR_preprocessed": preprocessed_root(args.preprocessed),
             "BLOGRR_results": results_root(args.results)}
    for k, v in roots.items():
        v.mkdir(parents=True, exist_ok=True)
        os.environ[k] = str(v.resolve())
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    config = args.configuration or ("3d_fullres" if device == "cuda" else "3d_cpu")
    n = 7
    t_all = time.perf_counter()
    timings: dict[str, float] = {}

    t = _stage(1, n, "demo dataset")
    folder = roots["BLOGRR_raw"] / dataset_folder_name(DEMO_ID, DEMO_NAME)
    if (folder / "dataset.json").is_file():
        print(f"found {folder}")
    else:
        folder = make_demo_dataset(roots["BLOGRR_raw"], dataset_id=DEMO_ID, name=DEMO_NAME, seed=args.seed)
    timings["dataset"] = time.perf_counter() - t

    t = _stage(2, n, "verify")
    result = verify_dataset(folder, num_processes=args.num_processes)
    print(result.format())
    if not result.ok:
        return 1
    timings["verify"] = time.perf_counter() - t

    t = _stage(3, n, f"plan and preprocess ({config})")
    from blogrr_nnu.planners.api import load_plans, plan_and_preprocess, summary_table

    pre = plan_and_preprocess(DEMO_ID, [config], num_processes=args.num_processes)
    print(summary_table(load_plans(pre)))
    timings["plan_and_preprocess"] = time.perf_counter() - t

    t = _stage(4, n, f"train BLOGRR, fold {args.fold}, {config} on {device}")
    from blogrr_nnu.trainers.api import run

    from blogrr_nnu.trainers.api import trainer_class

    trainer = trainer_class("blogrr", pseudo_label=args.pseudo_label).__name__
    run_folder = roots["BLOGRR_results"] / folder.name / f"{trainer}__blogrr_plans__{config}"
    if (run_folder / f"fold_{args.fold}" / "checkpoint_final.pth").is_file():
        print(f"found a finished training in {run_folder / f'fold_{args.fold}'}")
    else:
        run(DEMO_ID, args.fold, config, device=device, epochs=args.epochs, pseudo_label=args.pseudo_label,
            continue_training=True)
    timings["train"] = time.perf_counter() - t

    t = _stage(5, n, "predict the test cases")
    from blogrr_nnu.inference.predict_folder import predict_folder
    from blogrr_nnu.inference.predictor import BlogrrPredictor

    out = roots["BLOGRR_results"] / folder.name / "demo"
    pred_dir = out / f"predictions_{trainer}_{config}_fold{args.fold}"
    predictor = BlogrrPredictor(device=torch.device(device))
    predictor.initialize_from_run_folder(run_folder, [args.fold])
    pred = predict_folder(predictor, folder / "imagesTs", pred_dir, save_anomaly_maps=True)
    for cid, why in pred.failed.items():
        print(f"FAILED {cid}: {why}", file=sys.stderr)
    timings["predict"] = time.perf_counter() - t

    t = _stage(6, n, "evaluate against labelsTs")
    from blogrr_nnu.metrics import evaluate_folders, format_table, write_results

    ev = evaluate_folders(folder / "labelsTs", pred_dir, num_processes=args.num_processes)
    write_results(ev, pred_dir / "summary.json", pred_dir / "summary_per_case.csv")
    print(format_table(ev))
    timings["evaluate"] = time.perf_counter() - t

    t = _stage(7, n, "overlays")
    overview = _overlays(folder, pred_dir, pred_dir / "overlays")
    timings["overlays"] = time.perf_counter() - t

    total = time.perf_counter() - t_all
    timings["total"] = total
    (pred_dir / "timings.json").write_text(json.dumps({k: round(v, 1) for k, v in timings.items()}, indent=1))
    print(f"\ndone in {total / 60:.1f} min ({', '.join(f'{k} {v:.0f} s' for k, v in timings.items() if k != 'total')})")
    print(f"  dataset:      {folder}  (montage.png)")
    print(f"  preprocessed: {pre}")
    print(f"  training:     {run_folder / f'fold_{args.fold}'}  (progress.png, training log)")
    print(f"  predictions:  {pred_dir}  (masks; anomaly_maps/ with tau per case)")
    print(f"  evaluation:   {pred_dir / 'summary.json'}, {pred_dir / 'summary_per_case.csv'}")
    print(f"  overlays:     {overview}  and one PNG per case beside it")
    return 0 if pred.ok and not ev["missing"] and not ev["errors"] else 1


def _overlays(folder: Path, pred_dir: Path, out: Path) -> Path:
    """Per-case PNGs and an overview: FLAIR (the last channel named FLAIR, else channel 0)."""
    import numpy as np

    from blogrr_nnu.image_io import read_image
    from blogrr_nnu.inference.predict_folder import ANOMALY_DIR
    from blogrr_nnu.overlays import write_overlay, write_overview

    dj = json.loads((folder / "dataset.json").read_text())
    names = {int(k): v.lower() for k, v in dj["channel_names"].items()}
    channel = next((k for k, v in sorted(names.items()) if "flair" in v), 0)
    ending = dj["file_ending"]
    cases = []
    for mask_file in sorted(pred_dir.glob(f"*{ending}")):
        cid = mask_file.name[: -len(ending)]
        info = json.loads((pred_dir / ANOMALY_DIR / f"{cid}.json").read_text())
        label = folder / "labelsTs" / f"{cid}{ending}"
        item = {"image": read_image(folder / "imagesTs" / f"{cid}_{channel:04d}{ending}")[0],
                "pred": read_image(mask_file)[0],
                "amap": read_image(pred_dir / ANOMALY_DIR / f"{cid}_anomaly{ending}")[0],
                "tau": float(info["tau"]),
                "gt": read_image(label)[0] if label.is_file() else None}
        if item["gt"] is not None:
            p, g = item["pred"] > 0, item["gt"] > 0
            item["title"] = f"{cid}: Dice {2 * np.logical_and(p, g).sum() / max(p.sum() + g.sum(), 1):.2f}"
        else:
            item["title"] = cid
        write_overlay(out / f"{cid}.png", **item)
        cases.append(item)
    return write_overview(out / "overview.png", cases)


if __name__ == "__main__":
    sys.exit(main())
