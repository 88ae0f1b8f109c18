"""``blogrr_benchmark``: BLOGRR against baselines, oracles and full supervision on a dataset's test cases."""
from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
from pathlib import Path

from blogrr_nnu.commands._cli import add_processes, command_parser, fail, start_logging

PROG = "blogrr_benchmark"

EXAMPLES = """examples:
  blogrr_benchmark -d 501                                  # every method, the demo dataset, CPU configuration
  blogrr_benchmark -d 501 -o docs/benchmark.md            # regenerate the documented table
  blogrr_benchmark -d 501 --methods blogrr dae intensity  # a subset
  blogrr_benchmark -d 501 --quick                         # a few iterations per training: a smoke test
  blogrr_benchmark -d 501 502 -o docs/benchmark.md        # two datasets (e.g. demo seeds): spread across them

methods: blogrr (BLOGRR as blogrr_train trains it: normative maps, report target), blogrr_plain (the same on plain
maps), blogrr_gmm blogrr_fused (plain maps, GMM / fused upper-loop target), blogrr_stats (plain maps, the quantile
threshold network), blogrr_reference (the reference's threshold network on report regions, plain maps: as
published), dae (DAE with label-free SB thresholds, the best global UB threshold and per-case oracle thresholds),
dae_normative (the same DAE rows on normative maps), intensity (FLAIR/T2
thresholding), gmm (GMM w/ threshold), cgc cgc_fused (CGC on GMM / fused pseudo-labels), supervised (stock
nnUNetTrainer on the tumour training labels, our step budget), supervised_10x (the same, 10x the steps: the
converged ceiling). With several datasets every row also gets its mean and range across them and a Wilcoxon test
over all their test cases pooled. Runs that finished are reused; missing ones are trained (a killed
training resumes). Outputs: the Markdown page (its generated block is replaced, text around it kept), CSV
beside it (.csv, _per_case.csv, _timing.csv; per dataset with several), _sensitivity.png and .json. Predictions and threshold masks stay
in $BLOGRR_results/DatasetXXX/benchmark/<configuration>_fold<F>/ (check any row with blogrr_evaluate)."""


def build_parser() -> argparse.ArgumentParser:
    from blogrr_nnu.benchmarks.methods.comparison import GROUPS

    parser = command_parser(
        "blogrr_benchmark",
        "Train what is missing, predict the test cases (imagesTs/ with labelsTs/) with every method and "
        "write the comparison table (Dice, HD95, Wilcoxon p-values vs ours, BLOGRR as a fraction of the per-case "
        "oracle and of full supervision), a threshold-sensitivity plot and a timing table.",
        EXAMPLES)
    parser.add_argument("-d", "--dataset", required=True, nargs="+", help="dataset id(s), folder name(s) or name(s); "
                        "several: the same methods on each, with the spread across them")
    parser.add_argument("-c", "--configuration", default=None, help="default: 3d_cpu without a GPU, 3d_fullres with")
    parser.add_argument("-f", "--fold", default="0", help="fold of every trained run (default 0)")
    parser.add_argument("--methods", nargs="+", default=list(GROUPS), choices=list(GROUPS), metavar="METHOD",
                        help="methods to compare (default: all; see below)")
    parser.add_argument("--ours", default=None, help="row the p-values compare against (default: the first BLOGRR row)")
    parser.add_argument("-o", "--output", default=None, help="Markdown page (default: $BLOGRR_results/DatasetXXX/"
                        "benchmark/benchmark.md of the first dataset; quick: benchmark_quick.md; several datasets: "
                        "benchmark_datasets.md)")
    parser.add_argument("--quick", action="store_true", help="train every run for 2 epochs x 3 iterations, in a "
                        "separate results folder (never reused by a full benchmark)")
    parser.add_argument("-device", default=None, choices=["cpu", "cuda", "mps"], help="default: cuda if available")
    add_processes(parser, 2, "processes for scoring")
    parser.add_argument("--raw", default=None, help="raw root (default $BLOGRR_raw, ...)")
    parser.add_argument("--preprocessed", default=None, help="preprocessed root (default $BLOGRR_preprocessed, ...)")
    parser.add_argument("--results", default=None, help="results root (default $BLOGRR_results, ...)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (1: a stage failed, 2: usage)."""
    args = build_parser().parse_args(argv)
    start_logging()
    from blogrr_nnu.paths import environment, preprocessed_root, raw_root, results_root

    # one set of folders for every stage and for nnU-Net code; the caller's environment is restored at the end
    roots = {"BLOGRR_raw": raw_root(args.raw), "BLOGRR_preprocessed": preprocessed_root(args.preprocessed),
             "BLOGRR_results": results_root(args.results)}
    with environment(**{k: str(Path(v).resolve()) for k, v in roots.items()}):
        return _run(args, argv)


def _run(args, argv) -> int:
    import torch

    from blogrr_nnu.benchmarks.methods import comparison as C
    from blogrr_nnu.benchmarks.methods import report as R
    from blogrr_nnu.benchmarks.common import cpu_model, load_average, machine_info
    from blogrr_nnu.benchmarks.methods.suite import run_benchmark
    from blogrr_nnu.paths import preprocessed_root, raw_root, resolve_dataset, results_root
    from blogrr_nnu.planners.api import load_plans
    from blogrr_nnu.trainers.api import default_configuration

    load = load_average()
    runs = []
    try:
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        base_results = results_root()
        config = args.configuration or default_configuration(torch.device(device))
        for dataset in args.dataset:
            pre = resolve_dataset(dataset, preprocessed_root())
            raw = resolve_dataset(dataset, raw_root())
            if config not in load_plans(pre)["configurations"]:
                raise ValueError(f"configuration {config!r} is not planned for {pre.name}; run "
                                 f"`blogrr_plan_and_preprocess -d {pre.name} -c {config}`")
            bench = base_results / pre.name / "benchmark"
            # short runs must never be found by a full benchmark (or blogrr_predict); restored by main's environment()
            os.environ["BLOGRR_results"] = str(bench / "quick_results" if args.quick else base_results)
            work = bench / ("quick" if args.quick else "") / f"{config}_fold{args.fold}"
            s = C.Setting(dataset=pre.name, configuration=config, fold=str(args.fold), methods=list(args.methods),
                          device=device, quick=args.quick, num_processes=args.num_processes, work=work, raw=raw,
                          preprocessed=pre, schedule=dict(C.QUICK_SCHEDULE) if args.quick else {})
            if len(args.dataset) > 1:
                print(f"== {pre.name}", flush=True)
            result = run_benchmark(s)
            runs.append({"dataset": pre.name, "result": result, "derived": R.derive(result, R.pick_ours(result["rows"],
                                                                                                      args.ours))})
        first = base_results / runs[0]["dataset"] / "benchmark"
        default = "benchmark_quick.md" if args.quick else ("benchmark.md" if len(runs) == 1 else "benchmark_datasets.md")
        md = Path(args.output) if args.output else first / default
    except (ValueError, FileNotFoundError) as exc:
        return fail(PROG, f"error: {exc}")
    except RuntimeError as exc:
        print(f"blogrr_benchmark: failed: {exc}", file=sys.stderr)
        return 1
    m = machine_info(torch.get_num_threads(), load)
    header = {"date": datetime.date.today().isoformat(), "dataset": ", ".join(r["dataset"] for r in runs),
              "configuration": config,
              "fold": str(args.fold), "device": device, "quick": args.quick,
              "command": "blogrr_benchmark " + shlex.join(sys.argv[1:] if argv is None else argv),
              "machine": f"{cpu_model()}, {m['usable_cores']} usable cores, torch {m['torch']} "
                         f"({m['torch_threads']} threads), nnunetv2 {m['nnunetv2']}, blogrr-nnu {m['blogrr_nnu']}, "
                         f"Python {m['python']}" + (f"; load average before the run {load:.2f}" if load is not None
                                                    else "")}
    if len(runs) == 1:
        print(R.render_tables(R.tables(runs[0]["result"], runs[0]["derived"])))
        written = R.write_outputs(runs[0]["result"], runs[0]["derived"], header, md)
    else:
        from blogrr_nnu.benchmarks.methods import seeds

        print(R.render_tables([seeds.pooled_table(seeds.pooled(runs, runs[0]["derived"]["ours"]))]))
        written = seeds.write_outputs(runs, header, md)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
