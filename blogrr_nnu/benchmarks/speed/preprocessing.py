"""``python -m blogrr_nnu.benchmarks.speed.preprocessing``: seconds per case and peak memory of each preprocessing stage.

Stages, each in its own fresh child process (see :mod:`blogrr_nnu.benchmarks.common`):

(a) registration of the registration channel to the template (``register_to_template``);
(b) the fingerprint of a case whose registration exists (``case_fingerprint``: reading + statistics);
(c) preprocessing into one configuration per isotropic spacing (``preprocess_case``), with the
    registrations of (a), written to a temporary folder.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

from blogrr_nnu.benchmarks.common import (child_info, command_line, emit, load_average, machine_info, mib,
                                          peak_rss_kib, run_in_child, sec, stats, table)

NAME = "preprocessing"
# The planner's stored axis order for template-aligned grids (plans "transpose_forward").
TRANSPOSE_FORWARD = [2, 0, 1]


def _imports() -> None:
    """Everything the stages import, so the baseline child carries the same libraries."""
    import blosc2  # noqa: F401
    import SimpleITK  # noqa: F401
    from nnunetv2.training.dataloading import nnunet_dataset  # noqa: F401

    from blogrr_nnu import registration  # noqa: F401
    from blogrr_nnu.planners import fingerprint, preprocessing  # noqa: F401
    from blogrr_nnu.reports import masks, parser  # noqa: F401


def baseline() -> dict:
    """Child task: the imports only; RSS is read before ``child_info`` imports torch, which no stage needs."""
    _imports()
    return {"rss_kib": peak_rss_kib(), **child_info()}


def patch_for(spacing: float) -> list[int]:
    """A patch like the planner's at this spacing; it only sets the Blosc2 chunking of the stored arrays."""
    side = 96 if spacing <= 1.0 else 64 if spacing <= 2.0 else 48
    return [side] * 3


def pick_cases(folder: Path, n: int) -> list:
    """The first ``n`` training cases, healthy and tumour alternating (each role sorted by id)."""
    from blogrr_nnu.raw_dataset import list_cases

    by_role, _ = list_cases(folder)
    mixed = [c for pair in itertools.zip_longest(by_role["healthy"], by_role["tumor"]) for c in pair if c is not None]
    return mixed[:n]


def stage_registration(cases: list, reg_channel: int, seed: int) -> dict:
    """Child task (a): register each case; reading is not timed (stage (b) measures it)."""
    _imports()
    import numpy as np

    from blogrr_nnu import registration as reg
    from blogrr_nnu.image_io import read_image

    t0 = time.perf_counter()
    reg.template_t1(2.0), reg.template_brain_mask(2.0)  # cached per process: a one-off, reported apart
    template_s = time.perf_counter() - t0
    seconds, results = [], {}
    for case in cases:
        image, geo = read_image(case.images[reg_channel])
        t0 = time.perf_counter()
        result = reg.register_to_template(image.astype(np.float32), geo, seed=seed)
        seconds.append(time.perf_counter() - t0)
        results[case.case_id] = result.to_dict()
    return {"seconds": seconds, "template_load_s": template_s, "registrations": results}


def stage_fingerprint(cases: list, reg_channel: int, reg_dir: str) -> dict:
    """Child task (b): ``case_fingerprint`` with the registration file in place (no registration runs)."""
    _imports()
    from blogrr_nnu.planners.fingerprint import case_fingerprint

    seconds = []
    for case in cases:
        t0 = time.perf_counter()
        case_fingerprint(case, reg_channel, Path(reg_dir) / f"{case.case_id}.json")
        seconds.append(time.perf_counter() - t0)
    return {"seconds": seconds}


def stage_preprocess(cases: list, registrations: dict, spacing: float, out_dir: str) -> dict:
    """Child task (c): preprocess every case into one configuration at isotropic ``spacing`` mm."""
    _imports()
    import blosc2

    from blogrr_nnu import registration as reg
    from blogrr_nnu.planners.preprocessing import ConfigTarget, preprocess_case
    from blogrr_nnu.reports.masks import findings_to_mask
    from blogrr_nnu.reports.parser import parse_report

    target = ConfigTarget(f"bench_{spacing:g}mm", Path(out_dir), (spacing,) * 3, patch_for(spacing))
    target.folder.mkdir(parents=True, exist_ok=True)
    # The template (it defines the grid) and the atlas behind report masks are cached per process: load
    # them before the first case and report that apart, so that the per-case numbers are per case.
    t0 = time.perf_counter()
    reg.template_brain_mask(2.0)
    reports = [c.report for c in cases if c.report is not None]
    if reports:
        findings_to_mask(parse_report(reports[0].read_text(encoding="utf-8")))
    cache_s = time.perf_counter() - t0
    seconds, shapes = [], []
    for case in cases:
        t0 = time.perf_counter()
        preprocess_case(case, registrations[case.case_id], [target], TRANSPOSE_FORWARD, overwrite=True)
        seconds.append(time.perf_counter() - t0)
        shapes.append(list(blosc2.open(str(target.folder / f"{case.case_id}.b2nd"), mode="r").shape))
    return {"seconds": seconds, "shapes": shapes, "cache_load_s": cache_s}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m blogrr_nnu.benchmarks.{NAME}",
        description="Seconds per case (mean, min, max, first case) and peak memory of the preprocessing stages of "
        "a raw dataset: (a) registration to the template, (b) fingerprint of a registered case (reading + "
        "statistics), (c) preprocessing into an isotropic configuration per --spacings. Each stage runs in its "
        "own fresh process; a process that only does the same imports gives the memory baseline. Nothing is "
        "written beside the dataset (a temporary folder is used and removed). Prints Markdown tables.",
        epilog="example:\n  python -m blogrr_nnu.benchmarks.speed.preprocessing -d 501 -n 3 --spacings 2 1 -o prep.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", "--dataset", required=True, help="raw dataset id, folder name or name (in BLOGRR_raw)")
    parser.add_argument("-n", "--num_cases", type=int, default=3,
                        help="cases: the first N, healthy and tumour alternating (default 3)")
    parser.add_argument("--spacings", type=float, nargs="+", default=[2.0, 1.0], metavar="MM",
                        help="isotropic spacings of stage (c) in mm (default: 2 1)")
    parser.add_argument("--seed", type=int, default=0, help="registration sampling seed (default 0)")
    parser.add_argument("--raw", default=None, help="raw root (default: BLOGRR_raw, see blogrr_nnu.paths)")
    parser.add_argument("-o", "--output", default=None, metavar="FILE.json", help="also write the results as JSON")
    return parser


def _row(stage: str, s: dict, rss: int, base: int, first: float, extra: str = "") -> list:
    return [stage, s["n"], sec(s["mean"]), sec(s["min"]), sec(s["max"]), sec(first), mib(rss), mib(rss - base), extra]


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns 0, or 2 on a usage error."""
    args = build_parser().parse_args(argv)
    load0 = load_average()  # before any child adds its own load
    if args.num_cases < 1 or any(s <= 0 for s in args.spacings):
        print(f"{NAME}: -n must be >= 1 and --spacings > 0", file=sys.stderr)
        return 2
    from blogrr_nnu.paths import DatasetNotFoundError, raw_root, resolve_dataset
    from blogrr_nnu.planners.fingerprint import registration_channel
    from blogrr_nnu.raw_dataset import DatasetJsonError, load_dataset_json

    try:
        folder = resolve_dataset(args.dataset, raw_root(args.raw))
        dj = load_dataset_json(folder)
    except (DatasetNotFoundError, DatasetJsonError) as exc:
        print(f"{NAME}: {exc}", file=sys.stderr)
        return 2
    cases = pick_cases(folder, args.num_cases)
    if not cases:
        print(f"{NAME}: {folder} has no training case (imagesTr / imagesTrTumor)", file=sys.stderr)
        return 2
    reg_channel = registration_channel(dj["channel_names"])
    info, _ = run_in_child(baseline)
    base = info["rss_kib"]
    results: dict = {"dataset": folder.name, "cases": [c.case_id for c in cases], "roles": [c.role for c in cases],
                     "registration_channel": reg_channel, "baseline_peak_rss_kib": base, "stages": {}}
    rows = []
    with tempfile.TemporaryDirectory(prefix="blogrr_bench_prep_") as tmp:
        reg, rss = run_in_child(stage_registration, cases, reg_channel, args.seed)
        reg_dir = Path(tmp) / "registration"
        reg_dir.mkdir()
        for cid, r in reg["registrations"].items():
            (reg_dir / f"{cid}.json").write_text(json.dumps(r))
        s = stats(reg["seconds"])
        results["stages"]["registration"] = {**s, "seconds": reg["seconds"], "peak_rss_kib": rss,
                                             "template_load_s": reg["template_load_s"],
                                             "brain_dice": [r["brain_dice"] for r in reg["registrations"].values()]}
        rows.append(_row("(a) registration", s, rss, base, reg["seconds"][0],
                         f"+ {reg['template_load_s']:.2f} s template load once per process"))
        fp, rss = run_in_child(stage_fingerprint, cases, reg_channel, str(reg_dir))
        s = stats(fp["seconds"])
        results["stages"]["fingerprint"] = {**s, "seconds": fp["seconds"], "peak_rss_kib": rss}
        rows.append(_row("(b) fingerprint (registration given)", s, rss, base, fp["seconds"][0]))
        for spacing in args.spacings:
            pre, rss = run_in_child(stage_preprocess, cases, reg["registrations"], spacing,
                                    str(Path(tmp) / f"{spacing:g}mm"))
            s = stats(pre["seconds"])
            results["stages"][f"preprocess_{spacing:g}mm"] = {**s, "seconds": pre["seconds"], "peak_rss_kib": rss,
                                                              "shapes": pre["shapes"], "patch": patch_for(spacing),
                                                              "cache_load_s": pre["cache_load_s"]}
            shown = ", ".join("x".join(map(str, sh)) for sh in pre["shapes"][:3]) + (
                " ..." if len(pre["shapes"]) > 3 else "")
            rows.append(_row(f"(c) preprocess at {spacing:g} mm", s, rss, base, pre["seconds"][0],
                             f"stored (C, Z, X, Y): {shown}; + {pre['cache_load_s']:.2f} s template + atlas load once"))
    rows.append(["baseline (imports only)", "-", "-", "-", "-", "-", mib(base), "0", ""])
    tables = [table(f"{folder.name}: {len(cases)} case(s) ({', '.join(c.case_id for c in cases)})",
                    ["stage", "cases", "mean s/case", "min s", "max s", "first case s", "peak RSS MiB",
                     "over baseline MiB", "notes"], rows)]
    notes = ["one fresh spawned process per stage; peak RSS is the process's ru_maxrss, the baseline a process "
             "that only does the same imports",
             "(a) times register_to_template only (reading the channel is in (b)); the template is loaded before "
             "the first case and reported apart",
             "peak RSS of (a) and (c) includes the template and atlas caches (the 0.5 mm template is read "
             "whole), which every registering or preprocessing process holds",
             "(c) includes reading, resampling, normalisation, the report pseudo-label of tumour cases and the "
             "Blosc2 write (template and atlas are loaded before the first case, reported apart); it uses the "
             "registrations of (a)"]
    machine = machine_info(info["torch_threads"], load0)
    emit(NAME, command_line(NAME, argv), machine, tables, notes, results, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
