"""``blogrr_train DATASET FOLD``: train BLOGRR (or the DAE baseline) on a preprocessed dataset."""
from __future__ import annotations

import argparse
import logging
import sys

from blogrr_nnu.commands._cli import command_parser, fail, resolve_device, start_logging

PROG = "blogrr_train"


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "blogrr_train",
        "Train the reconstruction and threshold networks of BLOGRR (bi-level loop) on a preprocessed "
        "dataset, as nnUNetv2_train does. Checkpoints, progress.png, training log and run_config.json go to "
        "$BLOGRR_results/DatasetXXX_Name/<Trainer>__blogrr_plans__<config>/fold_<FOLD>/.",
        "examples:\n  blogrr_train 501 0\n  blogrr_train 501 0 -c 3d_cpu --epochs 5\n"
        "  blogrr_train 501 all -c 3d_fullres -device cuda -num_gpus 2\n  blogrr_train 501 0 --c      # resume\n"
        "  blogrr_train 501 0 -tr dae   # DAE baseline (no threshold network)\n"
        "  blogrr_train 501 0 --pseudo_label fused   # upper loop against report + image pseudo-labels\n"
        "  blogrr_train 501 0 --threshold_model reference --maps plain   # the published form (reference CNN T)\n"
        "  blogrr_train 501 0 -tr cgc                # CGC on GMM pseudo-labels (--pseudo_label fused: fused ones)\n"
        "  blogrr_train 501 0 --maps plain           # BLOGRR on plain anomaly maps (run folder BlogrrTrainer)")
    parser.add_argument("dataset", help="dataset id, folder name or name")
    parser.add_argument("fold", help="fold 0-4, or 'all'")
    parser.add_argument("-c", "--configuration", default=None,
                        help="configuration (default: 3d_fullres with a GPU, 3d_cpu without)")
    parser.add_argument("-tr", "--trainer", default="blogrr", choices=["blogrr", "dae", "cgc"],
                        help="blogrr (default), dae (reconstruction only), cgc (GMM pseudo-labels + cross-granularity "
                        "contrastive segmentation network, docs/cgc.md)")
    parser.add_argument("-device", default=None, choices=["cpu", "cuda", "mps"],
                        help="device (default: cuda if available, else cpu)")
    parser.add_argument("--c", dest="continue_training", action="store_true", help="continue from the latest checkpoint")
    parser.add_argument("--val", dest="validation_only", action="store_true", help="only run validation of a trained fold")
    parser.add_argument("--epochs", type=int, default=None, help="outer epochs (default: 100 GPU / 12 CPU configs)")
    parser.add_argument("--iters", type=int, default=None, help="lower-loop iterations per epoch")
    parser.add_argument("--upper_iters", type=int, default=None, help="upper-loop iterations per epoch")
    parser.add_argument("--threshold_model", default=None, choices=["contrast", "stats", "reference"],
                        help="threshold network: contrast (default: sees the case's half-contrast threshold on its "
                        "anomaly map, fitted to each case's target threshold), stats (the same with three quantiles of "
                        "the map; run folder ...StatsTNormative) or reference (the reference's CNN on the image, soft Dice; run "
                        "folder ...ReferenceTNormative, ...ReferenceT with --maps plain); docs/training.md")
    parser.add_argument("--threshold_input", default=None, choices=["image", "image+anomaly"],
                        help="reference threshold model: what it sees (default image, as the reference)")
    parser.add_argument("--pseudo_label", default=None, choices=["report", "gmm", "fused"],
                        help="target of the upper loop: the report (default: its stated size for the map models, "
                        "its regions for the reference model), GMM, or report + image fused (docs/pseudo_labels.md)")
    parser.add_argument("--threshold_per_case", action="store_true",
                        help="reference threshold model on 2D configurations: one threshold per case (per-slice "
                        "outputs averaged over the brain slices) instead of one per slice as the reference")
    parser.add_argument("--maps", default=None, choices=["normative", "plain"],
                        help="anomaly maps of blogrr and dae: normative (every map minus the mean map of the healthy "
                        "training cases, voxel by voxel on the template grid; kept in the checkpoint, prediction "
                        "subtracts it too; run folder ...Normative) or plain. Default: normative for blogrr, plain for "
                        "dae (the published baseline); docs/training.md")
    parser.add_argument("-num_gpus", type=int, default=1, help="DDP processes (nnU-Net style); gloo on CPU")
    parser.add_argument("--preprocessed", default=None, help="preprocessed root (default $BLOGRR_preprocessed ...)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    start_logging(level=logging.INFO)
    from blogrr_nnu.paths import DatasetNotFoundError
    from blogrr_nnu.checkpoint import UnsafeCheckpointError

    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        return fail(PROG, str(exc))
    from blogrr_nnu.amp import configure_cuda

    configure_cuda(device)  # cuDNN autotuning on CUDA, as nnU-Net's run_training
    kw = dict(trainer=args.trainer, device=device, threshold_input=args.threshold_input, pseudo_label=args.pseudo_label,
              threshold_model=args.threshold_model,
              normative=None if args.maps is None else args.maps == "normative",
              threshold_per_case=args.threshold_per_case, epochs=args.epochs,
              iters=args.iters, upper_iters=args.upper_iters, preprocessed=args.preprocessed,
              continue_training=args.continue_training, validation_only=args.validation_only)
    try:
        if args.num_gpus > 1:
            from blogrr_nnu.trainers.ddp import launch

            launch(args.num_gpus, args.dataset, args.fold, args.configuration, **kw)
            return 0
        from blogrr_nnu.trainers.ddp import maybe_init_from_env
        from blogrr_nnu.trainers.api import run

        maybe_init_from_env(device)
        tr = run(args.dataset, args.fold, args.configuration, **kw)
    except (DatasetNotFoundError, ValueError, FileNotFoundError, UnsafeCheckpointError) as exc:
        return fail(PROG, str(exc))
    if args.validation_only:
        print({k: round(v, 4) for k, v in tr.validation_metrics.items()})
    print(f"run folder: {tr.output_folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
