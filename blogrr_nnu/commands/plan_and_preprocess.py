"""``blogrr_plan_and_preprocess``: fingerprint, plans and preprocessed data of a raw dataset."""
from __future__ import annotations

import argparse
import logging
import sys

from blogrr_nnu.commands._cli import add_processes, command_parser, fail, start_logging

PROG = "blogrr_plan_and_preprocess"


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "blogrr_plan_and_preprocess",
        "Verify a raw dataset, register every case to the MNI template, fingerprint the dataset, "
        "plan 2d / 3d_fullres (/ 3d_lowres) and CPU configurations, and preprocess the chosen ones "
        "(template-aligned, cropped, normalised arrays with brain mask, report pseudo-label and ground truth).",
        "examples:\n  blogrr_plan_and_preprocess -d 501\n  blogrr_plan_and_preprocess -d 501 -c 3d_cpu -np 2\n"
        "  blogrr_plan_and_preprocess -d Dataset501_BlogrrDemo -c 2d 3d_fullres --gpu_memory_target 24\n"
        "  blogrr_plan_and_preprocess -d 502 --channels T1 T2   # healthy set without T1ce/FLAIR (e.g. IXI, HCP)")
    parser.add_argument("-d", "--dataset", required=True, help="dataset id, folder name or name")
    parser.add_argument("-c", "--configurations", nargs="+", default=None,
                        help="configurations to preprocess (default: 2d 3d_fullres 3d_lowres with a CUDA GPU, "
                        "3d_cpu 2d_cpu without); all are planned")
    parser.add_argument("--channels", nargs="+", default=None, metavar="NAME",
                        help="channels the model uses, by name (default: all). Needed when healthy and tumour scans "
                        "have different channels; blogrr_verify_dataset names the common ones. Stored in the plans: "
                        "training and prediction use these only")
    add_processes(parser, 2, "worker processes")
    parser.add_argument("--gpu_memory_target", type=float, default=8.0, help="GPU memory target in GB (default 8)")
    parser.add_argument("--verify_dataset_integrity", action="store_true",
                        help="accepted for nnU-Net compatibility: verification always runs first")
    parser.add_argument("--overwrite", action="store_true", help="redo registrations and finished cases")
    parser.add_argument("--raw", default=None, help="raw root (default: $BLOGRR_raw, $nnUNet_raw, ./blogrr_data/raw)")
    parser.add_argument("--preprocessed", default=None, help="preprocessed root (default: $BLOGRR_preprocessed, ...)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the registration sampling (default 0)")
    parser.add_argument("--fusion_margin_mm", type=float, default=None,
                        help="growth of the report region for the fused pseudo-label (default 12; chosen on training "
                        "labels only, docs/pseudo_labels.md; sweep it with blogrr_pseudo_labels --margin_sweep)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    start_logging(level=logging.INFO)
    from blogrr_nnu.paths import DatasetNotFoundError
    from blogrr_nnu.planners.api import load_plans, plan_and_preprocess, summary_table
    from blogrr_nnu.verify import DatasetVerificationError

    try:
        out = plan_and_preprocess(args.dataset, args.configurations, num_processes=args.num_processes,
                                  gpu_memory_target_gb=args.gpu_memory_target, overwrite=args.overwrite,
                                  raw=args.raw, preprocessed=args.preprocessed, seed=args.seed,
                                  channels=args.channels, fusion_margin_mm=args.fusion_margin_mm)
    except DatasetVerificationError as exc:
        print(f"blogrr_plan_and_preprocess: the dataset has errors, nothing was written:\n{exc}", file=sys.stderr)
        return 1
    except (DatasetNotFoundError, ValueError, FileNotFoundError) as exc:
        return fail(PROG, str(exc))
    plans = load_plans(out)
    print(summary_table(plans))
    from blogrr_nnu.channels import channel_notes

    if "channels" in plans:
        print(f"\nchannels: {' '.join(plans['channels']['names'])}")
        for note in channel_notes(plans["channels"]["names"]):
            print(f"note: {note}")
    print(f"\npreprocessed data and plans: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
