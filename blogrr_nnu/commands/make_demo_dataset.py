"""``blogrr_make_demo_dataset``: write the BraTS-like phantom demo dataset (see docs/demo_dataset.md)."""
from __future__ import annotations

import argparse
import logging
import sys
import time

from blogrr_nnu.commands._cli import add_processes, command_parser, fail

PROG = "blogrr_make_demo_dataset"

EPILOG = """examples:
  blogrr_make_demo_dataset                      # Dataset501_BlogrrDemo below $BLOGRR_raw (24/24/12 cases, 2 mm)
  blogrr_make_demo_dataset -o /data/raw --overwrite
  blogrr_make_demo_dataset --healthy 4 --tumor 4 --test 2 --spacing 4 --seed 7 -d 502 -n Tiny
  blogrr_make_demo_dataset --measure-baseline   # also print the best-global-threshold FLAIR Dice

The same seed gives byte-identical files; another seed gives other subjects. A montage.png of a few
cases and per-case metadata (phantom_meta/) are written beside the data.
"""


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    from blogrr_nnu.phantom.dataset import DEFAULT_COUNTS, DEFAULT_SEED, DEFAULT_SPACING

    p = command_parser(
        "blogrr_make_demo_dataset",
        "Generate the embedded demo dataset: healthy and tumour phantoms (T1, T2, FLAIR) on real "
                    "anatomy (deepmriprep MNI template + Hammers atlas) with whole-tumour labels and generated "
                    "radiology reports, in the blogrr raw format (nnU-Net naming).",
        EPILOG)
    p.add_argument("-o", "--output", default=None,
                   help="raw-data root that receives DatasetXXX_Name (default: $BLOGRR_raw, $nnUNet_raw, ./blogrr_data/raw)")
    p.add_argument("-d", "--dataset-id", type=int, default=501, help="dataset id 1..999 (default 501)")
    p.add_argument("-n", "--name", default="BlogrrDemo", help="dataset name (default BlogrrDemo)")
    p.add_argument("--healthy", type=int, default=DEFAULT_COUNTS["healthy"],
                   help=f"healthy training cases (default {DEFAULT_COUNTS['healthy']})")
    p.add_argument("--tumor", type=int, default=DEFAULT_COUNTS["tumor"],
                   help=f"tumour training cases with reports (default {DEFAULT_COUNTS['tumor']})")
    p.add_argument("--test", type=int, default=DEFAULT_COUNTS["test"],
                   help=f"held-out tumour test cases (default {DEFAULT_COUNTS['test']})")
    p.add_argument("--spacing", type=float, default=DEFAULT_SPACING,
                   help=f"isotropic voxel size in mm (default {DEFAULT_SPACING:g}; 4 is fast, 1 is slow)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    add_processes(p, None, flags=("-np", "--num-workers"))
    p.add_argument("--no-montage", action="store_true", help="do not write montage.png")
    p.add_argument("--measure-baseline", action="store_true",
                   help="after writing, print the Dice of the best global FLAIR threshold on the tumour cases")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status (0 ok, 2 bad input or existing folder)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from blogrr_nnu.phantom.dataset import make_demo_dataset

    t0 = time.perf_counter()
    try:
        folder = make_demo_dataset(
            args.output, dataset_id=args.dataset_id, name=args.name, n_healthy=args.healthy, n_tumor=args.tumor,
            n_test=args.test, spacing=args.spacing, seed=args.seed, overwrite=args.overwrite,
            num_workers=args.num_workers, montage=not args.no_montage, progress=not args.quiet)
    except (FileExistsError, ValueError) as exc:
        return fail(PROG, f"error: {exc}")
    elapsed = time.perf_counter() - t0
    print(f"wrote {folder}: {args.healthy} healthy, {args.tumor} tumour, {args.test} test cases "
          f"at {args.spacing:g} mm, seed {args.seed} ({elapsed:.1f} s)")
    if args.measure_baseline and args.tumor + args.test > 0:
        from blogrr_nnu.phantom.baseline import flair_threshold_dice

        r = flair_threshold_dice(folder)
        print(f"best global FLAIR threshold (z = {r['threshold']:.2f}): mean Dice {r['dice']:.3f} "
              f"+- {r['dice_std']:.3f} over {r['n_cases']} tumour cases (pooled {r['pooled_dice']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
