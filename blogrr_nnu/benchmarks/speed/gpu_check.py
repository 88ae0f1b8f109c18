"""``python -m blogrr_nnu.benchmarks.speed.gpu_check``: the GPU configurations on a CUDA GPU, against stock nnU-Net.

One Markdown report (docs/performance.md, "GPU check"), from a dataset planned and preprocessed beforehand on a
CPU machine (``scripts/prepare_gpu_check.sh``, :mod:`~blogrr_nnu.benchmarks.speed.gpu_check_data`), in parts that each
fit a share of ``--budget_s`` (a part that would not fit is skipped and says so; the report is rewritten after
every part, so a run stopped from outside keeps what it measured):

- **(A)** per configuration: our lower-loop iteration vs nnU-Net's stock ``train_step`` on the same plans,
  interleaved (:func:`blogrr_nnu.benchmarks.speed.training.interleave`); peak allocated GPU memory of each side
  against the plans' ``gpu_memory_target_gb``; the share of batch generation (in the process, both sides);
  what fp16 autocast does to R's output, the MSE, the anomaly map, the tolerance term and the soft segmentation.
- **(D)** per configuration: sliding-window reconstruction per case, ours (fp32 and fp16 autocast) vs
  ``nnUNetPredictor`` (:func:`blogrr_nnu.benchmarks.speed.prediction.task_window`).
- **(B)**, **(C)**: a short BLOGRR and CGC training of the first configuration: per-part times (the upper
  loop's share), the default schedule's epoch and fold extrapolated from them, and prediction of the carried
  test cases with Dice on the stored grid.

Without CUDA it exits 2 with one line, unless ``--allow_cpu``: then every part runs on the CPU at toy sizes
(memory and precision are marked n/a), which is what the tests do.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from blogrr_nnu.benchmarks.common import _plain, command_line, load_average, machine_info, render, table
from blogrr_nnu.image_io import atomic_write

NAME = "gpu_check"
# rough lower bounds of a part on one modern GPU (s): a part starts only when this much budget is left
MIN_SECONDS = {"A": 45, "D": 30, "B": 75, "C": 60}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m blogrr_nnu.benchmarks.{NAME}",
        description="Step, memory, precision and prediction of the GPU configurations against stock nnU-Net, plus a "
        "short BLOGRR and CGC training with prediction and Dice, as one Markdown report (module docstring). Needs "
        "CUDA (exit 2 without it) unless --allow_cpu, which runs the same parts on the CPU at toy sizes.",
        epilog="example (on the GPU machine, see scripts/gpu_check.sh):\n"
        "  python -m blogrr_nnu.benchmarks.speed.gpu_check -d 501 -o report.md --budget_s 420",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", "--dataset", required=True, help="preprocessed dataset id or name (BLOGRR_preprocessed)")
    parser.add_argument("-c", "--configurations", nargs="+", default=["3d_fullres", "2d"],
                        help="configurations; the first is also trained in (B) and (C) (default: 3d_fullres 2d)")
    parser.add_argument("-f", "--fold", default="0", help="fold (default 0)")
    parser.add_argument("-o", "--output", default="gpu_check.md", help="the Markdown report (default gpu_check.md)")
    parser.add_argument("--json", default=None, metavar="FILE.json", help="also write every raw number as JSON")
    parser.add_argument("--allow_cpu", action="store_true", help="run on the CPU at toy sizes (for tests)")
    parser.add_argument("--budget_s", type=float, default=420.0, help="seconds for all parts (default 420)")
    for flag, what in (("iters", "timed iterations per side in (A)"), ("rounds", "interleaved rounds in (A)"),
                       ("warmup", "untimed iterations per side first in (A), >= 1 (memory is read there)"),
                       ("epochs", "outer epochs of (B) and (C)"), ("train_iters", "lower-loop iterations per epoch of "
                       "(B) and (C)"), ("pred_cases", "cases of (D)")):
        parser.add_argument(f"--{flag}", type=int, default=None, help=f"{what} (default: 30, 3, 3, 2, 40, 2 on a GPU; "
                            "toy sizes with --allow_cpu)")
    parser.add_argument("--stock_compile", action="store_true",
                        help="let the stock trainer torch.compile its network (nnU-Net's default on CUDA; minutes)")
    return parser


def device_rows(device) -> list[list[str]]:
    import torch

    sitk = sys.modules.get("SimpleITK")
    rows = [["device", str(device)], ["torch", f"{torch.__version__} (CUDA {torch.version.cuda}, cuDNN "
                                                f"{torch.backends.cudnn.version()}, benchmark "
                                                f"{torch.backends.cudnn.benchmark})"]]
    if device.type == "cuda":
        prop = torch.cuda.get_device_properties(device)
        rows.append(["GPU", f"{prop.name}, {prop.total_memory / 2**30:.0f} GiB, {prop.multi_processor_count} SMs"])
    rows.append(["SimpleITK", "import stand-in (scripts/gpu_check_stubs; nothing measured calls it)"
                 if getattr(sitk, "GPU_CHECK_STAND_IN", False) else getattr(sitk, "__version__", "not imported")])
    return rows


def targets_table(results: dict, configurations: list[str], target_gb: float) -> dict:
    from blogrr_nnu.benchmarks.speed.gpu_parts import ITERATION_TARGET, NA, PREDICTION_TARGET, gib

    rows = []
    for c in configurations:
        a, d = results.get(f"A {c}"), results.get(f"D {c}")
        rows.append([f"{c}: our iteration <= {ITERATION_TARGET} x stock", "not measured" if not a else
                     f"{a['ratio']:.3f} ({'met' if a['ratio'] <= ITERATION_TARGET else 'NOT met'})"])
        if d:
            m = d["methods"]
            rows.append([f"{c}: prediction <= {PREDICTION_TARGET} x stock (fp32 / fp16 autocast)",
                         f"{m['ours_patch']['ratio']:.3f} / {m['ours_patch_amp']['ratio']:.3f}"])
        else:
            rows.append([f"{c}: prediction <= {PREDICTION_TARGET} x stock", "not measured"])
        peak = a and a["peak_bytes"]["ours"]
        rows.append([f"{c}: peak memory within the plans' {target_gb:g} GiB", "not measured" if not a else NA
                     if peak is None else f"{gib(peak)} GiB ({'met' if peak <= target_gb * 2**30 else 'NOT met'})"])
    for key, name in (("B", "BLOGRR"), ("C", "CGC")):
        r = results.get(key)
        if r:
            full = r["fold_default_full_min"]
            rows.append([f"{name}: one fold at the default schedule (extrapolated)",
                         f"{r['fold_default_min']:.1f} min (carried subset)" +
                         (f", {full:.1f} min (full dataset, cases scaled)" if full is not None else "")])
    return table("Targets", ["target", "measured"], rows)


def main(argv: list[str] | None = None) -> int:
    """Entry point; 0 when every part ran, 1 when a part failed, 2 without CUDA or on a usage error."""
    args = build_parser().parse_args(argv)
    load0 = load_average()
    t_start = time.perf_counter()
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print(f"{NAME}: CUDA is required (torch {torch.__version__} sees no CUDA device); --allow_cpu runs the "
              "CPU-reachable parts at toy sizes", file=sys.stderr)
        return 2
    from blogrr_nnu import amp
    from blogrr_nnu.benchmarks.speed import gpu_parts as P
    from blogrr_nnu.benchmarks.speed.gpu_check_data import MANIFEST, TEST_DIR
    from blogrr_nnu.paths import DatasetNotFoundError, environment, preprocessed_root, resolve_dataset
    from blogrr_nnu.planners.api import load_plans

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sizes = P.Sizes() if device.type == "cuda" else P.Sizes.toy()
    for k in ("iters", "rounds", "warmup", "epochs", "train_iters", "pred_cases"):
        if getattr(args, k) is not None:
            setattr(sizes, k, getattr(args, k))
    if min(sizes.iters, sizes.rounds, sizes.warmup, sizes.epochs, sizes.train_iters, sizes.pred_cases) < 1:
        print(f"{NAME}: --iters, --rounds, --warmup, --epochs, --train_iters and --pred_cases must be >= 1", file=sys.stderr)
        return 2
    try:
        base = resolve_dataset(args.dataset, preprocessed_root())
        plans = load_plans(base)
    except (DatasetNotFoundError, FileNotFoundError) as exc:
        print(f"{NAME}: {exc}", file=sys.stderr)
        return 2
    cfgs = plans["configurations"]
    unknown = [c for c in args.configurations if c not in cfgs]
    if unknown:
        print(f"{NAME}: configuration(s) {', '.join(unknown)} not in the plans ({', '.join(cfgs)})", file=sys.stderr)
        return 2
    manifest = json.loads((base / MANIFEST).read_text()) if (base / MANIFEST).is_file() else {}
    target_gb = float(plans.get("gpu_memory_target_gb", 8.0))
    amp.configure_cuda(device)  # cuDNN autotuning, as nnU-Net's run_training
    os.environ["nnUNet_compile"] = "t" if args.stock_compile else "f"
    first = args.configurations[0]

    def folder(c):
        return base / cfgs[c]["data_identifier"]

    def test_folder(c):
        return base / TEST_DIR / cfgs[c]["data_identifier"]

    jobs = [("A", first), ("D", first), ("B", first), ("C", first)]
    jobs += [(p, c) for c in args.configurations[1:] for p in ("A", "D")]
    tables, notes, results, log = [], [], {"sizes": vars(sizes), "manifest": manifest}, []
    machine = machine_info(torch.get_num_threads(), load0)
    command = command_line(NAME, argv)

    def write() -> str:
        status = table("Parts (in the order run)", ["part", "configuration", "status", "seconds"], log)
        head = [table("Device", ["", ""], device_rows(device)), targets_table(results, args.configurations, target_gb),
                status]
        text = render(f"GPU check: {base.name}", command, machine, head + tables, notes) + "\n"
        atomic_write(args.output, lambda tmp: Path(tmp).write_text(text))
        if args.json:
            payload = json.dumps(_plain({"command": command, "machine": machine, "results": results}), indent=1,
                                 default=str)
            atomic_write(args.json, lambda tmp: Path(tmp).write_text(payload))
        return text

    failed = False
    with tempfile.TemporaryDirectory(prefix="blogrr_gpu_check_") as results_dir, environment(BLOGRR_results=results_dir):
        for part, c in jobs:
            left = args.budget_s - (time.perf_counter() - t_start)
            if device.type == "cuda" and left < MIN_SECONDS[part]:
                log.append([part, c, f"skipped: {left:.0f} s of the budget left, needs about {MIN_SECONDS[part]}", "-"])
                write()
                continue
            t0 = time.perf_counter()
            print(f"[{NAME}] part {part} {c} ...", file=sys.stderr, flush=True)
            try:
                with contextlib.redirect_stdout(sys.stderr):  # nnU-Net's banners go to the log, not the report
                    if part == "A":
                        out = P.part_iteration(base.name, c, args.fold, device, sizes, target_gb,
                                               float(cfgs[c]["blogrr"]["memory_estimate_gb"]))
                    elif part == "D":
                        out = P.part_prediction(base.name, c, device, sizes, folder(c), float(min(cfgs[c]["spacing_3d"])))
                    else:
                        out = P.part_training(base.name, c, args.fold, device, sizes, "blogrr" if part == "B" else "cgc",
                                              test_folder(c), manifest.get("source_fold_counts"))
                status = "done"
                tables.extend(out["tables"])
                results[part if part in "BC" else f"{part} {c}"] = out["results"]
            except Exception as exc:  # noqa: BLE001  one part's failure must not cost the others' numbers
                failed, status = True, f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                import traceback

                traceback.print_exc()  # into the log
                del exc
                P.free(device)
            log.append([part, c, status, f"{time.perf_counter() - t0:.1f}"])
            print(f"[{NAME}] part {part} {c}: {status} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
            write()
    notes += [f"whole check {time.perf_counter() - t_start:.0f} s of a {args.budget_s:g} s budget; sizes {vars(sizes)}",
              "(A) both sides make their batches in this process (no augmentation workers: ours never uses any, for "
              "exact resume; nnU-Net's run_training would use background workers); the stock side uses nnU-Net's "
              f"defaults (deep supervision, DC+CE, SGD, its augmentation) and is {'compiled' if args.stock_compile else 'not compiled (--stock_compile: nnU-Net compiles by default on CUDA)'}",
              "(A) the precision table needs CUDA (autocast is off on CPU, as in nnU-Net)" if device.type != "cuda" else
              "(A) precision: one batch of healthy patches through R after the warm-up",
              "(A) peak memory: torch.cuda.max_memory_allocated during each side's warm-up steps after the first, minus "
              "what was allocated before that side was built (the other side's tensors excluded); in brackets the "
              "first step, where cuDNN tries kernels; the process also holds the CUDA context and the allocator's "
              "cache (nvidia-smi shows more)",
              "(B)/(C) Dice is computed on the stored (template-aligned) grid against the label resampled there by "
              "preprocessing, not on the native grid as blogrr_evaluate does; the carried subset is small, so "
              "these Dice values say that training and prediction work on the GPU, not how well the method does"]
    text = write()
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
