"""``blogrr_convert_brats``: BraTS tumour cases + healthy scans + reports -> a verified raw dataset."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from blogrr_nnu.commands._cli import add_processes, command_parser, fail, start_logging

PROG = "blogrr_convert_brats"

EPILOG = """examples:
  # BraTS 2021 + IXI (T1, T2, PD; not skull-stripped; T1 sagittal, T2/PD axial) + a CSV of reports
  blogrr_convert_brats -i BraTS2021_Training_Data --healthy IXI --healthy_preset ixi \\
      --brain_extraction --resample_healthy --reports reports.csv -d 502 -n BraTSIXI
  # BraTS 2023 (GLI) + HCP structural (skull-stripped T1w/T2w) + a folder of <case>.txt
  blogrr_convert_brats -i ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData --healthy HCP --healthy_preset hcp \\
      --reports reports/ -d 503 -n BraTSHCP --test_fraction 0.25
  # your own naming: healthy/<id>_t1.nii.gz, healthy/<id>_t2.nii.gz; fixed test cases
  blogrr_convert_brats -i brats --healthy healthy --healthy_channel 'T1={case}_t1.nii.gz' 'T2={case}_t2.nii.gz' \\
      --reports reports.json -d 504 --test_cases BraTS2021_00000 BraTS2021_00002

then: blogrr_verify_dataset -d 502 ; blogrr_plan_and_preprocess -d 502 --channels T1 T2
(the command prints the --channels to use when healthy and tumour scans have different channels)"""


def build_parser() -> argparse.ArgumentParser:
    p = command_parser(
        "blogrr_convert_brats",
        "Convert BraTS 2020/2021 (<case>_t1/_t1ce/_t2/_flair/_seg) or BraTS 2023+ (<case>-t1n/-t1c/-t2w/"
        "-t2f/-seg) case folders, a folder of healthy scans in their own naming and radiology reports into a raw "
        "dataset (docs/data_format.md): channels T1 T1ce T2 FLAIR, labels merged to whole tumour, a seeded "
        "training/test split, optional brain extraction (deepbet) of the healthy scans. Written atomically and "
        "verified: on any error nothing is left behind.",
        EPILOG)
    p.add_argument("-i", "--input", required=True, help="BraTS folder (case folders at any depth, either naming)")
    p.add_argument("--healthy", required=True, help="folder of healthy scans")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--healthy_preset", choices=["ixi", "hcp"],
                   help="ixi: {case}-T1/-T2/-PD.nii.gz; hcp: {case}/T1w/T1w_acpc_dc_restore_brain.nii.gz + T2w")
    g.add_argument("--healthy_channel", nargs="+", metavar="NAME=PATTERN",
                   help="healthy channels by file pattern below --healthy, {case} = case id, * = any characters "
                   "(e.g. T1={case}-T1.nii.gz T2={case}-T2.nii.gz)")
    p.add_argument("--reports", default=None, help="folder of <case>.txt, or a CSV/TSV (case_id, report) or JSON "
                   "file keyed by BraTS case id")
    p.add_argument("-d", "--dataset_id", type=int, required=True, help="id of the new dataset (1-999)")
    p.add_argument("-n", "--name", default="BraTS", help="dataset name (letters, digits, _; default BraTS)")
    p.add_argument("--test_fraction", type=float, default=0.2, help="share of tumour cases held out (default 0.2)")
    p.add_argument("--test_cases", nargs="+", default=None, metavar="ID", help="explicit test case ids")
    p.add_argument("--missing_reports", choices=["error", "test", "skip"], default="error",
                   help="tumour cases without a report: stop (default), hold them out as test cases, or leave them out")
    p.add_argument("--brain_extraction", action="store_true",
                   help="brain-extract the healthy scans with deepbet (offline; for scans with skull, e.g. IXI)")
    p.add_argument("--bet_channel", default=None, help="healthy channel the brain mask is computed on (default T1)")
    p.add_argument("--resample_healthy", action="store_true",
                   help="resample healthy channels onto the first channel's grid (world coordinates, no registration)")
    p.add_argument("--skip_incomplete", action="store_true", help="leave out healthy cases that lack a channel")
    p.add_argument("--seed", type=int, default=0, help="seed of the test split (default 0)")
    add_processes(p, 2, "worker processes")
    p.add_argument("-device", default=None, choices=["cpu", "cuda"], help="brain-extraction device (default: cuda if "
                   "available)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    p.add_argument("--raw", default=None, help="raw root (default: $BLOGRR_raw, $nnUNet_raw, ./blogrr_data/raw)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 the converted dataset fails verification, 2 bad input)."""
    args = build_parser().parse_args(argv)
    start_logging(level=logging.INFO)
    from blogrr_nnu.brain_extraction import BrainExtractionUnavailable
    from blogrr_nnu.importers.assemble import ConversionRequest, convert_dataset
    from blogrr_nnu.importers.files import ConversionError
    from blogrr_nnu.importers.healthy import PRESETS, parse_channel_patterns
    from blogrr_nnu.verify import DatasetVerificationError

    try:
        patterns = dict(PRESETS[args.healthy_preset]) if args.healthy_preset else parse_channel_patterns(
            args.healthy_channel)
        req = ConversionRequest(Path(args.input), Path(args.healthy), patterns, args.dataset_id, args.name,
                                reports=Path(args.reports) if args.reports else None, test_fraction=args.test_fraction,
                                test_cases=args.test_cases, missing_reports=args.missing_reports,
                                brain_extraction=args.brain_extraction, bet_channel=args.bet_channel,
                                resample_healthy=args.resample_healthy, skip_incomplete=args.skip_incomplete,
                                seed=args.seed, num_processes=args.num_processes, overwrite=args.overwrite,
                                raw=args.raw, device=args.device)
        result = convert_dataset(req)
    except DatasetVerificationError as exc:
        text = str(exc)
        print(f"{PROG}: the converted dataset has errors, nothing was written:\n{text}", file=sys.stderr)
        if "skull-stripped" in text and not args.brain_extraction:
            print(f"{PROG}: healthy scans with skull: add --brain_extraction", file=sys.stderr)
        elif "geometry differs" in text and not args.resample_healthy:
            print(f"{PROG}: healthy channels on different grids: add --resample_healthy", file=sys.stderr)
        return 1
    except (ConversionError, BrainExtractionUnavailable, ValueError, FileNotFoundError) as exc:
        return fail(PROG, str(exc))
    c = result.counts
    print(f"wrote {result.folder}: {c['healthy']} healthy, {c['tumor']} tumour training, {c['test']} test case(s)"
          + (f"; {len(result.skipped)} without report left out" if result.skipped else ""))
    for p in result.verification.problems:
        print(p.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
