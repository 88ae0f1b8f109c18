"""``blogrr_pseudo_labels -d ID``: GMM / fused pseudo-labels of a preprocessed dataset and their quality."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blogrr_pseudo_labels",
        description="Make sure every case of a preprocessed configuration has its GMM and fused pseudo-labels "
        "(blogrr_plan_and_preprocess makes them; this also brings older preprocessed data up to date) and print "
        "the Dice of the report, GMM and fused pseudo-labels against the ground truth where it exists.",
        epilog="examples:\n  blogrr_pseudo_labels -d 501\n  blogrr_pseudo_labels -d 501 -c 2d_cpu -o quality.json\n"
        "  blogrr_pseudo_labels -d 501 --overwrite   # refit the healthy model and redo every case",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-d", "--dataset", required=True, help="dataset id, folder name or name")
    parser.add_argument("-c", "--configuration", default=None, help="configuration (default 3d_cpu without a GPU)")
    parser.add_argument("-np", "--num_processes", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--overwrite", action="store_true", help="refit the healthy intensity model, redo every case")
    parser.add_argument("-o", "--output", default=None, help="also write per-case Dice and the summary as JSON")
    parser.add_argument("--preprocessed", default=None, help="preprocessed root (default $BLOGRR_preprocessed ...)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
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
        add_image_pseudo_labels(data, plans["configurations"][config]["patch_size"],
                                num_processes=max(1, args.num_processes), overwrite=args.overwrite)
    except (DatasetNotFoundError, ValueError, FileNotFoundError) as exc:
        print(f"blogrr_pseudo_labels: {exc}", file=sys.stderr)
        return 2
    result = quality(data)
    print(f"{folder.name} {config}: pseudo-labels vs ground truth ({result['summary']['report']['n']} cases with labels)")
    print(quality_table(result))
    if args.output:
        atomic_write(args.output, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1)))
        print(f"written: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
