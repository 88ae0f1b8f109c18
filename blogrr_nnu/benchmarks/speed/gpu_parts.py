"""The measured parts of :mod:`blogrr_nnu.benchmarks.speed.gpu_check`; each returns tables, notes and raw results.

Each part reuses the benchmark commands' pieces: the interleaved lower-loop timing against nnU-Net's stock
``train_step`` (:mod:`~blogrr_nnu.benchmarks.speed.training`), the sliding-window comparison against
``nnUNetPredictor`` (:mod:`~blogrr_nnu.benchmarks.speed.prediction`), the trainers' own epoch loop and the
predictor's :meth:`~blogrr_nnu.inference.predictor.BlogrrPredictor.predict_preprocessed`.
"""
from __future__ import annotations

import gc
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from blogrr_nnu import anomaly as A
from blogrr_nnu.benchmarks.common import sec, stats, synchronize, table
from blogrr_nnu.metrics import dice as mask_dice
from blogrr_nnu.plans_block import BlogrrBlock

ITERATION_TARGET = 1.15
PREDICTION_TARGET = 1.2
NA = "n/a (CPU)"


@dataclass
class Sizes:
    """How much each part runs: GPU defaults, or toy sizes for ``--allow_cpu``."""

    iters: int = 30
    rounds: int = 3
    warmup: int = 3
    batches: int = 5
    epochs: int = 2
    train_iters: int = 40
    pred_cases: int = 2

    @classmethod
    def toy(cls) -> "Sizes":
        return cls(iters=2, rounds=2, warmup=1, batches=1, epochs=1, train_iters=2, pred_cases=1)


class Memory:
    """Allocated CUDA memory of this process (``None`` everywhere on other devices)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def allocated(self) -> int | None:
        return int(torch.cuda.memory_allocated()) if self.cuda else None

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def peak_since(self, base: int | None) -> int | None:
        return int(torch.cuda.max_memory_allocated()) - base if self.cuda else None


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def gib(n: int | None) -> str:
    return NA if n is None else f"{n / 2**30:.2f}"


def warm_up(step, n: int, mem: Memory, base: int | None) -> tuple[int | None, int | None]:
    """``n`` warm-up iterations (``step(k)`` runs k); peak allocated over ``base`` in the first and in the others.

    The first builds Adam's state and lets cuDNN try its kernels (their trial workspaces count in that peak);
    the others show what every later step needs.
    """
    mem.reset()
    step(1)
    first = mem.peak_since(base)
    if n == 1:
        return first, first
    mem.reset()
    step(n - 1)
    return first, mem.peak_since(base)


def time_batches(loader, n: int) -> float:
    """Seconds per ``generate_train_batch`` (augmentation in this process, as both timed sides do)."""
    t0 = time.perf_counter()
    for _ in range(n):
        loader.generate_train_batch()
    return (time.perf_counter() - t0) / n


# -- precision --------------------------------------------------------------------------------------------
def precision_effects(net, x: torch.Tensor, brain: torch.Tensor, blogrr: dict, device_type: str,
                      dtype: torch.dtype = torch.float16) -> dict:
    """What reduced precision does to R's output and to the quantities computed from it, on one batch.

    Reference: the forward pass in fp32 with TF32 off. Variants: the fp32 pass with PyTorch's default TF32
    convolutions (CUDA only); the forward under autocast with MSE, anomaly map, tolerance term and soft
    segmentation in fp32 (what the trainer does); and with those computed under autocast too (as nnU-Net
    computes its own loss). ``tau`` is the 95th percentile of the reference map inside the brain.

    Returns:
        ``{variant: {"rec_max_abs", "mse_rel", "amap_max_abs", "amap_p99", "tolerance_rel", "soft_max_abs",
        "flipped_fraction"}}`` (differences from the reference).
    """
    b = BlogrrBlock.from_dict(blogrr)
    sig, rad, k = list(b.anomaly_sigma_voxels), list(b.anomaly_kernel_radius_voxels), b.sigmoid_steepness
    inside = brain > 0

    def derived(rec):
        amap = A.anomaly_map(x, rec, brain, sig, rad)
        return {"rec": rec, "mse": A.masked_mse(rec, x, brain), "amap": amap}

    flags = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    with torch.no_grad():
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            ref = derived(net(x).float())
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags
        tau = torch.quantile(ref["amap"][inside].float(), 0.95).reshape(1).expand(x.shape[0])
        variants = {}
        if device_type == "cuda":
            variants["fp32, TF32 convolutions (PyTorch's CUDA default)"] = derived(net(x).float())
        with torch.autocast(device_type, dtype=dtype):
            low = net(x)
            variants[f"{dtype_name(dtype)} losses under autocast"] = derived(low)
        variants[f"{dtype_name(dtype)} forward, losses in fp32 (the trainer)"] = derived(low.float())
    out = {}
    soft_ref = A.soft_segmentation(ref["amap"], tau, k)
    tol_ref = A.error_tolerance_term(ref["amap"], tau)
    above_ref = ref["amap"] > tau.reshape(-1, *[1] * (ref["amap"].ndim - 1))
    for name, v in variants.items():
        amap = v["amap"].float()
        soft = A.soft_segmentation(amap, tau, k)
        out[name] = {
            "rec_max_abs": float((v["rec"].float() - ref["rec"]).abs().max()),
            "mse_rel": float((v["mse"].float() - ref["mse"]).abs() / ref["mse"]),
            "amap_max_abs": float((amap - ref["amap"])[inside].abs().max()),
            "amap_p99": float(torch.quantile(ref["amap"][inside].float(), 0.99)),
            "tolerance_rel": float((A.error_tolerance_term(amap, tau) - tol_ref).abs() / tol_ref.clamp_min(1e-12)),
            "soft_max_abs": float((soft - soft_ref)[inside].abs().max()),
            "flipped_fraction": float(((amap > tau.reshape(-1, *[1] * (amap.ndim - 1))) != above_ref)[inside]
                                      .float().mean()),
        }
    return out


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype))


# -- (A) one lower-loop iteration vs nnU-Net's --------------------------------------------------------------
def part_iteration(dataset: str, configuration: str, fold: str, device: torch.device, sizes: Sizes,
                   target_gb: float, estimate_gb: float) -> dict:
    """Interleaved seconds per iteration, ours vs stock; peak allocated memory of each; the batch share; precision."""
    from blogrr_nnu.benchmarks.speed.training import build_ours, build_stock, interleave, ours_steps, stock_steps
    from blogrr_nnu.trainers.base_trainer import unwrap

    mem = Memory(device)
    base = mem.allocated()  # each side's memory: what it allocates beyond what exists before it is built
    ours = build_ours(dataset, configuration, fold, device=str(device))
    first, steady = {}, {}
    first["ours"], steady["ours"] = warm_up(lambda k, tr=ours: ours_steps(tr, k, 0), sizes.warmup, mem, base)
    base = mem.allocated()
    stock = build_stock(dataset, configuration, fold, device=str(device))
    first["stock"], steady["stock"] = warm_up(lambda k, st=stock: stock_steps(st, k), sizes.warmup, mem, base)
    peak = steady
    rounds = min(sizes.rounds, sizes.iters)
    blocks = interleave(ours, stock, sizes.iters, rounds)
    batch_s = {"ours": time_batches(ours.dataloader_train, sizes.batches),
               "stock": time_batches(stock.dataloader_train, sizes.batches)}
    batch = ours.dataloader_train.generate_train_batch()
    brain = (batch["target"][:, 0:1] > 0).to(device)
    x = batch["data"].to(device) * brain
    precision = precision_effects(unwrap(ours.network), x, brain, ours.blogrr, device.type) if device.type == "cuda" \
        else None
    info = {"patch": list(ours.configuration_manager.patch_size), "batch": int(ours.batch_size),
            "stock_batch": int(stock.batch_size), "stock_compiled": bool(stock._do_i_compile())}
    del ours, stock, batch, x, brain
    free(device)
    per = {s: sum(t for _, t in b) / sum(n for n, _ in b) for s, b in blocks.items()}
    ratio = per["ours"] / per["stock"]
    rows = []
    for s in ("ours", "stock"):
        p = peak[s]
        within = "" if p is None else (" (within)" if p <= target_gb * 2**30 else " (OVER)")
        rows.append([s, sum(n for n, _ in blocks[s]), sec(per[s]), sec(min(t / n for n, t in blocks[s])),
                     sec(max(t / n for n, t in blocks[s])), sec(batch_s[s]), f"{batch_s[s] / per[s]:.0%}",
                     gib(p) + within + ("" if p is None else f" ({gib(first[s])})")])
    rows.append(["ours / stock", "", f"{ratio:.3f} ({'met' if ratio <= ITERATION_TARGET else 'NOT met'})", "", "", "",
                 "", f"target {target_gb:g} GiB; planner's estimate {estimate_gb:.2f}"])
    tables = [table(f"(A) {configuration}: one lower-loop iteration vs nnU-Net's stock train_step (patch {info['patch']}, "
                    f"batch {info['batch']} / stock {info['stock_batch']}; {sizes.iters} iterations a side in {rounds} "
                    f"interleaved rounds after {sizes.warmup} warm-up; target <= {ITERATION_TARGET})",
                    ["side", "iterations", "s/iter", "min round s/iter", "max round s/iter", "batch only s",
                     "batch share", "peak allocated GiB, warm steps (1st step)"], rows)]
    if precision:
        tables.append(table(f"(A) {configuration}: reduced precision on one training batch, against the fp32 forward "
                            "pass with TF32 off (tau = 95th percentile of the map)",
                            ["variant", "R(x) max abs diff", "MSE rel diff", "anomaly map max abs diff (map p99)",
                             "tolerance term rel diff", "soft segmentation max abs diff", "A > tau flipped"],
                            [[n, f"{v['rec_max_abs']:.2e}", f"{v['mse_rel']:.1e}",
                              f"{v['amap_max_abs']:.2e} ({v['amap_p99']:.3g})", f"{v['tolerance_rel']:.1e}",
                              f"{v['soft_max_abs']:.2e}", f"{v['flipped_fraction']:.2e}"] for n, v in precision.items()]))
    return {"tables": tables, "results": {"blocks": blocks, "per_iteration": per, "ratio": ratio, "peak_bytes": peak,
                                          "peak_bytes_first_step": first,
                                          "batch_seconds": batch_s, "precision": precision, **info}}


# -- (D) sliding-window prediction vs nnUNetPredictor ----------------------------------------------------------
PREDICTION_METHODS = (("ours_patch", False, "ours, patch tiles, fp32"),
                      ("ours_patch", True, "ours, patch tiles, fp16 autocast"),
                      ("ours_whole", False, "ours, default (whole case <= 2x patch), fp32"),
                      ("stock", False, "nnUNetPredictor (fp16 autocast, fp16 buffer, on the device)"))
CPU_LABELS = {"ours, patch tiles, fp16 autocast": "ours, patch tiles, autocast (off on CPU: fp32)",
              "nnUNetPredictor (fp16 autocast, fp16 buffer, on the device)": "nnUNetPredictor (fp16 buffer; CPU: no "
              "autocast)"}


def part_prediction(dataset: str, configuration: str, device: torch.device, sizes: Sizes, folder: Path,
                    spacing: float) -> dict:
    """Seconds per case of each method on the first cases of the configuration (same seeded untrained network)."""
    from blogrr_nnu.benchmarks.speed.prediction import _diff, task_window

    ids = sorted(p.stem for p in folder.glob("*.pkl"))[:sizes.pred_cases]
    res = {}
    with tempfile.TemporaryDirectory(prefix="blogrr_gpu_pred_") as tmp:
        for method, amp_on, label in PREDICTION_METHODS:
            tag = method + ("_amp" if amp_on else "")
            label = label if device.type == "cuda" else CPU_LABELS.get(label, label)
            res[tag] = {"label": label, **task_window(method, dataset, configuration, ids, spacing, tmp, str(device),
                                                      autocast=amp_on, tag=tag)}
            free(device)
        diffs = {t: _diff(Path(tmp), t, "ours_patch", len(ids)) for t in res if t != "ours_patch"}
    stock = stats(res["stock"]["seconds"])["mean"]
    rows = []
    for tag, r in res.items():
        s = stats(r["seconds"])
        r["mean"], r["ratio"] = s["mean"], s["mean"] / stock
        verdict = f" ({'met' if r['ratio'] <= PREDICTION_TARGET else 'NOT met'})" if tag.startswith("ours_patch") else ""
        rows.append([r["label"], ", ".join(map(str, r["tiles"])), sec(s["mean"]), sec(s["min"]), sec(s["max"]),
                     "-" if tag == "stock" else f"{r['ratio']:.3f}{verdict}",
                     "reference" if tag == "ours_patch" else f"{diffs[tag]['max']:.2e} / {diffs[tag]['mean']:.1e}"])
    return {"tables": [table(f"(D) {configuration}: sliding-window reconstruction per case ({len(ids)} case(s): "
                             f"{', '.join(ids)}; step 0.5, Gaussian, no mirroring; target ours / stock <= "
                             f"{PREDICTION_TARGET} at the same tiles)",
                             ["method", "tiles per case", "mean s/case", "min s", "max s", "ours / stock",
                              "abs diff vs ours fp32: max / mean"], rows)],
            "results": {"cases": ids, "methods": res, "diffs": diffs}}


# -- (B), (C) a short training, prediction and Dice -------------------------------------------------------------
def predict_test_cases(run_folder: Path, fold: str, test_folder: Path, device: torch.device) -> dict:
    """Dice on the stored grid of every preprocessed test case, and seconds per case (predict_preprocessed)."""
    from blogrr_nnu.inference.predictor import BlogrrPredictor
    from blogrr_nnu.cases import load_whole_case

    p = BlogrrPredictor(device=device, allow_tqdm=False)
    p.initialize_from_run_folder(run_folder, use_folds=[str(fold)])
    dice, seconds = {}, []
    for path in sorted(test_folder.glob("*.pkl")):
        case = load_whole_case(test_folder, path.stem)
        spacing = tuple(case.props["spacing"])
        t0 = time.perf_counter()
        soft, _, _ = p.predict_preprocessed(case.data.numpy(), case.brain[0].numpy(), spacing,
                                            case.props.get("case_space"))  # normative runs crop their mean map with it
        hard, _ = p.remove_small_components(soft >= 0.5, spacing)
        seconds.append(time.perf_counter() - t0)
        dice[case.case_id] = mask_dice(hard, case.label[0].numpy()) if case.label is not None else math.nan
    return {"dice": dice, "seconds": seconds}


def part_training(dataset: str, configuration: str, fold: str, device: torch.device, sizes: Sizes, trainer: str,
                  test_folder: Path | None, full_counts: dict | None) -> dict:
    """A short training (``sizes.epochs`` x ``sizes.train_iters``), its per-part times, prediction and Dice."""
    from blogrr_nnu.trainers.api import build_trainer
    from blogrr_nnu.trainers.base_trainer import default_schedule

    tr = build_trainer(dataset, fold, configuration, trainer=trainer, device=str(device), epochs=sizes.epochs,
                       iters=sizes.train_iters)
    t0 = time.perf_counter()
    tr.run_training()
    synchronize(device)
    wall = time.perf_counter() - t0
    p = tr.progress
    lo, up, va = p["time_lower"], p["time_upper"], p["time_val"]
    counts = {k: len(v) for k, v in tr.keys.items()}
    run_folder, fold_s = Path(tr.output_folder_base), str(tr.fold)
    epochs_default, iters_default = default_schedule(tr.blogrr)
    s_iter = lo[-1] / sizes.train_iters
    del tr
    free(device)
    rows = [[e, sec(a, 2), sec(b, 2), sec(c, 2), f"{b / (a + b + c):.1%}"] for e, (a, b, c) in enumerate(zip(lo, up, va))]
    # one epoch of the default schedule from the last (typical) epoch: its upper loop and validation, iters x s/iter
    epoch_s = iters_default * s_iter + up[-1] + va[-1]
    scale = 1.0
    if full_counts:  # upper loop and validation are whole-case passes: they grow with the cases (first order)
        per_case = (up[-1] + va[-1]) / max(1, counts["tumor_train"] + counts["healthy_train"] / 4 + counts["healthy_val"]
                                           + counts["tumor_val"])
        full_cases = (full_counts["tumor_train"] + full_counts["healthy_train"] / 4 + full_counts["healthy_val"]
                      + full_counts["tumor_val"])
        scale = (iters_default * s_iter + per_case * full_cases) / epoch_s
    name = "BLOGRR" if trainer == "blogrr" else trainer.upper()
    summary = [[f"{name}: default schedule {epochs_default} x {iters_default}, one epoch (measured parts)",
                f"{epoch_s:.1f} s", f"upper share {up[-1] / epoch_s:.1%}"],
               [f"{name}: one fold at the default schedule, this subset", f"{epochs_default * epoch_s / 60:.1f} min", ""]]
    if full_counts:
        summary.append([f"{name}: one fold at the default schedule, full dataset (cases scaled)",
                        f"{epochs_default * epoch_s * scale / 60:.1f} min", f"fold 0 counts {full_counts}"])
    out = {"counts": counts, "time_lower": lo, "time_upper": up, "time_val": va, "wall_s": wall, "s_per_iter": s_iter,
           "epoch_default_s": epoch_s, "fold_default_min": epochs_default * epoch_s / 60,
           "fold_default_full_min": epochs_default * epoch_s * scale / 60 if full_counts else None,
           "val_gt_dice": p["val_gt_dice"][-1], "val_pseudo_dice": p["val_pseudo_dice"][-1]}
    tables = [table(f"({'B' if trainer == 'blogrr' else 'C'}) {name} {configuration} fold {fold_s}: {sizes.epochs} epoch(s) "
                    f"x {sizes.train_iters} iterations on {counts}; wall {wall:.1f} s",
                    ["epoch", "time_lower s", "time_upper s", "time_val s", "upper / epoch"], rows),
              table(f"{name}: the default schedule, extrapolated from the measured parts", ["what", "time", "note"],
                    summary)]
    if test_folder is not None and any(test_folder.glob("*.pkl")):
        pred = predict_test_cases(run_folder, fold_s, test_folder, device)
        d = [v for v in pred["dice"].values() if not math.isnan(v)]
        out["test"] = pred
        tables.append(table(f"{name}: prediction of the preprocessed test cases (predict_preprocessed; Dice on the "
                            "stored grid against the resampled label)",
                            ["cases", "Dice mean", "Dice per case", "s/case (mean)", "val Dice vs GT (last epoch)"],
                            [[len(pred["dice"]), f"{np.mean(d):.3f}" if d else "-",
                              ", ".join(f"{k} {v:.3f}" for k, v in pred["dice"].items()),
                              sec(float(np.mean(pred["seconds"]))), f"{out['val_gt_dice']:.3f}"]]))
    return {"tables": tables, "results": out}
