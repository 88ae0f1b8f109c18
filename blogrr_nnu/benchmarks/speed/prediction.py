"""``python -m blogrr_nnu.benchmarks.speed.prediction``: sliding-window reconstruction, ours vs nnU-Net's, per case.

Per spacing, the same preprocessed cases (resampled to that spacing) and the same untrained but seeded
reconstruction network of the plans go through (a) ``BlogrrPredictor.predict_sliding_window_return_logits``
with ``whole_case_max_factor = 0`` (the same tiles as nnU-Net), (b) the same with the default 2.0
(one whole-case window when the case fits), (c) nnU-Net's ``nnUNetPredictor.predict_sliding_window_return_logits``
(fp16 buffer, as many heads as channels). Each method runs in its own fresh child; outputs are compared
afterwards. (d), when the raw dataset is found: the whole ``predict_case`` per raw case (registration,
preprocessing, reconstruction, anomaly map, mask, export) at the configuration's spacing.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from blogrr_nnu.benchmarks.common import (child_info, command_line, emit, load_average, machine_info, mib,
                                          peak_rss_kib, run_in_child, sec, stats, synchronize, table)

NAME = "prediction"
RATIO_TARGET = 1.2
METHODS = {"ours_patch": "(a) ours, patch tiles", "ours_whole": "(b) ours, whole case <= 2x patch",
           "stock": "(c) nnU-Net stock (fp16 buffer)"}
SEED = 0


def _imports() -> None:
    """Everything the tasks import, so the baseline child carries the same libraries."""
    import torch  # noqa: F401
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor  # noqa: F401

    from blogrr_nnu import cases, sliding_window  # noqa: F401
    from blogrr_nnu.inference import predictor  # noqa: F401


def baseline() -> dict:
    """Child task: the imports only."""
    _imports()
    return {"rss_kib": peak_rss_kib(), **child_info()}


def _setup(dataset: str, configuration: str) -> tuple[dict, dict, Path]:
    """Plans, dataset.json and the configuration's folder of a preprocessed dataset."""
    from blogrr_nnu.paths import preprocessed_root, resolve_dataset
    from blogrr_nnu.planners.api import load_plans

    base = resolve_dataset(dataset, preprocessed_root())
    plans = load_plans(base)
    if configuration not in plans["configurations"]:
        raise ValueError(f"configuration {configuration!r} is not in the plans ({', '.join(plans['configurations'])})")
    dj = json.loads((base / "dataset.json").read_text())
    return plans, dj, base / plans["configurations"][configuration]["data_identifier"]


def _network(plans: dict, configuration: str, n_ch: int):
    """The plans' reconstruction U-Net, untrained, with the same seeded weights in every child."""
    import torch

    from blogrr_nnu.networks import build_reconstruction_network

    torch.manual_seed(SEED)
    return build_reconstruction_network(plans["configurations"][configuration], n_ch).eval()


def load_inputs(folder: Path, ids: list[str], config_spacing: list[float], spacing: float) -> list:
    """Images ``(C, Z, X, Y)`` of the cases, trilinearly resampled from the configuration's spacing to ``spacing``."""
    import torch

    from blogrr_nnu.cases import load_whole_case

    out = []
    for cid in ids:
        x = load_whole_case(folder, cid).data
        scale = [s / spacing for s in config_spacing]
        if any(abs(s - 1.0) > 1e-6 for s in scale):
            size = [max(1, round(n * s)) for n, s in zip(x.shape[1:], scale)]
            x = torch.nn.functional.interpolate(x[None], size=size, mode="trilinear", align_corners=False)[0]
        out.append(x.contiguous())
    return out


def task_window(method: str, dataset: str, configuration: str, ids: list[str], spacing: float, out_dir: str,
                device: str = "cpu", autocast: bool = False, tag: str | None = None) -> dict:
    """Child task (a), (b) or (c): time each case's sliding-window reconstruction; save the outputs to compare.

    Args:
        device: where the network runs. On CUDA the stock predictor stitches on the device
            (``perform_everything_on_device``, its default there) and under its own fp16 autocast, and ours
            stitches on the device too; every method first predicts the first case once, untimed (cuDNN picks
            its kernels per shape).
        autocast: ours only: windows under fp16 autocast (``BlogrrPredictor.use_autocast``; no effect on CPU).
        tag: name of the saved outputs (default: ``method``).
    """
    _imports()
    import numpy as np
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from blogrr_nnu.inference.predictor import BlogrrPredictor
    from blogrr_nnu.sliding_window import inference_tile_size, tile_count

    plans, dj, folder = _setup(dataset, configuration)
    cfg = plans["configurations"][configuration]
    inputs = load_inputs(folder, ids, cfg["spacing_3d"], spacing)
    n_ch = len(dj["channel_names"])
    dev = torch.device(device)
    net = _network(plans, configuration, n_ch).to(dev)
    patch, strides = list(cfg["patch_size"]), cfg["architecture"]["arch_kwargs"]["strides"]
    factor = 0.0
    if method == "stock":
        p = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                            perform_everything_on_device=dev.type == "cuda", device=dev, allow_tqdm=False)
        # as many segmentation heads as image channels, so the stock buffer holds the whole reconstruction
        labels = {"background": 0, **{f"channel_{c}": c for c in range(1, n_ch)}}
        pm = PlansManager(plans)
        p.manual_initialization(net, pm, pm.get_configuration(configuration), [net.state_dict()],
                                {**dj, "labels": labels}, "nnUNetTrainer", None)
    else:
        p = BlogrrPredictor(0.5, True, False, dev, fixed_threshold=1.0, allow_tqdm=False)
        p.initialize_from_checkpoints(plans, configuration, dj, [{"network_weights": net.state_dict(),
                                                                  "tau_initialised": False}])
        p.network.load_state_dict(net.state_dict())  # predict_case loads folds itself; here we call the hook
        p.whole_case_max_factor = factor = 0.0 if method == "ours_patch" else 2.0
        p.use_autocast = autocast
    with torch.inference_mode():  # build the kernels of the patch shape once, for every method alike
        p.network(torch.zeros((1, n_ch, *patch), device=dev))
        if dev.type == "cuda":
            p.predict_sliding_window_return_logits(inputs[0])
    seconds, tiles, tile_sizes, shapes = [], [], [], []
    for i, x in enumerate(inputs):
        synchronize(dev)
        t0 = time.perf_counter()
        out = p.predict_sliding_window_return_logits(x)
        synchronize(dev)
        seconds.append(time.perf_counter() - t0)
        tile = inference_tile_size(x.shape[1:], patch, strides, factor) if factor else tuple(patch)
        tiles.append(tile_count(x.shape[1:], tile, 0.5))
        tile_sizes.append(list(tile))
        shapes.append(list(x.shape))
        np.save(Path(out_dir) / f"{tag or method}_{i}.npy", out.cpu().numpy())  # native dtype: stock's fp16 stays fp16
        del out
    return {"seconds": seconds, "tiles": tiles, "tile_sizes": tile_sizes, "shapes": shapes}


def task_full(raw_folder: str, dataset: str, configuration: str, n: int, out_dir: str) -> dict:
    """Child task (d): read + ``predict_case`` + write the mask, per raw case (test cases, else healthy)."""
    _imports()
    import numpy as np
    import torch

    from blogrr_nnu import registration as reg
    from blogrr_nnu.image_io import write_image
    from blogrr_nnu.inference.predictor import BlogrrPredictor
    from blogrr_nnu.planners.fingerprint import load_case_channels
    from blogrr_nnu.raw_dataset import list_cases

    plans, dj, _ = _setup(dataset, configuration)
    by_role, _ = list_cases(raw_folder)
    cases = (by_role["test"] or by_role["healthy"])[:n]
    net = _network(plans, configuration, len(dj["channel_names"]))
    p = BlogrrPredictor(0.5, True, False, torch.device("cpu"), fixed_threshold=1.0, allow_tqdm=False)
    p.initialize_from_checkpoints(plans, configuration, dj,
                                  [{"network_weights": net.state_dict(), "tau_initialised": False}])
    t0 = time.perf_counter()
    reg.template_brain_mask(2.0)  # cached per process: reported apart
    template_s = time.perf_counter() - t0
    seconds = []
    for case in cases:
        t0 = time.perf_counter()
        data, geometry = load_case_channels(case)
        pred = p.predict_case(data, geometry)
        write_image(Path(out_dir) / f"{case.case_id}.nii.gz", pred.mask.astype(np.uint8), geometry)
        seconds.append(time.perf_counter() - t0)
    return {"seconds": seconds, "cases": [c.case_id for c in cases], "template_load_s": template_s}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m blogrr_nnu.benchmarks.{NAME}",
        description="Seconds per case and peak memory of sliding-window reconstruction: (a) ours with nnU-Net's "
        "tiles, (b) ours with whole-case windows, (c) nnU-Net's stock predictor, on N preprocessed cases resampled "
        "to each --spacings, with the same seeded untrained network of the plans (step 0.5, Gaussian, no "
        f"mirroring); ratio ours/stock (target <= {RATIO_TARGET}) and the largest difference of stock's fp16-buffered "
        "output from ours (fp32). (d) the whole per-case prediction at the configuration's spacing when the raw "
        "dataset is found. Each method runs in its own fresh process. Prints Markdown tables.",
        epilog="example:\n"
        "  python -m blogrr_nnu.benchmarks.speed.prediction -d 501 -c 3d_cpu -n 2 --spacings 2 1 -o pred.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", "--dataset", required=True, help="preprocessed dataset id or name (BLOGRR_preprocessed)")
    parser.add_argument("-c", "--configuration", default="3d_cpu", help="configuration (default 3d_cpu)")
    parser.add_argument("-n", "--num_cases", type=int, default=2, help="cases, the first N by id (default 2)")
    parser.add_argument("--spacings", type=float, nargs="+", default=[2.0, 1.0], metavar="MM",
                        help="isotropic spacings the cases are resampled to (default: 2 1)")
    parser.add_argument("--raw", default=None, help="raw root for (d) (default: BLOGRR_raw, see blogrr_nnu.paths)")
    parser.add_argument("-o", "--output", default=None, metavar="FILE.json", help="also write the results as JSON")
    return parser


def _diff(out_dir: Path, a: str, b: str, n: int) -> dict:
    """Largest and mean ``|a - b|`` over the saved outputs of ``n`` cases, and the largest ``|b|`` (the scale)."""
    import numpy as np

    mx, total, count, scale = 0.0, 0.0, 0, 0.0
    for i in range(n):
        x, y = (np.load(out_dir / f"{m}_{i}.npy").astype(np.float32) for m in (a, b))
        d = np.abs(x - y)
        mx, total, count, scale = max(mx, float(d.max())), total + float(d.sum()), count + d.size, max(
            scale, float(np.abs(y).max()))
    return {"max": mx, "mean": total / count, "max_abs_reference": scale}


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns 0, or 2 on a usage error."""
    args = build_parser().parse_args(argv)
    load0 = load_average()  # before any child adds its own load
    if args.num_cases < 1 or any(s <= 0 for s in args.spacings):
        print(f"{NAME}: -n must be >= 1 and --spacings > 0", file=sys.stderr)
        return 2
    from blogrr_nnu.paths import DatasetNotFoundError, raw_root, resolve_dataset

    try:
        plans, dj, folder = _setup(args.dataset, args.configuration)
    except (DatasetNotFoundError, FileNotFoundError, ValueError) as exc:
        print(f"{NAME}: {exc}", file=sys.stderr)
        return 2
    ids = sorted(p.stem for p in folder.glob("*.pkl"))[:args.num_cases]
    if not ids:
        print(f"{NAME}: {folder} holds no preprocessed case", file=sys.stderr)
        return 2
    cfg = plans["configurations"][args.configuration]
    name = folder.parent.name
    info, _ = run_in_child(baseline)
    base = info["rss_kib"]
    results: dict = {"dataset": name, "configuration": args.configuration, "cases": ids, "patch": cfg["patch_size"],
                     "configuration_spacing": cfg["spacing_3d"], "baseline_peak_rss_kib": base, "spacings": {}}
    rows = []
    for spacing in args.spacings:
        tmp = Path(tempfile.mkdtemp(prefix="blogrr_bench_pred_"))
        try:
            res = {m: dict(zip(("run", "peak_rss_kib"), run_in_child(task_window, m, name, args.configuration, ids,
                                                                      spacing, str(tmp)))) for m in METHODS}
            diff = {m: _diff(tmp, m, "ours_patch", len(ids)) for m in ("stock", "ours_whole")}
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        stock_mean = stats(res["stock"]["run"]["seconds"])["mean"]
        for m, label in METHODS.items():
            r, s = res[m]["run"], stats(res[m]["run"]["seconds"])
            ratio = s["mean"] / stock_mean
            verdict = "" if m != "ours_patch" else f" ({'met' if ratio <= RATIO_TARGET else 'NOT met'})"
            rows.append([f"{spacing:g}", "x".join(map(str, r["shapes"][0])), label,
                         "x".join(map(str, r["tile_sizes"][0])),
                         ", ".join(map(str, r["tiles"])), sec(s["mean"]), sec(s["min"]), sec(s["max"]),
                         mib(res[m]["peak_rss_kib"]), mib(res[m]["peak_rss_kib"] - base),
                         "-" if m == "stock" else f"{ratio:.2f}{verdict}",
                         f"(max abs {diff['stock']['max_abs_reference']:.3g})" if m == "ours_patch" else
                         f"{diff[m]['max']:.2e} / {diff[m]['mean']:.1e}"])
            res[m]["stats"], res[m]["ratio_over_stock"] = s, ratio
        results["spacings"][f"{spacing:g}"] = {**res, "abs_diff_vs_ours_patch": diff}
    tables = [table(f"{name} {args.configuration}: sliding-window reconstruction of {len(ids)} case(s) "
                    f"({', '.join(ids)}), patch {cfg['patch_size']}, step 0.5, Gaussian, no mirroring",
                    ["spacing mm", "input (C, Z, X, Y), 1st case", "method", "tile, 1st case", "tiles per case",
                     "mean s/case", "min s", "max s", "peak RSS MiB", "over baseline MiB",
                     f"ours / stock (target <= {RATIO_TARGET} for (a))", "abs diff vs (a): max / mean"], rows)]
    notes = [f"baseline (imports only) peak RSS {mib(base)} MiB; configuration spacing {cfg['spacing_3d']} mm "
             "(cases at another spacing are resampled trilinearly, so their size scales with the spacing ratio)",
             "(a) and (c) run the same tiles, so their difference is stock's fp16 buffer alone (the reason ours "
             "stitches in fp32): largest where the Gaussian weights are tiny (volume corners), where fp16 sums of "
             "weight x output lose their digits; (b) differs from (a) where one window sees the whole case (no tile "
             "borders; instance norm over the whole case)",
             "stock runs a producer thread that copies each tile, and sums with a Gaussian scaled by 10 in fp16; "
             "both warm up on one patch-sized input first; (b)'s whole-case shapes are new to the kernels on "
             "every case"]
    try:
        raw = resolve_dataset(name, raw_root(args.raw))
        has_images = any((raw / d).is_dir() and any((raw / d).iterdir()) for d in ("imagesTs", "imagesTr"))
    except DatasetNotFoundError:
        raw, has_images = None, False
    if has_images:
        with tempfile.TemporaryDirectory(prefix="blogrr_bench_pred_full_") as tmp:
            full, rss = run_in_child(task_full, str(raw), name, args.configuration, args.num_cases, tmp)
        s = stats(full["seconds"])
        results["full_case"] = {**full, **s, "peak_rss_kib": rss}
        tables.append(table(f"(d) whole prediction per raw case at the configuration's spacing ({raw.name}: "
                            f"{', '.join(full['cases'])})",
                            ["cases", "mean s/case", "min s", "max s", "template load once s", "peak RSS MiB",
                             "over baseline MiB"],
                            [[s["n"], sec(s["mean"]), sec(s["min"]), sec(s["max"]), sec(full["template_load_s"]),
                              mib(rss), mib(rss - base)]]))
        notes.append("(d) per case: read channels, register, preprocess, reconstruct (whole-case window when it fits), "
                     "anomaly map, fixed threshold, small-component removal, back to the native grid, write the mask")
    else:
        notes.append(f"(d) skipped: no raw dataset {name} with imagesTs/imagesTr under {raw_root(args.raw)}")
    machine = machine_info(info["torch_threads"], load0)
    emit(NAME, command_line(NAME, argv), machine, tables, notes, results, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
