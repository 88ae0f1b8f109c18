"""``blogrr_report_quality``: how good is report reading? Pseudo-labels against a dataset's ground truth
(``-d``), or report masks against the lesion sites a labelled report folder states (``--corpus``)."""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

from blogrr_nnu.paths import DatasetNotFoundError, raw_root, resolve_dataset

from blogrr_nnu.commands._cli import add_processes, command_parser, fail, start_logging

PROG = "blogrr_report_quality"
# blogrr_nnu.reports.roles.EXTENTS / DEFAULT_EXTENT, written out so --help needs no heavy import (a test
# checks they agree).
EXTENTS = ("whole_tumour", "lesion")
DEFAULT_EXTENT = "whole_tumour"


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        PROG,
        "Score report reading. With -d DATASET: for every case with an image, a report and a label "
        "(imagesTrTumor + reportsTr + labelsTrTumor, imagesTs + reportsTs + labelsTs), register the case to the MNI "
        "template (T1 channel if there is one), warp the report's atlas mask onto the case grid, keep it inside the "
        "brain, and print Dice, coverage (fraction of tumour voxels inside the pseudo-label), the pseudo-label / "
        "tumour volume ratio and the registration's brain Dice, per case and as mean +- std; reports naming no site "
        "count as coverage 0. With --corpus DIR: a folder of reports <id>.txt with expected lesion sites "
        "(expected*.json: {id: [{\"side\": \"L\"|\"R\"|\"M\", \"site\": \"frontal\"|...}]}); each report mask "
        "(as blogrr_report_to_mask draws it) is compared in template space with the union of the Hammers labels "
        "of its expected sites: mean atlas Dice, side errors (more than 5 %% of the mask over 5 mm into a "
        "hemisphere no expected site names) and reports expecting no site that still give a mask, per labels "
        "file and extent. Labels are used for this evaluation only. "
        "Exit status: 0 ok, 1 some case or report could not be scored, 2 usage error.",
        "examples:\n  blogrr_report_quality -d 501\n  blogrr_report_quality -d 501 --raw /tmp/demo_raw -np 2 "
        "-o quality.json\n  blogrr_report_quality -d Dataset501_BlogrrDemo --dilate_mm 5 --extent lesion\n"
        "  blogrr_report_quality --corpus ../shared/real_reports\n"
        "  blogrr_report_quality --corpus ../shared/real_reports --expected ../shared/real_reports/expected.json "
        "--extent lesion --details")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-d", "--dataset", help="dataset id (501), folder name (Dataset501_X) or name (X)")
    source.add_argument("--corpus", metavar="DIR",
                        help="folder of reports <id>.txt with expected lesion sites (expected*.json)")
    parser.add_argument("--expected", metavar="FILE", action="append",
                        help="with --corpus: expected-sites JSON to score against (repeatable; default every "
                        "expected*.json in DIR)")
    parser.add_argument("--extent", choices=EXTENTS, default=None,
                        help="pseudo-label extent: whole_tumour (lesion + oedema + necrosis sites) or lesion; default "
                        f"{DEFAULT_EXTENT} with -d, both with --corpus")
    parser.add_argument("--details", action="store_true",
                        help="with --corpus: also list every report with Dice < 0.9 or a side error")
    parser.add_argument("--include_test", action="store_true",
                        help="-d: also score the test cases (imagesTs + reportsTs + labelsTs). Off by default: a number "
                        "that guides a choice (e.g. the pseudo-label extent) must come from training labels only")
    parser.add_argument("--raw", default=None, help="raw root folder (default: $BLOGRR_raw, $nnUNet_raw, ./blogrr_data/raw)")
    add_processes(parser, 1, "cases scored in parallel")
    parser.add_argument("-o", "--output", default=None, help="write per-case results and the summary to this JSON file")
    parser.add_argument("--dilate_mm", type=float, default=0.0, help="grow each template mask by this many mm (default 0)")
    parser.add_argument("--seed", type=int, default=1,
                        help="registration seed, >= 1 (default 1; SimpleITK would read 0 as 'seed from the clock')")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return parser


def _corpus_main(args: argparse.Namespace) -> int:
    """``--corpus DIR``: atlas Dice and side errors of report masks against expected lesion sites."""
    from blogrr_nnu.reports.corpus_quality import ExpectedLabelsError, format_corpus_table, score_corpus

    extents = (args.extent,) if args.extent else EXTENTS
    try:
        result = score_corpus(args.corpus, args.expected, extents=extents)
    except (FileNotFoundError, ExpectedLabelsError, ValueError) as exc:
        return fail(PROG, str(exc))
    print(format_corpus_table(result, details=args.details))
    if args.output:
        from blogrr_nnu.image_io import atomic_write

        atomic_write(args.output, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1), encoding="utf-8"))
        print(f"wrote {args.output}")
    errors = sorted({e for row in result["rows"] for e in row["errors"]})
    for line in errors:
        print(f"ERROR {line}", file=sys.stderr)
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 a case could not be scored, 2 usage error)."""
    args = build_parser().parse_args(argv)
    start_logging(args.verbose)
    if args.expected and not args.corpus:
        return fail(PROG, "--expected goes with --corpus DIR")
    if args.seed < 1:
        return fail(PROG, f"--seed must be >= 1 (SimpleITK reads 0 as 'seed from the clock'), got {args.seed}")
    if not math.isfinite(args.dilate_mm) or args.dilate_mm < 0:
        return fail(PROG, f"--dilate_mm must be a finite number >= 0, got {args.dilate_mm}")
    if not args.verbose:
        # Parser warnings are collected per case and printed with the case below.
        for name in ("blogrr_nnu.reports.parser", "blogrr_nnu.reports.masks", "blogrr_nnu.registration"):
            logging.getLogger(name).setLevel(logging.ERROR)
    if args.corpus:
        return _corpus_main(args)
    from blogrr_nnu.raw_dataset import DatasetJsonError
    from blogrr_nnu.reports.quality import dataset_quality, format_table  # deferred: heavy imports

    try:
        folder = resolve_dataset(args.dataset, raw_root(args.raw))
        result = dataset_quality(folder, num_processes=args.num_processes, dilate_mm=args.dilate_mm,
                                 seed=args.seed, progress=not args.quiet, extent=args.extent or DEFAULT_EXTENT,
                                 splits=("tumor", "test") if args.include_test else ("tumor",))
    except (DatasetNotFoundError, DatasetJsonError, ValueError) as exc:
        return fail(PROG, str(exc))
    print(format_table(result))
    for row in result["cases"]:
        if row.get("no_site"):
            print(f"WARNING {row['case']}: the report names no lesion site; its coverage, Dice and volume ratio "
                  f"count as 0", file=sys.stderr)
        for w in row.get("warnings", []):
            if args.verbose and not w.startswith("no lesion site"):
                print(f"NOTE {row['case']}: {w}", file=sys.stderr)
    if args.output:
        from blogrr_nnu.image_io import atomic_write

        atomic_write(args.output, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1), encoding="utf-8"))
        print(f"wrote {args.output}")
    errors = [r for r in result["cases"] if "error" in r]
    for r in errors:
        print(f"ERROR {r['case']}: {r['error']}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
