"""BaseTrainer: what every blogrr trainer shares with nnU-Net's, and the epoch loop with named hooks.

nnU-Net's ``nnUNetTrainer`` brings the plans and configuration managers, the label manager, batch size,
run folders, DDP set-up, logging and its data loader; its ``run_training`` (one segmentation loss per
step, deep supervision, poly learning rate) does not fit a reconstruction network, a threshold network
or a contrastive head. So :class:`BaseTrainer` keeps nnU-Net's state and replaces the loop:

``run_training`` = :meth:`~BaseTrainer.on_train_start` (folds, patch loader, cases in memory, run folder),
then per epoch :meth:`~BaseTrainer.run_lower_loop` (the method's training steps), :meth:`~BaseTrainer.run_upper_loop`
(a second step some methods have; none by default), :meth:`~BaseTrainer.run_validation` (held-out fold),
a log line (:meth:`~BaseTrainer.epoch_summary`), the best checkpoint (:meth:`~BaseTrainer.checkpoint_score`)
and the latest checkpoint. A method subclasses it and fills the hooks: :meth:`~BaseTrainer.build_networks`,
:meth:`~BaseTrainer.patch_keys`, :meth:`~BaseTrainer.load_training_cases`, the loops, the validation and
:meth:`~BaseTrainer.checkpoint_extras` / :meth:`~BaseTrainer.load_checkpoint_extras`.

All randomness of an epoch is seeded from (seed, epoch, part, rank) (:meth:`~BaseTrainer.seed_part`), and a
checkpoint is written at the end of every epoch, so a run killed mid-epoch and resumed with ``--c`` continues
exactly as an uninterrupted run would.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from nnunetv2.training.data_augmentation.compute_initial_patch_size import get_patch_size
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from blogrr_nnu import __version__
from blogrr_nnu.cases import load_whole_case
from blogrr_nnu.checkpoint import load_checkpoint, save_checkpoint
from blogrr_nnu.image_io import atomic_write
from blogrr_nnu.paths import environment, preprocessed_root, results_root
from blogrr_nnu.plans_block import BlogrrBlock, configuration_block
from blogrr_nnu.splits import case_roles, fold_keys, load_or_create_splits
from blogrr_nnu.trainers import progress as prog


def nnunet_paths():
    """Point nnU-Net's path variables at blogrr's resolved folders while nnU-Net code reads them."""
    return environment(nnUNet_preprocessed=str(preprocessed_root()), nnUNet_results=str(results_root()))


def default_schedule(blogrr) -> tuple[int, int]:
    """(outer epochs, lower-loop iterations per epoch) for a configuration's ``blogrr`` plans block (or its dict).

    Outer epochs as the reference (100) on GPU; on CPU a schedule that fits in minutes.
    """
    return (12, 30) if BlogrrBlock.from_dict(blogrr).cpu else (100, 250)


def unwrap(module):
    """The module inside a DDP wrapper (or the module itself)."""
    return module.module if isinstance(module, DDP) else module


class BaseTrainer(nnUNetTrainer):
    """nnU-Net's trainer state with blogrr's epoch loop (module docstring); not trained itself.

    Constructed like nnU-Net's trainer: ``Trainer(plans, configuration, fold, dataset_json, device)`` with our plans
    (``blogrr_plans.json``); folders come from ``BLOGRR_preprocessed`` / ``BLOGRR_results`` (:mod:`blogrr_nnu.paths`).

    Attributes:
        upper_loop_target: seg channel the method reads as its pseudo-label (``load_case`` loads it as the target).
        seed: seeds the initial weights and, with epoch, part and rank, every epoch's randomness.
    """

    upper_loop_target = "pseudo_report"
    seed = 12345

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        plans = dict(plans)
        plans.setdefault("continue_training", False)
        dataset_json = dict(dataset_json)
        dataset_json.setdefault("labels", {"background": 0, "tumor": 1})
        with nnunet_paths():
            super().__init__(plans, configuration, fold, dataset_json, device)
        # nnU-Net forces CUDA under DDP; we also run DDP on CPU (gloo).
        if self.is_ddp and torch.device(device).type != "cuda":
            self.device = torch.device(device)
            self.grad_scaler = None  # nnU-Net made one for the CUDA device it assumes under DDP
        self.my_init_kwargs["device"] = str(self.device)
        # the configuration's blogrr block, parsed and checked once (a bad or old plans file fails here)
        self.blogrr = configuration_block(self.plans_manager.plans, configuration,
                                          f"{self.preprocessed_dataset_folder_base}/blogrr_plans.json")
        self.strides = self.configuration_manager.configuration["architecture"]["arch_kwargs"]["strides"]
        self.dim = len(self.configuration_manager.patch_size)
        self.cpu_schedule = self.blogrr.cpu
        self.num_epochs, self.num_iterations_per_epoch = default_schedule(self.blogrr)
        # Reference: Adam (amsgrad), lr 1e-4, weight decay 1e-5. On CPU there are ~20x fewer steps, so 10x higher
        # (measured: at 1e-4 a reconstruction network still copies noise after 300 steps).
        self.initial_lr = 1e-3 if self.cpu_schedule else 1e-4
        self.weight_decay = 1e-5
        self.enable_deep_supervision = False
        self.tile_step_size = 0.5
        self.progress = prog.new_progress()
        self.best_pseudo_dice = -math.inf
        self.keys: dict[str, list[str]] = {}
        self.save_every = 1

    # -- hooks ---------------------------------------------------------------------------------------
    def build_networks(self, n_channels: int) -> None:
        """Set ``self.network`` (and any other network) and ``self.optimizer``; weights are seeded before."""
        raise NotImplementedError

    def wrap_ddp(self, device_ids) -> None:
        """Under DDP: wrap the networks that are trained by gradient steps (default: ``self.network``)."""
        # Without deep supervision the U-Net's decoder keeps segmentation heads it never uses; DDP must be told,
        # or it silently skips the gradient bucket that holds them (measured: ranks diverged after one step).
        self.network = DDP(self.network, device_ids=device_ids, find_unused_parameters=True)

    def patch_keys(self, folder: Path) -> list[str]:
        """Cases the patch loader samples training patches from (raise ``ValueError`` naming the fix if none)."""
        raise NotImplementedError

    def load_training_cases(self, folder: Path) -> None:
        """Whole training cases the method keeps in memory (after the patch loader is built)."""

    def run_lower_loop(self, epoch: int) -> dict:
        """The method's training steps of one epoch; returns mean losses (keys of :mod:`~blogrr_nnu.trainers.progress`)."""
        raise NotImplementedError

    def run_upper_loop(self, epoch: int) -> dict:
        """A second training step after the lower loop (BLOGRR's threshold network); none by default."""
        return {}

    def run_validation(self) -> dict:
        """Metrics on the held-out fold (``val_*`` keys of :mod:`~blogrr_nnu.trainers.progress`)."""
        raise NotImplementedError

    def checkpoint_score(self, val: dict) -> float:
        """What picks ``checkpoint_best`` (higher is better; never a ground-truth number): Dice against the
        pseudo-label by default."""
        return val["val_pseudo_dice"]

    def epoch_summary(self, lower: dict, upper: dict, val: dict) -> str:
        """One log line's worth of an epoch's numbers."""
        raise NotImplementedError

    def checkpoint_extras(self) -> dict:
        """What the method adds to :meth:`base_checkpoint` (tensors, numbers and strings only)."""
        return {}

    def load_checkpoint_extras(self, ckpt: dict) -> None:
        """Restore what :meth:`checkpoint_extras` saved."""

    # -- set-up ----------------------------------------------------------------------------------------
    def initialize(self):
        """Batch size from the plans, seeded networks (:meth:`build_networks`), DDP wrappers, no LR schedule."""
        if self.was_initialized:
            raise RuntimeError("initialize() was called twice")
        self._set_batch_size_and_oversample()
        self.num_input_channels = len(self.dataset_json["channel_names"])
        torch.manual_seed(self.seed)  # same initial weights on every rank and every run
        self.build_networks(self.num_input_channels)
        self.lr_scheduler = None  # constant learning rates, as the reference
        if self.is_ddp:
            self.wrap_ddp([self.device.index] if self.device.type == "cuda" else None)
        self.dataset_class = nnUNetDatasetBlosc2
        self.inference_allowed_mirroring_axes = (1,) if self.dim == 3 else (0,)  # left-right only
        self.was_initialized = True

    def _augmentation(self):
        """Spatial augmentation only (docs/training.md): small rotations and scalings, left-right mirroring.

        No intensity transforms: a reconstruction network learns what healthy tissue looks like, and
        brightness/contrast/gamma changes would teach it to reconstruct abnormal intensities too. No nnU-Net
        masking transform: noise and loss are restricted to the brain explicitly.
        """
        patch = list(self.configuration_manager.patch_size)
        rot = (-10.0 / 180 * np.pi, 10.0 / 180 * np.pi)
        initial = get_patch_size(patch, rot, rot if self.dim == 3 else (0, 0), rot if self.dim == 3 else (0, 0),
                                 (0.9, 1.1))
        transforms = ComposeTransforms([
            SpatialTransform(patch, patch_center_dist_from_border=0, random_crop=False, p_elastic_deform=0,
                             p_rotation=0.2, rotation=rot, p_scaling=0.2, scaling=(0.9, 1.1),
                             p_synchronize_scaling_across_axes=1, bg_style_seg_sampling=False,
                             border_mode_seg="constant", padding_value_seg=-1),
            MirrorTransform(allowed_axes=self.inference_allowed_mirroring_axes),
        ])
        return list(initial), transforms

    def on_train_start(self):
        """Folds, the patch loader over :meth:`patch_keys`, the method's cases, validation cases, run folder."""
        folder = self._load_fold_keys()
        self.dataloader_train = self._patch_loader(folder, self.patch_keys(folder))
        self.load_training_cases(folder)
        self.tumor_val = [load_whole_case(folder, k, self.upper_loop_target) for k in self.keys["tumor_val"]]
        self.healthy_val = [load_whole_case(folder, k, self.upper_loop_target) for k in self.keys["healthy_val"]]
        Path(self.output_folder).mkdir(parents=True, exist_ok=True)
        if self.local_rank == 0:
            self._write_model_files()

    def _load_fold_keys(self) -> Path:
        """Initialise if needed, read (or write) the splits and set ``self.keys``; returns the data folder."""
        if not self.was_initialized:
            self.initialize()
        folder = Path(self.preprocessed_dataset_folder)
        self.keys = fold_keys(load_or_create_splits(Path(self.preprocessed_dataset_folder_base), folder), self.fold,
                              case_roles(folder))
        return folder

    def patch_dataset(self, folder: Path, keys: list[str]) -> nnUNetDatasetBlosc2:
        """The dataset the patch loader reads: nnU-Net's blosc2 dataset of ``keys``."""
        return nnUNetDatasetBlosc2(str(folder), keys)

    def _patch_loader(self, folder: Path, keys: list[str]) -> nnUNetDataLoader:
        """nnU-Net's loader of random patches of ``keys`` (:meth:`patch_dataset`) with our augmentation."""
        initial, transforms = self._augmentation()
        return nnUNetDataLoader(self.patch_dataset(folder, keys), self.batch_size, initial,
                                self.configuration_manager.patch_size, self.label_manager,
                                oversample_foreground_percent=0.0, transforms=transforms)

    def _write_model_files(self) -> None:
        """plans.json and dataset.json beside the folds, as nnU-Net does: the run folder alone predicts."""
        base = Path(self.output_folder_base)
        for name, obj in (("plans.json", self.plans_manager.plans), ("dataset.json", self.dataset_json)):
            atomic_write(base / name, lambda tmp, obj=obj: Path(tmp).write_text(json.dumps(obj, indent=1)))

    # -- randomness and whole cases ---------------------------------------------------------------------
    def seed_part(self, epoch: int, part: int) -> np.random.Generator:
        """Seed numpy, torch and the noise generator for one part of one epoch; returns a numpy RNG."""
        state = np.random.SeedSequence([self.seed, epoch, part, self.local_rank]).generate_state(2)
        np.random.seed(int(state[0]))
        torch.manual_seed(int(state[1]))
        self.noise_generator = torch.Generator().manual_seed(int(state[1]))
        return np.random.default_rng(int(state[0]))

    def load_case(self, case_id: str):
        """A whole preprocessed case of this configuration (with the method's target channel)."""
        return load_whole_case(Path(self.preprocessed_dataset_folder), case_id, self.upper_loop_target)

    # -- the loop ----------------------------------------------------------------------------------------
    def run_training(self):
        """Epochs from ``current_epoch`` (0, or where ``--c`` resumed): the hooks, a log line, checkpoints."""
        self.on_train_start()
        bar = tqdm(total=self.num_epochs, initial=self.current_epoch, desc="outer epochs", disable=self.local_rank != 0)
        for epoch in range(self.current_epoch, self.num_epochs):
            t0 = time.perf_counter()
            lower = self.run_lower_loop(epoch)
            t1 = time.perf_counter()
            upper = self.run_upper_loop(epoch)
            t2 = time.perf_counter()
            val = self.run_validation()
            t3 = time.perf_counter()
            prog.append(self.progress, epoch=epoch, **lower, **upper, **val, time_lower=t1 - t0, time_upper=t2 - t1,
                        time_val=t3 - t2)
            self.print_to_log_file(f"epoch {epoch}: {self.epoch_summary(lower, upper, val)} | "
                                   f"{t1 - t0:.1f}+{t2 - t1:.1f}+{t3 - t2:.1f} s")
            self.current_epoch = epoch + 1
            score = self.checkpoint_score(val)
            if not math.isnan(score) and score > self.best_pseudo_dice:
                self.best_pseudo_dice = score
                self.save_checkpoint(os.path.join(self.output_folder, "checkpoint_best.pth"))
            self.save_checkpoint(os.path.join(self.output_folder, "checkpoint_latest.pth"))
            if self.local_rank == 0:
                prog.write(self.progress, Path(self.output_folder))
            bar.update(1)
        bar.close()
        self.save_checkpoint(os.path.join(self.output_folder, "checkpoint_final.pth"))
        if self.local_rank == 0 and os.path.isfile(os.path.join(self.output_folder, "checkpoint_latest.pth")):
            os.remove(os.path.join(self.output_folder, "checkpoint_latest.pth"))
        self.print_to_log_file("Training done.")

    # -- checkpoints -------------------------------------------------------------------------------------
    def base_checkpoint(self) -> dict:
        """What every trainer's checkpoint holds: the main network, its optimizer, the schedule
        (``best_pseudo_dice``: the best :meth:`checkpoint_score` so far, under its historical name)."""
        return {
            "network_weights": unwrap(self.network).state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "current_epoch": int(self.current_epoch),
            "progress": self.progress,
            "best_pseudo_dice": float(self.best_pseudo_dice),
            "init_args": {"configuration": self.configuration_name, "fold": str(self.fold),
                          "dataset_name": self.plans_manager.dataset_name, "plans_name": self.plans_manager.plans_name},
            "trainer_name": type(self).__name__,
            "upper_loop_target": self.upper_loop_target,
            "num_epochs": int(self.num_epochs),
            "num_iterations_per_epoch": int(self.num_iterations_per_epoch),
            "inference_allowed_mirroring_axes": list(self.inference_allowed_mirroring_axes or []),
            "blogrr_version": __version__,
            # fp16 loss scale on CUDA (nnU-Net saves it too): a resumed run continues with the same scale
            **({"grad_scaler_state": self.grad_scaler.state_dict()} if self.grad_scaler is not None else {}),
        }

    def checkpoint_dict(self) -> dict:
        """Everything needed to resume or predict, as tensors, numbers and strings only."""
        return {**self.base_checkpoint(), **self.checkpoint_extras()}

    def save_checkpoint(self, filename: str) -> None:
        if self.local_rank == 0 and not self.disable_checkpointing:
            save_checkpoint(self.checkpoint_dict(), filename)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        """Restore a checkpoint (a path or a loaded dict): :meth:`base_checkpoint`'s part, then the method's."""
        if not self.was_initialized:
            self.initialize()
        ckpt = (load_checkpoint(filename_or_checkpoint, self.device) if isinstance(filename_or_checkpoint, (str, Path))
                else filename_or_checkpoint)
        unwrap(self.network).load_state_dict(ckpt["network_weights"])
        self.optimizer.load_state_dict(ckpt["optimizer_state"])
        self.current_epoch = int(ckpt["current_epoch"])
        self.progress = {k: list(v) for k, v in ckpt["progress"].items()}
        for k in prog.KEYS:  # checkpoints of older versions lack newer keys
            self.progress.setdefault(k, [math.nan] * len(self.progress.get("epoch", [])))
        self.best_pseudo_dice = float(ckpt["best_pseudo_dice"])
        if self.grad_scaler is not None and ckpt.get("grad_scaler_state"):
            self.grad_scaler.load_state_dict(ckpt["grad_scaler_state"])
        self.load_checkpoint_extras(ckpt)
