"""``python -m blogrr_nnu.benchmarks.speed.training``: cost of a lower-loop iteration vs nnU-Net's, and of the upper loop.

(a)+(b) run in ONE fresh process, interleaved in rounds (the side that goes first alternates) so that
drift of the machine (other load, thermal state) hits both sides alike: BlogrrTrainer's
``run_lower_loop`` vs nnU-Net's stock ``nnUNetTrainer`` doing ``generate_train_batch`` + ``train_step``
with its own default augmentation, same plans, configuration, patch, batch size and healthy training
cases. Peak memory of each side comes from its own child running a few iterations alone.
(c) runs whole outer epochs of BlogrrTrainer and reads the lower/upper/validation times it records.
Runs go to a temporary results folder, removed at the end.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import shutil
import sys
import tempfile
import time

from blogrr_nnu.benchmarks.common import (child_info, command_line, emit, load_average, machine_info, mib,
                                          peak_rss_kib, run_in_child, sec, synchronize, table)

NAME = "training"
RATIO_TARGET = 1.15
UPPER_SHARE_TARGET = 0.20


def _imports() -> None:
    """Everything the tasks import, so the baseline child carries the same libraries."""
    import torch  # noqa: F401
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader  # noqa: F401
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer  # noqa: F401

    from blogrr_nnu.trainers import api, blogrr_trainer  # noqa: F401


def baseline() -> dict:
    """Child task: the imports only."""
    _imports()
    return {"rss_kib": peak_rss_kib(), **child_info()}


def build_ours(dataset: str, configuration: str, fold: str, iters: int | None = None, epochs: int | None = None,
               device: str = "cpu"):
    """Our BlogrrTrainer, initialised, with its training cases loaded."""
    from blogrr_nnu.trainers.api import build_trainer

    tr = build_trainer(dataset, fold, configuration, device=device, iters=iters, epochs=epochs)
    tr.initialize()
    tr.on_train_start()
    return tr


def build_stock(dataset: str, configuration: str, fold: str, device: str = "cpu"):
    """nnU-Net's own trainer on our plans, with its own training transforms over our healthy training cases."""
    import json
    from pathlib import Path

    import torch
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
    from unittest import mock

    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as stock_module
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from blogrr_nnu.paths import preprocessed_root, resolve_dataset
    from blogrr_nnu.planners.api import load_plans
    from blogrr_nnu.trainers.base_trainer import nnunet_paths
    from blogrr_nnu.splits import case_roles, fold_keys, load_or_create_splits

    base = resolve_dataset(dataset, preprocessed_root())
    plans = load_plans(base)
    plans["continue_training"] = False  # nnU-Net pops it in __init__
    dj = {**json.loads((base / "dataset.json").read_text()), "labels": {"background": 0, "tumor": 1}}
    # initialize() infers the dataset class from the file endings in the folder and refuses the healthy
    # intensity model (healthy_intensity_model.json, blogrr_nnu.pseudo_labels) beside the cases: they are Blosc2.
    with nnunet_paths(), mock.patch.object(stock_module, "infer_dataset_class", lambda folder: nnUNetDatasetBlosc2):
        st = nnUNetTrainer(copy.deepcopy(plans), configuration, "all" if fold == "all" else int(fold), dj,
                           torch.device(device))
        st.initialize()
    folder = Path(st.preprocessed_dataset_folder)
    keys = fold_keys(load_or_create_splits(base, folder), fold, case_roles(folder))["healthy_train"]
    cm, lm = st.configuration_manager, st.label_manager
    # exactly what nnUNetTrainer.get_dataloaders passes, minus the background workers
    rot, dummy_2d, initial, mirror = st.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    transforms = st.get_training_transforms(
        cm.patch_size, rot, st._get_deep_supervision_scales(), mirror, dummy_2d, use_mask_for_norm=cm.use_mask_for_norm,
        is_cascaded=st.is_cascaded, foreground_labels=lm.foreground_labels,
        regions=lm.foreground_regions if lm.has_regions else None, ignore_label=lm.ignore_label)
    st.dataloader_train = nnUNetDataLoader(
        nnUNetDatasetBlosc2(str(folder), keys), st.batch_size, initial, cm.patch_size, lm,
        oversample_foreground_percent=st.oversample_foreground_percent, sampling_probabilities=None, pad_sides=None,
        transforms=transforms, probabilistic_oversampling=st.probabilistic_oversampling)
    st.network.train()
    return st


def stock_steps(st, n: int) -> None:
    """``n`` iterations of the stock trainer: a batch (its own augmentation, in this process) and ``train_step``."""
    for _ in range(n):
        batch = st.dataloader_train.generate_train_batch()
        t = batch["target"]
        # our seg holds several channels, brain first (planners/preprocessing.py); brain serves as the stock label
        batch["target"] = [x[:, :1] for x in t] if isinstance(t, list) else t[:, :1]
        st.train_step(batch)


def ours_steps(tr, n: int, epoch: int) -> None:
    """``n`` lower-loop iterations of our trainer (``run_lower_loop`` of ``epoch``)."""
    tr.num_iterations_per_epoch = n
    tr.run_lower_loop(epoch)


def interleave(ours, stock, iters: int, rounds: int) -> dict[str, list]:
    """``iters`` iterations per side in ``rounds`` alternating blocks; ``{side: [[iterations, seconds], ...]}``.

    The side that goes first alternates, so drift of the machine hits both alike.
    """
    blocks = [iters // rounds + (1 if r < iters % rounds else 0) for r in range(rounds)]
    times: dict[str, list] = {"ours": [], "stock": []}
    for r, n in enumerate(blocks):
        order = ("ours", "stock") if r % 2 == 0 else ("stock", "ours")
        for side in order:
            synchronize(ours.device)
            t0 = time.perf_counter()
            if side == "ours":
                ours_steps(ours, n, r + 1)
            else:
                stock_steps(stock, n)
            synchronize(ours.device)
            times[side].append([n, time.perf_counter() - t0])
    return times


def task_interleaved(dataset: str, configuration: str, fold: str, iters: int, rounds: int, warmup: int) -> dict:
    """Child task (a)+(b): both sides in one process, alternating blocks; plus one full healthy-tau pass."""
    ours, stock = build_ours(dataset, configuration, fold), build_stock(dataset, configuration, fold)
    if warmup:  # first steps build kernels and open files: not what an iteration costs
        ours_steps(ours, warmup, 0)
        stock_steps(stock, warmup)
    times = interleave(ours, stock, iters, rounds)
    taus_s = None
    if not ours.per_slice:  # ours is a BlogrrTrainer; 2D computes tau per slice inside each iteration instead
        from blogrr_nnu.trainers.upper_loop import refresh_healthy_taus

        ours.tau_initialised = True
        ours.healthy_taus = {}
        t0 = time.perf_counter()
        refresh_healthy_taus(ours, 1)  # the first call computes every case (later epochs: a quarter of them)
        taus_s = time.perf_counter() - t0
        ours.tau_initialised = False
    cm = ours.configuration_manager
    return {"blocks": times, "healthy_taus_s": taus_s, "n_healthy_train": len(ours.keys["healthy_train"]),
            "patch": list(cm.patch_size), "batch_size": int(ours.batch_size), "stock_batch_size": int(stock.batch_size),
            "stock_deep_supervision": bool(stock.enable_deep_supervision)}


def task_memory(side: str, dataset: str, configuration: str, fold: str, n: int) -> None:
    """Child task: one side alone, ``n`` iterations (its peak RSS is what the caller wants)."""
    if side == "ours":
        ours_steps(build_ours(dataset, configuration, fold), n, 0)
    else:
        stock_steps(build_stock(dataset, configuration, fold), n)


def task_epochs(dataset: str, configuration: str, fold: str, epochs: int, iters: int | None) -> dict:
    """Child task (c): ``epochs`` outer epochs of BlogrrTrainer; its recorded per-part times."""
    tr = build_ours(dataset, configuration, fold, iters=iters, epochs=epochs)
    tr.run_training()
    p = tr.progress
    return {"time_lower": p["time_lower"], "time_upper": p["time_upper"], "time_val": p["time_val"],
            "num_iterations_per_epoch": tr.num_iterations_per_epoch,
            "num_upper_iterations_per_epoch": tr.num_upper_iterations_per_epoch,
            "n_tumor_train": len(tr.keys["tumor_train"]), "n_val": len(tr.keys["healthy_val"] + tr.keys["tumor_val"])}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m blogrr_nnu.benchmarks.{NAME}",
        description="Seconds per lower-loop iteration of BlogrrTrainer vs nnU-Net's stock nnUNetTrainer (same plans, "
        "configuration, patch, batch size and healthy training cases; measured interleaved in one process), the "
        f"ratio ours/stock (target <= {RATIO_TARGET}), peak memory of each side alone, and the share of the upper "
        f"loop in whole outer epochs (target <= {UPPER_SHARE_TARGET:.0%}). Uses a preprocessed dataset; runs are "
        "written to a temporary results folder that is removed. Prints Markdown tables.",
        epilog="example:\n"
        "  python -m blogrr_nnu.benchmarks.speed.training -d 501 -c 3d_cpu --iters 12 --epochs 2 -o train.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", "--dataset", required=True, help="preprocessed dataset id or name (BLOGRR_preprocessed)")
    parser.add_argument("-c", "--configuration", default="3d_cpu", help="configuration (default 3d_cpu)")
    parser.add_argument("-f", "--fold", default="0", help="fold 0-4 or 'all' (default 0)")
    parser.add_argument("--iters", type=int, default=None, help="timed iterations per side (default 10); given, "
                        "it also sets the lower-loop iterations of the epochs of (c)")
    parser.add_argument("--epochs", type=int, default=2, help="outer epochs of (c) (default 2; 0 skips (c))")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds the iterations are split into (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations per side first (default 1)")
    parser.add_argument("--memory_iters", type=int, default=2,
                        help="iterations of each side's memory child (default 2; 0 skips)")
    parser.add_argument("-o", "--output", default=None, metavar="FILE.json", help="also write the results as JSON")
    return parser


def _share(part: float, whole: float) -> float:
    return part / whole if whole > 0 else math.nan


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns 0, or 2 on a usage error."""
    args = build_parser().parse_args(argv)
    load0 = load_average()  # before any child adds its own load
    iters = 10 if args.iters is None else args.iters
    if iters < 1 or args.rounds < 1 or args.epochs < 0 or args.warmup < 0 or args.memory_iters < 0:
        print(f"{NAME}: --iters and --rounds must be >= 1; --epochs, --warmup, --memory_iters >= 0", file=sys.stderr)
        return 2
    from blogrr_nnu.paths import DatasetNotFoundError, preprocessed_root, resolve_dataset

    from blogrr_nnu.planners.api import load_plans

    try:
        folder = resolve_dataset(args.dataset, preprocessed_root())
        configurations = load_plans(folder)["configurations"]
    except (DatasetNotFoundError, FileNotFoundError) as exc:
        print(f"{NAME}: {exc}", file=sys.stderr)
        return 2
    if args.configuration not in configurations:
        print(f"{NAME}: configuration {args.configuration!r} is not in the plans ({', '.join(configurations)})",
              file=sys.stderr)
        return 2
    name = folder.name
    rounds = min(args.rounds, iters)
    results_dir = tempfile.mkdtemp(prefix="blogrr_bench_train_")
    old = os.environ.get("BLOGRR_results")
    os.environ["BLOGRR_results"] = results_dir  # inherited by the spawned children
    try:
        info, _ = run_in_child(baseline)
        base = info["rss_kib"]
        job = (name, args.configuration, args.fold)
        inter, rss_inter = run_in_child(task_interleaved, *job, iters, rounds, args.warmup)
        mem = {side: run_in_child(task_memory, side, *job, args.memory_iters)[1] if args.memory_iters else None
               for side in ("ours", "stock")}
        ep = run_in_child(task_epochs, *job, args.epochs, args.iters)[0] if args.epochs else None
    except (ValueError, FileNotFoundError) as exc:  # raised in a child by the trainer: no case, bad fold, ...
        print(f"{NAME}: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(results_dir, ignore_errors=True)
        if old is None:
            os.environ.pop("BLOGRR_results", None)
        else:
            os.environ["BLOGRR_results"] = old

    per = {s: sum(t for _, t in b) / sum(n for n, _ in b) for s, b in inter["blocks"].items()}
    spread = {s: [t / n for n, t in b] for s, b in inter["blocks"].items()}
    ratio = per["ours"] / per["stock"]
    what = {"ours": "run_lower_loop: batch (spatial aug only) + coarse noise + fwd + MSE + anomaly map + tolerance "
                    "+ bwd + Adam",
            "stock": "generate_train_batch (nnU-Net default aug) + train_step (fwd, deep-supervised DC+CE, bwd, SGD)"}
    rows = [[s, what[s], sum(n for n, _ in inter["blocks"][s]), sec(per[s]), sec(min(spread[s])), sec(max(spread[s])),
             mib(mem[s]), "-" if mem[s] is None else mib(mem[s] - base)] for s in ("ours", "stock")]
    rows.append(["ours / stock", f"target <= {RATIO_TARGET}: {'met' if ratio <= RATIO_TARGET else 'NOT met'}", "",
                 f"{ratio:.2f}", "", "", "", ""])
    if inter["healthy_taus_s"] is not None:
        from blogrr_nnu.trainers.upper_loop import HEALTHY_TAU_REFRESH_FRACTION

        rows.append(["ours, end of the upper loop", f"refresh_healthy_taus(): tau of all {inter['n_healthy_train']} "
                     f"healthy training case(s) with the frozen T (first epoch; later epochs refresh "
                     f"{HEALTHY_TAU_REFRESH_FRACTION:.0%} of them)", "", sec(inter["healthy_taus_s"]), "", "", "", ""])
    tables = [table(f"{name} {args.configuration} fold {args.fold}: lower-loop iteration, patch {inter['patch']}, "
                    f"batch {inter['batch_size']} (stock {inter['stock_batch_size']}), {iters} iterations per side in "
                    f"{rounds} interleaved round(s) after {args.warmup} warm-up",
                    ["side", "one iteration", "iterations", "s/iter", "min round s/iter", "max round s/iter",
                     "peak RSS MiB (alone)", "over baseline MiB"], rows)]
    results = {"dataset": name, "configuration": args.configuration, "fold": args.fold, "iters": iters,
               "rounds": rounds, "baseline_peak_rss_kib": base, "interleaved": inter,
               "interleaved_peak_rss_kib": rss_inter,
               "seconds_per_iteration": per, "ratio_ours_over_stock": ratio, "memory_peak_rss_kib": mem, "epochs": ep}
    if ep is not None:
        erows = []
        lo, up, va = ep["time_lower"], ep["time_upper"], ep["time_val"]
        for e, (a, b, c) in enumerate(zip(lo, up, va)):
            erows.append([e, sec(a, 2), sec(b, 2), sec(c, 2), f"{_share(b, a + b + c):.1%}", f"{_share(b, a + b):.1%}"])
        sl, su, sv = sum(lo), sum(up), sum(va)
        share = _share(su, sl + su + sv)
        erows.append(["all", sec(sl, 2), sec(su, 2), sec(sv, 2), f"{share:.1%}", f"{_share(su, sl + su):.1%}"])
        results["upper_share"] = share
        tables.append(table(
            f"outer epochs: {ep['num_iterations_per_epoch']} lower and {ep['num_upper_iterations_per_epoch']} upper "
            f"iterations per epoch, {ep['n_tumor_train']} tumour training case(s), {ep['n_val']} validation case(s); "
            f"target upper share <= {UPPER_SHARE_TARGET:.0%}: {'met' if share <= UPPER_SHARE_TARGET else 'NOT met'}",
            ["epoch", "time_lower s", "time_upper s", "time_val s", "upper / (lower+upper+val)",
             "upper / (lower+upper)"],
            erows))
    notes = [f"baseline (imports only) peak RSS {mib(base)} MiB; the interleaved child peaked at {mib(rss_inter)} MiB",
             "ratio caveats: the stock side uses nnU-Net's defaults (deep supervision, 2 output heads, DC+CE, SGD, "
             "rotation +-30 deg, scaling 0.7-1.4, intensity transforms, mirroring on 3 axes); ours uses C output "
             "channels, no deep supervision, spatial-only augmentation (+-10 deg, 0.9-1.1, left-right), coarse noise, "
             "anomaly map and Adam (amsgrad); both fetch batches in the main process (no augmentation workers)",
             "ours alone holds whole tumour and validation cases for the upper loop and validation (in its peak RSS)",
             "the healthy taus of (c) are refreshed at the end of each upper loop (in time_upper), for the next lower "
             "loop; epoch 0's lower loop has no threshold yet"]
    machine = machine_info(info["torch_threads"], load0)
    emit(NAME, command_line(NAME, argv), machine, tables, notes, results, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
