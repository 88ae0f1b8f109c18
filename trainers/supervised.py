"""Full supervision, the benchmark's ceiling: nnU-Net's stock ``nnUNetTrainer`` on the tumour labels.

The stock trainer cannot read our preprocessed dataset as it is: its seg files hold five channels (brain,
pseudo-labels, label; planners/preprocessing.py) and nnU-Net trains on every seg channel it is given.
So :func:`write_supervised_dataset` writes a second preprocessed dataset beside the benchmark's outputs
that nnU-Net reads unchanged: the same arrays (registered, resampled and normalised by our
preprocessing, so the network, patch and batch are those of our plans) of the tumour training cases that
have a label, seg = the label alone, ``class_locations`` for nnU-Net's foreground oversampling, and a
``splits_final.json`` with our folds restricted to those cases. Then :func:`train_supervised` runs the
stock class (passed directly: its by-name lookup imports torchvision, DESIGN.md section 6) with its own
loss, deep supervision, augmentation, optimiser and schedule; only the number of epochs and iterations is
set, to the budget of our trainer for the configuration (nnU-Net's 1000 x 250 do not fit a CPU).

The run folder is ``$BLOGRR_results/DatasetXXX/nnUNetTrainer__blogrr_plans__<configuration>/fold_X``, with
nnU-Net's own checkpoints, log and progress.png; a run of ``budget`` times our step budget (the benchmark's
converged ceiling: more epochs, same iterations per epoch) lives below ``$BLOGRR_results/supervised_<budget>x/``
so that the class stays the stock one; :class:`~blogrr_nnu.inference.predictor.BlogrrPredictor`
predicts with it on native inputs like any other run (method ``"nnunet"``).
"""
from __future__ import annotations

import copy
import json
import logging
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import torch

from blogrr_nnu.image_io import atomic_write
from blogrr_nnu.paths import environment, preprocessed_root, resolve_dataset, results_root
from blogrr_nnu.planners.api import load_plans
from blogrr_nnu.planners.preprocessing import SEG_CHANNELS, is_done, save_case_atomic
from blogrr_nnu.splits import case_roles, load_or_create_splits

logger = logging.getLogger(__name__)

TRAINER_NAME = "nnUNetTrainer"
SUPERVISED_DIR = "supervised_nnunet_preprocessed"
LABEL_CHANNEL = SEG_CHANNELS.index("label")


class NoLabelsError(ValueError):
    """Full supervision needs tumour training cases with labels (``labelsTrTumor/``)."""


def supervised_root(dataset: str | int) -> Path:
    """Preprocessed root of the label-only copy: ``$BLOGRR_preprocessed/supervised_nnunet_preprocessed``."""
    resolve_dataset(dataset, preprocessed_root())
    return preprocessed_root() / SUPERVISED_DIR


def write_supervised_dataset(dataset: str | int, configuration: str) -> Path:
    """Write (or complete) the label-only copy of one configuration; returns its dataset folder.

    Raises:
        NoLabelsError: no tumour training case has a label.
    """
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

    base = resolve_dataset(dataset, preprocessed_root())
    plans = load_plans(base)
    if configuration not in plans["configurations"]:
        raise ValueError(f"configuration {configuration!r} is not in the plans ({', '.join(plans['configurations'])})")
    cfg = plans["configurations"][configuration]
    src = base / cfg["data_identifier"]
    roles = case_roles(src)
    labelled = []
    for cid in sorted(k for k, r in roles.items() if r == "tumor"):
        with open(src / f"{cid}.pkl", "rb") as fh:
            if pickle.load(fh).get("has_label"):
                labelled.append(cid)
    if not labelled:
        raise NoLabelsError(f"{base.name}: no tumour training case has a label; full supervision needs labelsTrTumor/ "
                            "(leave 'supervised' out of --methods)")
    out = supervised_root(dataset) / base.name
    dst = out / cfg["data_identifier"]
    dst.mkdir(parents=True, exist_ok=True)
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    reader = nnUNetDatasetBlosc2(str(src), labelled)
    for cid in labelled:
        if is_done(dst, cid):
            continue
        data, seg, _, props = reader.load_case(cid)
        label = np.asarray(seg[LABEL_CHANNEL:LABEL_CHANNEL + 1]).astype(np.int8)
        props = {**props, "seg_channels": ["label"],
                 "class_locations": DefaultPreprocessor._sample_foreground_locations(label, [1], seed=1234)}
        save_case_atomic(dst, cid, np.asarray(data), label, props, cfg["patch_size"])
    shutil.rmtree(dst / ".tmp", ignore_errors=True)
    # our folds (healthy cases are in them too) restricted to the labelled tumour cases
    splits = load_or_create_splits(base, src)
    keep = set(labelled)
    own = [{k: [c for c in s[k] if c in keep] for k in ("train", "val")} for s in splits]
    dj = {**json.loads((base / "dataset.json").read_text()), "labels": {"background": 0, "tumor": 1},
          "numTraining": len(labelled)}
    for name, obj in (("splits_final.json", own), ("dataset.json", dj), (f"{plans['plans_name']}.json", plans)):
        atomic_write(out / name, lambda tmp, obj=obj: Path(tmp).write_text(json.dumps(obj, indent=1)))
    shutil.copyfile(base / "dataset_fingerprint.json", out / "dataset_fingerprint.json")
    return out


def _stock_environment(pre_root: Path, budget: int = 1):
    """nnU-Net's variables for the stock trainer: the label-only copy, our results, no compile, DA in-process."""
    # nnUNet_n_proc_DA 0 = nnU-Net's SingleThreadedAugmenter: augmentation in the training process, as ours
    # does, so the timing comparison is like for like and no forked workers sit beside torch threads
    return environment(nnUNet_preprocessed=str(pre_root), nnUNet_results=str(_results_for(budget)), nnUNet_compile="f",
                       nnUNet_n_proc_DA=os.environ.get("nnUNet_n_proc_DA", "0"))


def _results_for(budget: int) -> Path:
    return results_root() if budget == 1 else results_root() / f"supervised_{int(budget)}x"


def supervised_run_folder(dataset: str | int, configuration: str, budget: int = 1) -> Path:
    """``$BLOGRR_results[/supervised_<budget>x]/DatasetXXX_Name/nnUNetTrainer__<plans>__<configuration>``."""
    base = resolve_dataset(dataset, preprocessed_root())
    plans_name = load_plans(base)["plans_name"]
    return _results_for(budget) / base.name / f"{TRAINER_NAME}__{plans_name}__{configuration}"


def train_supervised(dataset: str | int, fold: int | str, configuration: str, *, device: str = "cpu",
                     epochs: int | None = None, iters: int | None = None, continue_training: bool = True,
                     budget: int = 1) -> Path:
    """Train nnU-Net's stock trainer on the label-only copy; returns the fold folder.

    Args:
        epochs, iters: nnU-Net epochs and iterations per epoch; default: our trainer's for the configuration
            (12 x 30 on CPU configurations, 100 x 250 on GPU ones), so both see the same number of steps.
        budget: multiply the epochs by this (the converged ceiling; its own results folder).
        continue_training: resume from ``checkpoint_latest.pth`` if a killed run left one (as ``--c``).
    """
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from blogrr_nnu.trainers.base_trainer import default_schedule

    folder = write_supervised_dataset(dataset, configuration)
    plans = copy.deepcopy(load_plans(folder))
    plans["continue_training"] = continue_training  # nnU-Net pops it in __init__
    our_epochs, our_iters = default_schedule(plans["configurations"][configuration]["blogrr"])
    dj = json.loads((folder / "dataset.json").read_text())
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    with _stock_environment(folder.parent, budget):
        tr = nnUNetTrainer(plans, configuration, fold if fold == "all" else int(fold), dj, torch.device(device))
        tr.num_epochs = int(epochs or our_epochs) * int(budget)
        tr.num_iterations_per_epoch = int(iters or our_iters)
        tr.num_val_iterations_per_epoch = max(1, tr.num_iterations_per_epoch // 5)
        tr.save_every = 1  # nnU-Net's 50 would leave nothing to resume from in a 12-epoch run
        fold_dir = Path(tr.output_folder)
        latest = fold_dir / "checkpoint_latest.pth"
        if (fold_dir / "checkpoint_final.pth").is_file():
            return fold_dir
        if continue_training and latest.is_file():
            tr.load_checkpoint(str(latest))
        tr.run_training()
    return fold_dir
