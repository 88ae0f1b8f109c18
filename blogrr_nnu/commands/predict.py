"""``blogrr_predict -i IN -o OUT -d DATASET``: tumour masks for a folder of scans with trained folds."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from blogrr_nnu.commands._cli import command_parser, fail, resolve_device, start_logging

PROG = "blogrr_predict"

# -tr names -> run folder classes (blogrr: the default run, on normative maps; blogrr_plain: blogrr_train --maps plain)
TRAINER_ALIASES = {"blogrr": "BlogrrTrainerNormative", "blogrr_plain": "BlogrrTrainer", "dae": "DAETrainer",
                   "cgc": "CGCTrainer", "nnunet": "nnUNetTrainer"}


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "blogrr_predict",
        "Predict tumour masks for a folder of skull-stripped scans (<case>_<4-digit channel>.nii.gz, as "
        "nnU-Net): registration to the template, sliding-window reconstruction, anomaly map, per-case threshold from "
        "the threshold network, masks on each input's native grid. Cases already predicted are skipped.",
        "examples:\n  blogrr_predict -i imagesTs -o pred -d 501\n"
        "  blogrr_predict -i imagesTs -o pred -d 501 -c 3d_cpu -f 0 1 2 3 4 --save_anomaly_maps\n"
        "  blogrr_predict -i imagesTs -o pred -d 501 -num_parts 2 -part_id 0   # and -part_id 1 elsewhere\n"
        "  blogrr_predict -i imagesTs -o pred_dae -d 501 -tr dae --threshold 1.5\n"
        "  blogrr_predict -i imagesTs -o pred_gmm -d 501 -tr gmm   # GMM w/ threshold baseline, no training\n"
        "  blogrr_predict -i imagesTs -o pred -m results/Dataset501_BlogrrDemo/BlogrrTrainerNormative__blogrr_plans__3d_cpu")
    parser.add_argument("-i", dest="input", required=True, help="input folder of <case>_<XXXX>.nii.gz files")
    parser.add_argument("-o", dest="output", required=True, help="output folder (created)")
    parser.add_argument("-d", "--dataset", default=None, help="dataset id, folder name or name (with -c and -tr "
                        "this finds the run folder below the results root)")
    parser.add_argument("-c", "--configuration", default=None, help="configuration (default: 3d_fullres with a GPU, "
                        "3d_cpu without)")
    parser.add_argument("-tr", "--trainer", default="blogrr", help="blogrr (the default run, on normative maps), "
                        "blogrr_plain (blogrr_train --maps plain), dae, cgc, nnunet (the stock "
                        "nnUNetTrainer run of blogrr_benchmark's full supervision), or a trainer class name such as "
                        "BlogrrTrainerGMMTargetNormative (default blogrr); gmm: the GMM w/ threshold baseline (no training; "
                        "uses the healthy intensity model of the preprocessed configuration)")
    parser.add_argument("-m", "--model_folder", default=None, help="run folder <Trainer>__blogrr_plans__<config> "
                        "(instead of -d/-c/-tr)")
    parser.add_argument("-f", "--folds", nargs="+", default=None, help="folds to ensemble (default: every trained fold)")
    parser.add_argument("-chk", "--checkpoint", default="checkpoint_final.pth",
                        help="checkpoint file name (default checkpoint_final.pth)")
    parser.add_argument("-device", default=None, choices=["cpu", "cuda", "mps"], help="default: cuda if available")
    parser.add_argument("-step_size", type=float, default=0.5, help="sliding-window step as a fraction of the patch")
    parser.add_argument("--tta", action="store_true", help="left-right mirroring test-time augmentation (off by "
                        "default: the threshold network was trained without it)")
    parser.add_argument("--min_component_ml", type=float, default=None,
                        help="remove connected components smaller than this (default 0.5 ml; 0 keeps all)")
    parser.add_argument("--threshold", type=float, default=None, help="fixed threshold in normalised units instead "
                        "of the threshold network (required for DAE runs)")
    parser.add_argument("--save_anomaly_maps", action="store_true",
                        help="also write anomaly maps (float32) and a JSON per case (tau, voxels, volume in ml)")
    parser.add_argument("-num_parts", type=int, default=1, help="split the cases into this many parts")
    parser.add_argument("-part_id", type=int, default=0, help="which part this process predicts (0-based)")
    parser.add_argument("--overwrite", action="store_true", help="predict cases whose outputs exist again")
    parser.add_argument("--results", default=None, help="results root (default $BLOGRR_results, ...)")
    return parser


def model_folder(args, device_type: str) -> Path:
    """The run folder from -m, or from -d/-c/-tr below the results root."""
    if args.model_folder:
        return Path(args.model_folder)
    if args.dataset is None:
        raise ValueError("give the model with -d DATASET (and optionally -c, -tr) or -m RUN_FOLDER")
    from blogrr_nnu.paths import resolve_dataset, results_root
    from blogrr_nnu.planners.planner import PLANS_NAME
    from blogrr_nnu.trainers.api import default_configuration

    import torch

    folder = resolve_dataset(args.dataset, results_root(args.results))
    config = args.configuration or default_configuration(torch.device(device_type))
    trainer = TRAINER_ALIASES.get(args.trainer, args.trainer)
    run = folder / f"{trainer}__{PLANS_NAME}__{config}"
    if not run.is_dir():
        have = ", ".join(sorted(p.name for p in folder.iterdir() if p.is_dir())) or "none"
        raise ValueError(f"{run}: no such run folder (have: {have}); train with `blogrr_train {folder.name} FOLD "
                         f"-c {config}` or pick -c/-tr")
    return run


def _init_gmm(predictor, args, device_type: str) -> None:
    """GMM baseline: plans, dataset.json and the healthy model come from the preprocessed dataset."""
    import torch

    from blogrr_nnu.paths import preprocessed_root, resolve_dataset
    from blogrr_nnu.trainers.api import default_configuration

    if args.dataset is None:
        raise ValueError("-tr gmm needs -d DATASET (its healthy intensity model lives with the preprocessed data)")
    folder = resolve_dataset(args.dataset, preprocessed_root())
    predictor.initialize_gmm_from_preprocessed(folder, args.configuration or default_configuration(torch.device(device_type)))


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (1 if any case failed)."""
    args = build_parser().parse_args(argv)
    start_logging(level=logging.INFO)
    import torch

    from blogrr_nnu.inference.predict_folder import predict_folder
    from blogrr_nnu.inference.predictor import DEFAULT_MIN_COMPONENT_ML, BlogrrPredictor, ModelFolderError
    from blogrr_nnu.paths import DatasetNotFoundError
    from blogrr_nnu.checkpoint import UnsafeCheckpointError

    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        return fail(PROG, str(exc))
    try:
        predictor = BlogrrPredictor(args.step_size, use_mirroring=args.tta, device=torch.device(device),
                                    min_component_ml=DEFAULT_MIN_COMPONENT_ML if args.min_component_ml is None
                                    else args.min_component_ml, fixed_threshold=args.threshold)
        if args.trainer == "gmm":
            _init_gmm(predictor, args, device)
        else:
            predictor.initialize_from_run_folder(model_folder(args, device), args.folds, args.checkpoint)
        result = predict_folder(predictor, args.input, args.output, save_anomaly_maps=args.save_anomaly_maps,
                                overwrite=args.overwrite, num_parts=args.num_parts, part_id=args.part_id)
    except (DatasetNotFoundError, ModelFolderError, UnsafeCheckpointError, ValueError, FileNotFoundError) as exc:
        return fail(PROG, str(exc))
    print(f"predicted {len(result.done)} case(s), skipped {len(result.skipped)} already done, "
          f"{len(result.failed)} failed -> {Path(args.output).resolve()}")
    for cid, why in sorted(result.failed.items()):
        print(f"FAILED {cid}: {why}", file=sys.stderr)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
