"""``blogrr_pseudo_labels -d ID``: GMM / fused pseudo-labels of a preprocessed dataset and their quality."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from blogrr_nnu.commands._cli import add_processes, command_parser, fail, start_logging

PROG = "blogrr_pseudo_labels"


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "blogrr_pseudo_labels",
        "Make sure every case of a preprocessed configuration has its GMM and fused pseudo-labels "
        "(blogrr_plan_and_preprocess makes them; this also brings older preprocessed data up to date) and print "
        "the Dice of the report, GMM and fused pseudo-labels against the ground truth where it exists.",
        "examples:\n  blogrr_pseudo_labels -d 501\n  blogrr_pseudo_labels -d 501 -c 2d_cpu -o quality.json\n"
        "  blogrr_pseudo_labels -d 501 --overwrite   # refit the healthy model and redo every case\n"
        "  blogrr_pseudo_labels -d 501 --fusion_margin_mm 18   # fused labels with another margin\n"
        "  blogrr_pseudo_labels -d 501 --margin_sweep 0 6 12 18 24 -f 0   # fused Dice per margin, fold 0's training "
        "cases only")
    parser.add_argument("-d", "--dataset", required=True, help="dataset id, folder name or name")
    parser.add_argument("-c", "--configuration", default=None, help="configuration (default 3d_cpu without a GPU)")
    add_processes(parser, 2, "worker processes")
    parser.add_argument("--overwrite", action="store_true", help="refit the healthy intensity model, redo every case")
    parser.add_argument("-o", "--output", default=None, help="also write per-case Dice and the summary as JSON")
    parser.add_argument("--fusion_margin_mm", type=float, default=None,
                        help="growth of the report region for the fused label (default: the plans' fusion_margin_mm, "
                        "12 unless planned otherwise; docs/pseudo_labels.md); recorded in the plans")
    parser.add_argument("--margin_sweep", type=float, nargs="+", default=None, metavar="MM",
                        help="print the fused label's Dice against the labels of the fold's tumour TRAINING cases for "
                        "each margin (writes nothing; test cases are never read)")
    parser.add_argument("-f", "--fold", default="0", help="fold whose training cases the sweep uses (default 0)")
    parser.add_argument("--preprocessed", default=None, help="preprocessed root (default $BLOGRR_preprocessed ...)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    start_logging()
    import torch

    from blogrr_nnu.image_io import atomic_write
    from blogrr_nnu.paths import DatasetNotFoundError, preprocessed_root, resolve_dataset
    from blogrr_nnu.planners.api import load_plans
    from blogrr_nnu.pseudo_labels import add_image_pseudo_labels, quality, quality_table

    try:
        folder = resolve_dataset(args.dataset, preprocessed_root(args.preprocessed))
        plans = load_plans(folder)
        config = args.configuration or ("3d_fullres" if torch.cuda.is_available() else "3d_cpu")
        if config not in plans["configurations"]:
            raise ValueError(f"configuration {config!r} is not in the plans ({', '.join(plans['configurations'])})")
        data = folder / plans["configurations"][config]["data_identifier"]
        if not any(data.glob("*.pkl")):
            raise FileNotFoundError(f"{data}: nothing preprocessed; run blogrr_plan_and_preprocess -d {folder.name} -c {config}")
        if args.margin_sweep:
            return _sweep(data, folder, args)
        from blogrr_nnu.gmm import DEFAULT_FUSION_MARGIN_MM

        # the margin the plans record (what the labels were made with), unless asked for another one
        margin = plans.get("fusion_margin_mm", DEFAULT_FUSION_MARGIN_MM) if args.fusion_margin_mm is None \
            else float(args.fusion_margin_mm)
        add_image_pseudo_labels(data, plans["configurations"][config]["patch_size"],
                                num_processes=args.num_processes, overwrite=args.overwrite,
                                fusion_margin_mm=margin)
        if plans.get("fusion_margin_mm") != margin:
            from blogrr_nnu.image_io import atomic_write
            from blogrr_nnu.planners.planner import PLANS_NAME

            plans["fusion_margin_mm"] = margin
            atomic_write(folder / f"{PLANS_NAME}.json", lambda tmp: Path(tmp).write_text(json.dumps(plans, indent=1)))
    except (DatasetNotFoundError, ValueError, FileNotFoundError) as exc:
        return fail(PROG, str(exc))
    result = quality(data)
    print(f"{folder.name} {config}: pseudo-labels vs ground truth ({result['summary']['report']['n']} cases with labels)")
    print(quality_table(result))
    if args.output:
        atomic_write(args.output, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1)))
        print(f"written: {args.output}")
    return 0


def _sweep(data, folder, args) -> int:
    """``--margin_sweep``: fused Dice per margin on the fold's tumour training cases."""
    from blogrr_nnu.pseudo_labels import margin_sweep
    from blogrr_nnu.splits import case_roles, fold_keys, load_or_create_splits

    keys = fold_keys(load_or_create_splits(folder, data), args.fold, case_roles(data))["tumor_train"]
    result = margin_sweep(data, keys, args.margin_sweep)
    print(f"{folder.name}: fused pseudo-label vs label on the {len(result['cases'])} labelled tumour training cases "
          f"of fold {args.fold} (no test case)")
    print("| margin (mm) | fused Dice (mean) |\n|---|---|")
    for m, d in zip(result["margins"], result["mean_dice"]):
        print(f"| {m:g} | {d:.3f} |")
    print(f"best: {result['best_margin']:g} mm")
    if args.output:
        from blogrr_nnu.image_io import atomic_write

        atomic_write(args.output, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1)))
        print(f"written: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
