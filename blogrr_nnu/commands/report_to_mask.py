"""``blogrr_report_to_mask``: radiology reports -> template-space pseudo-label masks + JSON accounts."""
from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

from blogrr_nnu.commands._cli import command_parser, fail, start_logging

PROG = "blogrr_report_to_mask"
# blogrr_nnu.reports.roles.EXTENTS / DEFAULT_EXTENT, written out so --help needs no heavy import (a test
# checks they agree).
EXTENTS = ("whole_tumour", "lesion")
DEFAULT_EXTENT = "whole_tumour"


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        PROG,
        "Turn free-text radiology reports (<case>.txt, UTF-8) into pseudo-label masks in template "
        "space: for each report, <case>.nii.gz (uint8, Hammers atlas 1 mm MNI grid, union of the atlas regions "
        "of the lesion sites) and <case>.json (sites, sides, size, character spans, matched Hammers label ids "
        "and names, exclusions, warnings). A report naming no lesion site gets its JSON with an empty site list "
        "and a warning, and no mask. Unreadable, non-UTF-8 or empty files are reported by name and skipped. "
        "Exit status: 0 ok (also when some reports name no site), 1 if a report could not be used, 2 usage error.",
        "examples:\n"
        "  blogrr_report_to_mask -i $BLOGRR_raw/Dataset501_BlogrrDemo/reportsTr -o /tmp/report_masks\n"
        "  blogrr_report_to_mask -i reportsTr -o masks --explain\n"
        "  blogrr_report_to_mask -i reportsTr/case_007.txt -o masks --dilate_mm 5\n"
        "  blogrr_report_to_mask -i reportsTr -o masks --extent lesion\n"
        "Masks are in template space; warp them onto a scan with blogrr_nnu.registration.warp_to_case.")
    parser.add_argument("-i", "--input", required=True, help="folder of <case>.txt reports, or one report file")
    parser.add_argument("-o", "--output", required=True, help="output folder (created if needed)")
    parser.add_argument("--explain", action="store_true",
                        help="print, per report, each site with its side and the text spans that produced them")
    parser.add_argument("--dilate_mm", type=float, default=0.0,
                        help="grow each mask by this distance in mm, kept inside the brain (default 0)")
    parser.add_argument("--extent", choices=EXTENTS, default=DEFAULT_EXTENT,
                        help="which sites a mask draws: whole_tumour = lesion + oedema + necrosis sites (default, the "
                        "extent of BraTS-style whole-tumour labels), lesion = the lesion sites only; compressed and "
                        "hedged ('may represent extension') sites are never drawn")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 some report unusable, 2 usage error)."""
    args = build_parser().parse_args(argv)
    start_logging(args.verbose)
    if not math.isfinite(args.dilate_mm) or args.dilate_mm < 0:
        return fail(PROG, f"--dilate_mm must be a finite number >= 0, got {args.dilate_mm}")
    # Deferred imports: the atlas / SimpleITK stack is not needed for --help.
    from tqdm import tqdm

    from blogrr_nnu.reports.files import ReportReadError, format_explanation, list_reports, report_to_mask_files

    try:
        reports = list_reports(args.input)
    except (FileNotFoundError, ValueError) as exc:
        return fail(PROG, str(exc))
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        return fail(PROG, f"{out_dir} exists and is not a folder; choose another -o")
    if not args.verbose:
        # The parser and mask builder log their warnings without the file name; this command prints
        # each warning itself, prefixed with the file, so silence the anonymous copies.
        for name in ("blogrr_nnu.reports.parser", "blogrr_nnu.reports.masks"):
            logging.getLogger(name).setLevel(logging.ERROR)

    def warn(line: str) -> None:
        tqdm.write(line, file=sys.stderr)  # keeps the progress bar intact

    n_failed = n_masks = n_empty = 0
    for path in tqdm(reports, desc="reports", unit="report", disable=args.quiet):
        try:
            result = report_to_mask_files(path, out_dir, dilate_mm=args.dilate_mm, extent=args.extent)
        except ReportReadError as exc:
            warn(f"ERROR {exc} -> skipped")
            n_failed += 1
            continue
        if result["mask"] is None:
            n_empty += 1
            what = "an empty site list" if not result["sites"] else "its sites, none of which it draws"
            warn(f"WARNING {path}: no lesion site found to draw (extent {args.extent}); wrote {result['case']}.json "
                 f"with {what}, and no mask")
        else:
            n_masks += 1
        for w in result["warnings"]:
            if not w.startswith("no lesion site found"):  # already said, with the file name
                warn(f"WARNING {path}: {w}")
        if args.explain:
            tqdm.write(format_explanation(result))
    print(f"{n_masks} mask(s) written to {out_dir}; {n_empty} report(s) without a lesion site (JSON only); "
          f"{n_failed} report(s) could not be used")
    return 1 if n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
