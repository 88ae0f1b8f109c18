"""``blogrr_evaluate``: Dice, HD95, sensitivity, precision and volumes of predictions against labels."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from blogrr_nnu.commands._cli import add_processes, command_parser, fail, start_logging

PROG = "blogrr_evaluate"


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        PROG,
        "Score every prediction in PRED_DIR against the label of the same case in LABELS_DIR (files "
        "paired by name): Dice, HD95 in mm (max of the two directed 95th percentiles, as BraTS), sensitivity, "
        "precision and volumes in ml, foreground = value > 0. Prints mean +- std per metric and writes a JSON "
        "summary (per case, summary, missing, extra, errors; undefined values as null) and a per-case CSV. "
        "Empty masks: both empty is a perfect case (Dice 1, HD95 0); one empty gives Dice 0 and an undefined "
        "HD95, left out of the mean and counted (see docs/evaluation.md). Labels without a prediction are "
        "reported as missing, predictions without a label as extra; neither is scored. "
        "Exit status: 0 ok, 1 a case is missing or could not be scored (the others are still written), "
        "2 usage error.",
        "examples:\n  blogrr_evaluate -ref Dataset501_BlogrrDemo/labelsTs -pred predictions/\n"
        "  blogrr_evaluate -ref labelsTs -pred predictions -o results/eval.json --csv results/eval.csv -np 2\n"
        "  blogrr_evaluate -ref labelsTs -pred predictions --file_ending .nii")
    parser.add_argument("-ref", "--ref", required=True, metavar="LABELS_DIR", help="folder of reference labels")
    parser.add_argument("-pred", "--pred", required=True, metavar="PRED_DIR", help="folder of predictions")
    parser.add_argument("-o", "--output", default=None, metavar="JSON",
                        help="summary JSON file (default: PRED_DIR/summary.json)")
    parser.add_argument("--csv", default=None, metavar="CSV",
                        help="per-case CSV file (default: beside the JSON, <JSON stem>_per_case.csv)")
    add_processes(parser, 1, "cases scored in parallel")
    parser.add_argument("--file_ending", default=".nii.gz", help="file name ending of labels and predictions "
                        "(default .nii.gz)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 missing or unscorable cases, 2 usage error)."""
    args = build_parser().parse_args(argv)
    start_logging(args.verbose)
    from blogrr_nnu.metrics import evaluate_folders, format_table, write_results  # deferred: --help stays light

    try:
        result = evaluate_folders(args.ref, args.pred, file_ending=args.file_ending, num_processes=args.num_processes)
    except ValueError as exc:
        return fail(PROG, str(exc))
    json_path = Path(args.output) if args.output else Path(args.pred) / "summary.json"
    csv_path = Path(args.csv) if args.csv else json_path.with_name(json_path.stem + "_per_case.csv")
    print(format_table(result))
    try:
        write_results(result, json_path, csv_path)
    except OSError as exc:
        return fail(PROG, f"cannot write results ({exc}); choose another -o / --csv path")
    print(f"wrote {json_path}\nwrote {csv_path}")
    pred_dir, ending = Path(args.pred), args.file_ending
    for case in result["missing"]:
        print(f"MISSING {case}: no prediction {pred_dir / (case + ending)} for label "
              f"{Path(args.ref) / (case + ending)}; not scored", file=sys.stderr)
    for case in result["extra"]:
        print(f"EXTRA {case}: prediction {pred_dir / (case + ending)} has no label in {args.ref}; not scored",
              file=sys.stderr)
    for row in result["errors"]:
        print(f"ERROR {row['case']}: {row['error']}", file=sys.stderr)
    return 1 if result["missing"] or result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
