"""``blogrr_verify_dataset``: check a raw dataset and list every problem with its fix."""
from __future__ import annotations

import argparse
import sys

from blogrr_nnu.paths import DatasetNotFoundError, raw_root, resolve_dataset

from blogrr_nnu.commands._cli import add_processes, command_parser, fail, start_logging

PROG = "blogrr_verify_dataset"


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "blogrr_verify_dataset",
        "Check a raw blogrr dataset (layout, channels, geometry, labels, reports) and print every "
        "problem with the file and the fix. Writes nothing. Exit status 1 if any error is found.",
        "examples:\n  blogrr_verify_dataset -d 501\n  blogrr_verify_dataset -d Dataset501_BlogrrDemo -np 2\n"
        "  blogrr_verify_dataset -d BlogrrDemo --raw /data/blogrr_raw")
    parser.add_argument("-d", "--dataset", required=True, help="dataset id (501), folder name (Dataset501_X) or name (X)")
    parser.add_argument("--raw", default=None, help="raw root folder (default: $BLOGRR_raw, $nnUNet_raw, ./blogrr_data/raw)")
    add_processes(parser, 1, "worker processes for voxel checks")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 problems found, 2 usage error)."""
    args = build_parser().parse_args(argv)
    start_logging(args.verbose)
    from blogrr_nnu.verify import verify_dataset  # deferred: SimpleITK import is not needed for --help

    try:
        folder = resolve_dataset(args.dataset, raw_root(args.raw))
    except DatasetNotFoundError as exc:
        return fail(PROG, str(exc))
    result = verify_dataset(folder, num_processes=args.num_processes)
    print(result.format())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
