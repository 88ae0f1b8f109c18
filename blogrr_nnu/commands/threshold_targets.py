"""``blogrr_threshold_targets -d ID``: do the pseudo-labels' best thresholds track the labels' (training fold only)?"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from blogrr_nnu.commands._cli import command_parser, fail, start_logging

PROG = "blogrr_threshold_targets"

EXAMPLES = """examples:
  blogrr_threshold_targets -d 501                      # DAE run of fold 0, 3d_cpu
  blogrr_threshold_targets -d 501 -tr BlogrrTrainerNormative   # the default BLOGRR run's maps (its own mean subtracted)
  blogrr_threshold_targets -d 501 -tr BlogrrTrainer    # the plain maps of a BLOGRR run trained with --maps plain
  blogrr_threshold_targets -d 501 -o targets.json
  blogrr_threshold_targets -d 501 --feature_study      # also: which map statistics should T see?
  blogrr_threshold_targets -d 501 --threshold_model stats   # leave-one-out with the quantile T
  blogrr_threshold_targets -d 501 --normative          # a plain run's maps minus its healthy cases' mean map
  blogrr_threshold_targets -d 501 -tr BlogrrTrainerNormative --slope_prior 0.59   # T's fit with another prior

Reads only the tumour training cases of the fold that have a label (labelsTrTumor/), never test cases.
The run must be trained first (e.g. blogrr_train 501 0 -tr dae)."""


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "blogrr_threshold_targets",
        "For every labelled tumour training case of a fold: the Dice-optimal threshold of its anomaly "
        "map against the label (tau*_GT) and the target threshold of each pseudo-label (report region, report size, "
        "report volume (ABC/3), GMM, fused: tau*_P); prints Spearman rho between them, the Dice thresholding at "
        "tau*_P gives, and what a map threshold network (default: the contrast T) learns from each target in "
        "leave-one-out (docs/training.md).",
        EXAMPLES)
    parser.add_argument("-d", "--dataset", required=True, help="dataset id, folder name or name")
    parser.add_argument("-c", "--configuration", default="3d_cpu", help="configuration (default 3d_cpu)")
    parser.add_argument("-f", "--fold", default="0", help="fold (default 0)")
    parser.add_argument("-tr", "--trainer", default="DAETrainer",
                        help="trainer class of the run whose reconstruction network makes the maps (default DAETrainer)")
    parser.add_argument("--threshold_model", default="contrast", choices=["contrast", "stats"],
                        help="the map threshold network fitted in leave-one-out (default contrast, the trainer's default)")
    parser.add_argument("--feature_study", action="store_true",
                        help="also compare candidate inputs of a map threshold network (leave-one-out; how the "
                        "default inputs were chosen, docs/training.md)")
    parser.add_argument("--normative", action="store_true",
                        help="on a run trained on plain maps (the DAE's default): subtract the mean map of the "
                        "fold's healthy training cases from every map, voxel by voxel on the template grid, before "
                        "everything else, and fit T with the normative maps' slope prior (the study behind BLOGRR's "
                        "normative default, docs/training.md). A run trained on normative maps always has its "
                        "checkpoint's own mean subtracted")
    parser.add_argument("--slope_prior", type=float, default=None,
                        help="the contrast T's slope prior in the leave-one-out fit (default: the trainer's for the "
                        "kind of map, 0.59 plain, 0.78 normative; how they were chosen, docs/training.md)")
    parser.add_argument("-o", "--output", default=None, help="also write the table's numbers and every case as JSON")
    parser.add_argument("--preprocessed", default=None, help="preprocessed root (default $BLOGRR_preprocessed ...)")
    parser.add_argument("--results", default=None, help="results root (default $BLOGRR_results ...)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2: bad input)."""
    args = build_parser().parse_args(argv)
    start_logging()
    from blogrr_nnu.image_io import atomic_write
    from blogrr_nnu.paths import DatasetNotFoundError, preprocessed_root, resolve_dataset, results_root
    from blogrr_nnu.planners.api import load_plans
    from blogrr_nnu.planners.planner import PLANS_NAME
    from blogrr_nnu.trainers.target_diagnostic import (case_maps, diagnose, feature_markdown, feature_study,
                                                       healthy_mean_map, markdown, run_normative_map,
                                                       subtract_normative)

    try:
        pre = resolve_dataset(args.dataset, preprocessed_root(args.preprocessed))
        plans = load_plans(pre)
        if args.configuration not in plans["configurations"]:
            raise ValueError(f"configuration {args.configuration!r} is not in the plans "
                             f"({', '.join(plans['configurations'])})")
        data = pre / plans["configurations"][args.configuration]["data_identifier"]
        run = results_root(args.results) / pre.name / f"{args.trainer}__{PLANS_NAME}__{args.configuration}"
        if not run.is_dir():
            raise FileNotFoundError(f"{run}: no such run; train it first (blogrr_train {pre.name} {args.fold} -c "
                                    f"{args.configuration} -tr dae)")
        cases = case_maps(run, data, pre, args.fold)
        own_mean = run_normative_map(run, args.fold)
        if own_mean is not None:
            cases, maps = subtract_normative(cases, own_mean), " minus the run's own mean map (trained on normative maps)"
        elif args.normative:
            cases = subtract_normative(cases, healthy_mean_map(run, data, pre, args.fold))
            maps = " minus the mean map of the fold's healthy training cases (--normative)"
        else:
            maps = ""
        result = diagnose(cases, args.threshold_model, normative=own_mean is not None or args.normative,
                          prior=args.slope_prior)
    except (DatasetNotFoundError, ValueError, FileNotFoundError) as exc:
        return fail(PROG, str(exc))
    print(f"{pre.name} {args.configuration} fold {args.fold}, maps of {run.name}{maps}")
    print(markdown(result))
    if args.feature_study:
        result["feature_study"] = feature_study(cases, result)
        print("\ninputs of a map threshold network, leave-one-out over the same cases:\n")
        print(feature_markdown(result["feature_study"]))
    if args.output:
        text = json.dumps({"dataset": pre.name, "configuration": args.configuration, "fold": args.fold,
                           "run": run.name, **result}, indent=1)
        atomic_write(args.output, lambda tmp: Path(tmp).write_text(text))
        print(f"written: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
