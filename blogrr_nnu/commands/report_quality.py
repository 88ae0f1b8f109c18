"""``blogrr_report_quality``: how well do report pseudo-labels cover the true tumours of a dataset?"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

from blogrr_nnu.paths import DatasetNotFoundError, raw_root, resolve_dataset

PROG = "blogrr_report_quality"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Score report pseudo-labels against ground truth. For every case with an image, a report and "
        "a label (imagesTrTumor + reportsTr + labelsTrTumor, imagesTs + reportsTs + labelsTs): register the case "
        "to the MNI template (T1 channel if there is one), warp the report's atlas mask onto the case grid, keep "
        "it inside the brain, and print Dice, coverage (fraction of tumour voxels inside the pseudo-label), the "
        "pseudo-label / tumour volume ratio and the registration's brain Dice, per case and as mean +- std. "
        "Reports naming no site count as coverage 0. Labels are used for this evaluation only. "
        "Exit status: 0 ok, 1 some case could not be scored, 2 usage error.",
        epilog="examples:\n  blogrr_report_quality -d 501\n  blogrr_report_quality -d 501 --raw /tmp/demo_raw -np 2 "
        "-o quality.json\n  blogrr_report_quality -d Dataset501_BlogrrDemo --dilate_mm 5",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-d", "--dataset", required=True, help="dataset id (501), folder name (Dataset501_X) or name (X)")
    parser.add_argument("--raw", default=None, help="raw root folder (default: $BLOGRR_raw, $nnUNet_raw, ./blogrr_data/raw)")
    parser.add_argument("-np", "--num_processes", type=int, default=1, help="cases scored in parallel (default 1)")
    parser.add_argument("-o", "--output", default=None, help="write per-case results and the summary to this JSON file")
    parser.add_argument("--dilate_mm", type=float, default=0.0, help="grow each template mask by this many mm (default 0)")
    parser.add_argument("--seed", type=int, default=1,
                        help="registration seed, >= 1 (default 1; SimpleITK would read 0 as 'seed from the clock')")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 a case could not be scored, 2 usage error)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if args.num_processes < 1:
        print(f"{PROG}: -np must be >= 1, got {args.num_processes}", file=sys.stderr)
        return 2
    if args.seed < 1:
        print(f"{PROG}: --seed must be >= 1 (SimpleITK reads 0 as 'seed from the clock'), got {args.seed}",
              file=sys.stderr)
        return 2
    if not math.isfinite(args.dilate_mm) or args.dilate_mm < 0:
        print(f"{PROG}: --dilate_mm must be a finite number >= 0, got {args.dilate_mm}", file=sys.stderr)
        return 2
    if not args.verbose:
        # Parser warnings are collected per case and printed with the case below.
        for name in ("blogrr_nnu.reports.parser", "blogrr_nnu.reports.masks", "blogrr_nnu.registration"):
            logging.getLogger(name).setLevel(logging.ERROR)
    from blogrr_nnu.raw_dataset import DatasetJsonError
    from blogrr_nnu.reports.quality import dataset_quality, format_table  # deferred: heavy imports

    try:
        folder = resolve_dataset(args.dataset, raw_root(args.raw))
        result = dataset_quality(folder, num_processes=args.num_processes, dilate_mm=args.dilate_mm,
                                 seed=args.seed, progress=not args.quiet)
    except (DatasetNotFoundError, DatasetJsonError, ValueError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
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
