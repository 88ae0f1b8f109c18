"""BlogrrTrainer: nnU-Net's trainer with a threshold network and BLOGRR's bi-level loop.

Every outer epoch:

1. **lower loop** (R updated, T frozen): healthy patches from nnU-Net's data loader, coarse noise
   inside the brain, loss = MSE(R(x + noise), x) + w * error-tolerance(A, tau). tau is T's per healthy
   case (refreshed at the end of each upper loop, :func:`~blogrr_nnu.trainers.upper_loop.refresh_healthy_taus`)
   or per slice (2D reference model, on the fly); in the first epoch there is no tau yet, which is the
   reference's "tau = minus infinity" (every error counts).
2. **upper loop** (T updated, R frozen; :mod:`blogrr_nnu.trainers.upper_loop`): the anomaly map of every
   tumour training case is computed once with the frozen R; the default map-statistics T is fitted to each
   case's target threshold read off its pseudo-label (the report's stated size by default), the reference
   T by soft Dice against the pseudo-label.
3. **validation** on the held-out fold: healthy reconstruction error and fraction of brain flagged,
   Dice against the pseudo-label (chooses the best checkpoint) and against ground truth where it
   exists (reported, never used).

All randomness of an epoch is seeded from (seed, epoch, part, rank), and a checkpoint is written at
the end of every epoch, so a run killed mid-epoch and resumed with ``--c`` continues exactly as an
uninterrupted run would.
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
from torch import distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from blogrr_nnu import __version__, amp
from blogrr_nnu import anomaly as A
from blogrr_nnu.image_io import atomic_write
from blogrr_nnu.networks import THRESHOLD_MODELS, build_reconstruction_network, build_threshold_network
from blogrr_nnu.paths import environment, preprocessed_root, results_root
from blogrr_nnu.threshold_modes import ThresholdMode
from blogrr_nnu.trainers import progress as prog
from blogrr_nnu.cases import case_anomaly_map, load_whole_case
from blogrr_nnu.checkpoint import load_checkpoint, save_checkpoint
from blogrr_nnu.splits import case_roles, fold_keys, load_or_create_splits
from blogrr_nnu.trainers.upper_loop import UPPER_LOOPS, refresh_healthy_taus, unwrap
from blogrr_nnu.metrics import dice as mask_dice

THRESHOLD_INPUTS = ("image", "image+anomaly")


def nnunet_paths():
    """Point nnU-Net's path variables at blogrr's resolved folders while nnU-Net code reads them."""
    return environment(nnUNet_preprocessed=str(preprocessed_root()), nnUNet_results=str(results_root()))


def default_schedule(blogrr: dict) -> tuple[int, int]:
    """(outer epochs, lower-loop iterations per epoch) for a configuration's ``blogrr`` plans block.

    Outer epochs as the reference (100) on GPU; on CPU a schedule that fits in minutes.
    """
    return (12, 30) if blogrr["device_class"] == "cpu" else (100, 250)


_unwrap = unwrap


class BlogrrTrainer(nnUNetTrainer):
    """Reconstruction network R + threshold network T, trained by BLOGRR's alternating loops.

    Constructed like nnU-Net's trainer: ``BlogrrTrainer(plans, configuration, fold, dataset_json, device)``
    with our plans (``blogrr_plans.json``); folders come from ``BLOGRR_preprocessed`` /
    ``BLOGRR_results`` (see :mod:`blogrr_nnu.paths`). Class attributes choose the variant:

    Attributes:
        threshold_model: ``"stats"`` (default: T sees the anomaly map's quantiles and is fitted to per-case
            target thresholds) or ``"reference"`` (the reference's CNN on the image, soft Dice).
        threshold_input: reference model: ``"image+anomaly"`` (T sees the image and R's anomaly map) or ``"image"``.
        upper_loop_target: seg channel used as pseudo-label P (``"pseudo_report"``).
        threshold_per_case_2d: 2D configurations: one tau per case (T's per-slice outputs averaged over the
            brain slices, trained against the whole case) instead of one per slice (the reference).
        train_threshold: False gives the DAE-only baseline (see :class:`DAETrainer`).
    """

    threshold_model = "stats"
    threshold_input = "image+anomaly"
    upper_loop_target = "pseudo_report"
    threshold_per_case_2d = False
    train_threshold = True
    use_error_tolerance = True
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
        self.blogrr = self.configuration_manager.configuration["blogrr"]
        self.strides = self.configuration_manager.configuration["architecture"]["arch_kwargs"]["strides"]
        self.dim = len(self.configuration_manager.patch_size)
        if self.threshold_model not in THRESHOLD_MODELS:
            raise ValueError(f"threshold_model must be one of {', '.join(THRESHOLD_MODELS)}, got {self.threshold_model!r}")
        self.threshold_mode = ThresholdMode.create(self.threshold_model, self.dim, self.blogrr,
                                                   threshold_input=self.threshold_input,
                                                   per_case_2d=self.threshold_per_case_2d)
        self.t_slices, self.per_slice = self.threshold_mode.t_slices, self.threshold_mode.per_slice
        self.upper_loop = UPPER_LOOPS[self.threshold_model](self)
        cpu = self.blogrr["device_class"] == "cpu"
        self.num_epochs, self.num_iterations_per_epoch = default_schedule(self.blogrr)
        self.num_upper_iterations_per_epoch = self.upper_loop.default_iterations[0 if cpu else 1]
        self.upper_batch_size = 4 if self.dim == 3 else 32
        # Reference: Adam (amsgrad), lr 1e-4, weight decay 1e-5, T at 0.1x. On CPU there are ~20x fewer
        # steps, so R starts 10x higher (measured: at 1e-4 R still copies noise after 300 steps).
        self.initial_lr = 1e-3 if cpu else 1e-4
        self.threshold_lr_factor = 0.1
        self.weight_decay = 1e-5
        self.enable_deep_supervision = False
        self.tile_step_size = 0.5
        self.threshold_network = self.threshold_optimizer = None
        self.progress = prog.new_progress()
        self.best_pseudo_dice = -math.inf
        self.tau_initialised = False
        self.healthy_taus: dict[str, float] = {}  # T's tau of healthy training cases (lower loop)
        self.keys: dict[str, list[str]] = {}
        self.save_every = 1

    # -- set-up ------------------------------------------------------------------------------------
    def initialize(self):
        if self.was_initialized:
            raise RuntimeError("initialize() was called twice")
        self._set_batch_size_and_oversample()
        n_ch = len(self.dataset_json["channel_names"])
        self.num_input_channels = n_ch
        torch.manual_seed(self.seed)  # same initial weights on every rank and every run
        self.network = build_reconstruction_network(self.configuration_manager.configuration, n_ch).to(self.device)
        self.threshold_network = build_threshold_network(self.blogrr, n_ch, self.dim, self.threshold_input,
                                                         self.threshold_model).to(self.device)
        self.optimizer = torch.optim.Adam(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay,
                                          amsgrad=True)
        self.threshold_optimizer = self.upper_loop.optimizer(self.threshold_network)
        self.lr_scheduler = None  # constant learning rates, as the reference
        if self.is_ddp:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # Without deep supervision the U-Net's decoder keeps segmentation heads it never uses; DDP
            # must be told, or it silently skips the gradient bucket that holds them (measured: ranks
            # diverged after one step).
            self.network = DDP(self.network, device_ids=ids, find_unused_parameters=True)
            if self.threshold_model == "reference":  # the stats fit is full-batch: every rank computes the same step
                self.threshold_network = DDP(self.threshold_network, device_ids=ids)
        self.dataset_class = nnUNetDatasetBlosc2
        self.inference_allowed_mirroring_axes = (1,) if self.dim == 3 else (0,)  # left-right only
        self.was_initialized = True

    def _augmentation(self):
        """Spatial augmentation only (docs/training.md): small rotations and scalings, left-right mirroring.

        No intensity transforms: R learns what healthy tissue looks like, and brightness/contrast/gamma
        changes would teach it to reconstruct abnormal intensities too. No nnU-Net masking transform:
        noise and loss are restricted to the brain explicitly.
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
        folder = self._load_fold_keys()
        if not self.keys["healthy_train"]:
            raise ValueError(f"{folder}: no healthy training case in fold {self.fold}; the lower loop needs healthy scans")
        if self.train_threshold and not self.keys["tumor_train"]:
            raise ValueError(f"{folder}: no tumour training case with a report in fold {self.fold}")
        self.dataloader_train = self._patch_loader(folder, self.keys["healthy_train"])
        self.tumor_train = [load_whole_case(folder, k, self.upper_loop_target) for k in self.keys["tumor_train"]]
        if self.train_threshold and self.threshold_model == "stats":
            self.upper_loop.check_targets(self.tumor_train)
        self._prepare_run(folder)

    def _load_fold_keys(self) -> Path:
        """Initialise if needed, read (or write) the splits and set ``self.keys``; returns the data folder."""
        if not self.was_initialized:
            self.initialize()
        folder = Path(self.preprocessed_dataset_folder)
        self.keys = fold_keys(load_or_create_splits(Path(self.preprocessed_dataset_folder_base), folder), self.fold,
                              case_roles(folder))
        return folder

    def _patch_loader(self, folder: Path, keys: list[str]) -> nnUNetDataLoader:
        """nnU-Net's loader of random patches of ``keys`` with our augmentation."""
        initial, transforms = self._augmentation()
        return nnUNetDataLoader(nnUNetDatasetBlosc2(str(folder), keys), self.batch_size, initial,
                                self.configuration_manager.patch_size, self.label_manager,
                                oversample_foreground_percent=0.0, transforms=transforms)

    def _prepare_run(self, folder: Path) -> None:
        """Validation cases in memory, the run folder with plans.json / dataset.json."""
        self.tumor_val = [load_whole_case(folder, k, self.upper_loop_target) for k in self.keys["tumor_val"]]
        self.healthy_val = [load_whole_case(folder, k, self.upper_loop_target) for k in self.keys["healthy_val"]]
        Path(self.output_folder).mkdir(parents=True, exist_ok=True)
        if self.local_rank == 0:
            self._write_model_files()

    def _write_model_files(self) -> None:
        """plans.json and dataset.json beside the folds, as nnU-Net does: the run folder alone predicts."""
        base = Path(self.output_folder_base)
        for name, obj in (("plans.json", self.plans_manager.plans), ("dataset.json", self.dataset_json)):
            atomic_write(base / name, lambda tmp, obj=obj: Path(tmp).write_text(json.dumps(obj, indent=1)))

    # -- randomness --------------------------------------------------------------------------------
    def seed_part(self, epoch: int, part: int) -> np.random.Generator:
        """Seed numpy, torch and the noise generator for one part of one epoch; returns a numpy RNG."""
        state = np.random.SeedSequence([self.seed, epoch, part, self.local_rank]).generate_state(2)
        np.random.seed(int(state[0]))
        torch.manual_seed(int(state[1]))
        self.noise_generator = torch.Generator().manual_seed(int(state[1]))
        return np.random.default_rng(int(state[0]))

    # -- whole cases ----------------------------------------------------------------------------------
    def load_case(self, case_id: str):
        """A whole preprocessed case of this configuration (with the upper loop's target channel)."""
        return load_whole_case(Path(self.preprocessed_dataset_folder), case_id, self.upper_loop_target)

    def anomaly(self, case):
        """``(reconstruction (C, *S), anomaly map (1, *S))`` of a whole case with the current R."""
        return case_anomaly_map(_unwrap(self.network), case, self.configuration_manager.patch_size, self.blogrr,
                                self.device, self.tile_step_size, strides=self.strides)

    def case_tau(self, case, amap) -> torch.Tensor:
        """tau of a whole case: ``(1,)`` (3D, 2D per case) or ``(Z,)`` per slice (2D), on the CPU."""
        t = _unwrap(self.threshold_network)
        was = t.training
        t.eval()
        tau = self.threshold_mode.case_tau(t, case.data, case.brain, amap, self.device)
        t.train(was)
        return tau

    # -- lower loop ----------------------------------------------------------------------------------
    def run_lower_loop(self, epoch: int) -> dict:
        """One lower loop: R on healthy patches (MSE + error tolerance at T's taus), T frozen; mean losses."""
        use_tau = self.tau_initialised and self.train_threshold
        if use_tau and not self.per_slice and not self.healthy_taus:  # resumed from a checkpoint without them
            refresh_healthy_taus(self, epoch)
        taus = self.healthy_taus if use_tau and not self.per_slice else None
        self.seed_part(epoch, 0)
        net = self.network
        net.train()
        b = self.blogrr
        sig, rad = b["anomaly_sigma_voxels"], b["anomaly_kernel_radius_voxels"]
        totals = {"lower_loss": 0.0, "lower_mse": 0.0, "lower_tolerance": 0.0}
        for _ in range(self.num_iterations_per_epoch):
            batch = self.dataloader_train.generate_train_batch()
            seg = batch["target"]
            brain = (seg[:, 0:1] > 0).to(self.device)
            x = batch["data"].to(self.device) * brain
            noise = A.coarse_noise(x.shape, b["coarse_noise"]["grid"], b["coarse_noise"]["std_per_channel"],
                                   roll=b["coarse_noise"]["roll"], generator=self.noise_generator, device=self.device)
            with amp.autocast(self.device):  # fp16 on CUDA as nnU-Net; the losses below are taken in fp32
                rec = net(x + noise * brain)
            rec = rec.float()
            mse = A.masked_mse(rec, x, brain)
            amap = A.anomaly_map(x, rec, brain, sig, rad)
            tau = None
            if taus is not None:
                tau = torch.tensor([taus[k] for k in batch["keys"]], device=self.device)
            elif self.per_slice and use_tau:
                with torch.no_grad():
                    inp = torch.cat([x, amap.detach()], 1) if self.threshold_input == "image+anomaly" else x
                    tau = _unwrap(self.threshold_network)(A.resize(inp, b["threshold_net"]["input_size"]))
            tol = A.error_tolerance_term(amap, tau)
            loss = mse + (b["error_tolerance_weight"] * tol if self.use_error_tolerance else 0.0)
            amp.backward_step(loss, self.optimizer, net.parameters(), self.grad_scaler, max_norm=12)
            for k, v in (("lower_loss", loss), ("lower_mse", mse), ("lower_tolerance", tol)):
                totals[k] += float(v.detach()) / self.num_iterations_per_epoch
        return totals

    # -- upper loop ----------------------------------------------------------------------------------
    def run_upper_loop(self, epoch: int) -> dict:
        """One upper loop (T trained, R frozen; :mod:`blogrr_nnu.trainers.upper_loop`), then the healthy taus."""
        if not self.train_threshold:
            return {}
        out = self.upper_loop.run(epoch)
        if not self.per_slice:
            refresh_healthy_taus(self, epoch)
        return out

    # -- validation ----------------------------------------------------------------------------------
    @torch.no_grad()
    def run_validation(self) -> dict:
        """Metrics on the held-out fold at full resolution (see the module docstring)."""
        _unwrap(self.network).eval()
        out = {"val_healthy_mse": [], "val_healthy_flagged": [], "val_pseudo_dice": [], "val_gt_dice": [],
               "val_tau_error": []}
        for case in self.healthy_val + self.tumor_val:
            rec, amap = self.anomaly(case)
            brain = case.brain
            pred = tau = None
            if self.train_threshold and self.tau_initialised:
                tau = self.case_tau(case, amap)
                pred = (amap > self.threshold_mode.shaped(tau)) & brain
            if case.props["role"] == "healthy":
                out["val_healthy_mse"].append(float(A.masked_mse(rec[None], case.data[None], brain[None])))
                if pred is not None:
                    out["val_healthy_flagged"].append(float(pred.sum() / brain.sum().clamp_min(1)))
            elif pred is not None:
                if case.target.any():
                    out["val_pseudo_dice"].append(mask_dice(pred, case.target > 0))
                if case.label is not None:
                    out["val_gt_dice"].append(mask_dice(pred, case.label))
                if self.threshold_model == "stats":  # how far T's tau is from the case's own target (log units)
                    t_p = self.upper_loop.case_target(case, amap)
                    if t_p is not None:
                        out["val_tau_error"].append(abs(math.log(float(tau[0]) / t_p)))
        res = {k: float(np.mean(v)) if v else math.nan for k, v in out.items() if k != "val_tau_error"}
        res["val_tau_error"] = float(np.median(out["val_tau_error"])) if out["val_tau_error"] else math.nan
        return res

    def checkpoint_score(self, val: dict) -> float:
        """What picks ``checkpoint_best`` (higher is better; never a ground-truth number): for the stats T the
        median log distance of T's tau from the validation cases' own targets (negated), else Dice against the
        pseudo-label."""
        if self.threshold_model == "stats" and self.train_threshold:
            return -val["val_tau_error"]
        return val["val_pseudo_dice"]

    # -- the loop ------------------------------------------------------------------------------------
    def run_training(self):
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

    def epoch_summary(self, lower: dict, upper: dict, val: dict) -> str:
        """One log line's worth of an epoch's numbers."""
        return (f"lower {lower['lower_loss']:.4f} (mse {lower['lower_mse']:.4f}) | upper "
                f"{upper.get('upper_loss', math.nan):.4f} tau {upper.get('tau_mean', math.nan):.3f} | val pseudo Dice "
                f"{val['val_pseudo_dice']:.3f} GT Dice {val['val_gt_dice']:.3f} healthy flagged "
                f"{val['val_healthy_flagged']:.4f}")

    # -- checkpoints -----------------------------------------------------------------------------------
    def base_checkpoint(self) -> dict:
        """What every trainer's checkpoint holds: R (or the segmentation network), its optimizer, the schedule
        (``best_pseudo_dice``: the best :meth:`checkpoint_score` so far, under its historical name)."""
        return {
            "network_weights": _unwrap(self.network).state_dict(),
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
        return {
            **self.base_checkpoint(),
            "threshold_weights": _unwrap(self.threshold_network).state_dict(),
            "threshold_optimizer_state": self.threshold_optimizer.state_dict(),
            "tau_initialised": bool(self.tau_initialised),
            "threshold_input": self.threshold_input,
            "threshold_per_case": bool(not self.per_slice),
            "threshold_model": self.threshold_model,
            "healthy_taus": {k: float(v) for k, v in self.healthy_taus.items()},
        }

    def save_checkpoint(self, filename: str) -> None:
        if self.local_rank == 0 and not self.disable_checkpointing:
            save_checkpoint(self.checkpoint_dict(), filename)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        ckpt = self.load_base_checkpoint(filename_or_checkpoint)
        model = ckpt.get("threshold_model", "reference")  # checkpoints before the stats model
        seen = ckpt.get("threshold_input", "image+anomaly")
        if model != self.threshold_model or (model == "reference" and seen != self.threshold_input):
            raise ValueError(f"{self.output_folder}: the checkpoint's threshold network is {model!r} ({seen}), this run "
                             f"trains {self.threshold_model!r} ({self.threshold_input}); train into a new results folder "
                             "(or remove this fold) instead of resuming")
        _unwrap(self.threshold_network).load_state_dict(ckpt["threshold_weights"])
        self.healthy_taus = {str(k): float(v) for k, v in (ckpt.get("healthy_taus") or {}).items()}
        self.threshold_optimizer.load_state_dict(ckpt["threshold_optimizer_state"])
        self.tau_initialised = bool(ckpt["tau_initialised"])

    def load_base_checkpoint(self, filename_or_checkpoint) -> dict:
        """Restore what :meth:`base_checkpoint` saved; returns the checkpoint for the rest."""
        if not self.was_initialized:
            self.initialize()
        ckpt = (load_checkpoint(filename_or_checkpoint, self.device) if isinstance(filename_or_checkpoint, (str, Path))
                else filename_or_checkpoint)
        _unwrap(self.network).load_state_dict(ckpt["network_weights"])
        self.optimizer.load_state_dict(ckpt["optimizer_state"])
        self.current_epoch = int(ckpt["current_epoch"])
        self.progress = {k: list(v) for k, v in ckpt["progress"].items()}
        for k in prog.KEYS:  # checkpoints of older versions lack newer keys
            self.progress.setdefault(k, [math.nan] * len(self.progress.get("epoch", [])))
        self.best_pseudo_dice = float(ckpt["best_pseudo_dice"])
        if self.grad_scaler is not None and ckpt.get("grad_scaler_state"):
            self.grad_scaler.load_state_dict(ckpt["grad_scaler_state"])
        return ckpt


class DAETrainer(BlogrrTrainer):
    """Baseline DAE (coarse noise): the same reconstruction network, noise and schedule, trained with
    the MSE alone; no threshold network (thresholds are chosen afterwards, see blogrr_benchmark)."""

    train_threshold = False
    use_error_tolerance = False


def world_info() -> tuple[int, int]:
    """(rank, world size) of the current process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
