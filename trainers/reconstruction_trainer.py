"""ReconstructionTrainer: a reconstruction network R trained on healthy patches, and the DAE baseline.

Every epoch (:class:`~blogrr_nnu.trainers.base_trainer.BaseTrainer` runs the loop):

- **lower loop**: healthy patches from nnU-Net's data loader, coarse noise inside the brain, loss
  ``MSE(R(x + noise), x)`` inside the brain; a subclass adds a term (:attr:`use_error_tolerance`, BLOGRR's
  error tolerance at the taus :meth:`lower_loop_taus` / :meth:`batch_tau` give);
- **upper loop**: on normative maps (:attr:`normative`, ``blogrr_train --maps``), the mean map of the healthy training cases is brought up
  to date first (:meth:`update_normative`) and every map the method uses from then on has it subtracted
  (:mod:`blogrr_nnu.normative`); without it the reconstruction trainer has no upper loop;
- **validation** on the held-out fold: healthy reconstruction error and, when the method gives a
  threshold (:meth:`case_prediction`), the fraction of brain flagged and Dice against the pseudo-label and
  against ground truth where it exists (reported, never used).

:class:`DAETrainer` is exactly this: the denoising autoencoder with coarse noise, MSE alone, no threshold
(thresholds are chosen afterwards, see ``blogrr_benchmark``). :class:`~blogrr_nnu.trainers.blogrr_trainer.BlogrrTrainer`
adds the threshold network, the upper loop and the error-tolerance term.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from blogrr_nnu import amp
from blogrr_nnu import anomaly as A
from blogrr_nnu.cases import case_anomaly_map
from blogrr_nnu.metrics import dice as mask_dice
from blogrr_nnu.networks import build_reconstruction_network
from blogrr_nnu.normative import NormativeDataset, NormativeMaps
from blogrr_nnu.trainers.base_trainer import BaseTrainer, unwrap
from blogrr_nnu.trainers.upper_loop import broadcast_array, round_robin


class ReconstructionTrainer(BaseTrainer):
    """R trained on healthy patches with coarse noise (module docstring).

    Attributes:
        normative: every anomaly map has the healthy training cases' mean map subtracted (``blogrr_train --maps normative``; BLOGRR's default).
    """

    use_error_tolerance = False
    normative = False

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.normative_maps = NormativeMaps()  # normative maps: the healthy mean map (restored by --c)

    def build_networks(self, n_channels: int) -> None:
        self.network = build_reconstruction_network(self.configuration_manager.configuration, n_channels).to(self.device)
        self.optimizer = torch.optim.Adam(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay,
                                          amsgrad=True)

    def patch_keys(self, folder: Path) -> list[str]:
        if not self.keys["healthy_train"]:
            raise ValueError(f"{folder}: no healthy training case in fold {self.fold}; the lower loop needs healthy scans")
        return self.keys["healthy_train"]

    def load_training_cases(self, folder: Path) -> None:
        self.tumor_train = []  # R trains on healthy patches only

    def patch_dataset(self, folder: Path, keys: list[str]):
        """nnU-Net's dataset; with a normative error tolerance, one that adds the mean map on each case's crop as one
        more image channel (:class:`~blogrr_nnu.normative.NormativeDataset`), so that each patch carries its
        normative values through the loader's crop and spatial augmentation."""
        if self.normative and self.use_error_tolerance:
            return NormativeDataset(folder, keys, self.normative_maps.stored)
        return super().patch_dataset(folder, keys)

    def plain_anomaly(self, case):
        """``(reconstruction (C, *S), anomaly map (1, *S))`` of a whole case with the current R, no mean subtracted."""
        return case_anomaly_map(unwrap(self.network), case, self.configuration_manager.patch_size, self.blogrr,
                                self.device, self.tile_step_size, strides=self.strides)

    def anomaly(self, case):
        """``(reconstruction (C, *S), anomaly map (1, *S))`` of a whole case with the current R: the map every part
        of the method uses (minus the normative mean in use on normative maps)."""
        rec, amap = self.plain_anomaly(case)
        return rec, (self.normative_maps.subtract(case, amap) if self.normative else amap)

    def healthy_anomaly(self, case) -> torch.Tensor:
        """The map of a healthy training case in the per-epoch healthy pass; on normative maps its plain map is
        recorded for the next epoch's mean (:class:`~blogrr_nnu.normative.NormativeMaps`) and the mean in use
        subtracted."""
        _, plain = self.plain_anomaly(case)
        if not self.normative:
            return plain
        self.normative_maps.record(case, plain)
        return self.normative_maps.subtract(case, plain)

    # -- the normative mean --------------------------------------------------------------------------
    def update_normative(self, epoch: int) -> bool:
        """Before an upper loop: the mean in use := the recency-weighted mean of the healthy maps recorded so far (the
        previous epochs' healthy passes; the first time, one pass over every healthy training case), the same on every
        DDP rank; then the recorded maps age by one epoch. Returns whether it made the first pass."""
        if not self.normative:
            return False
        nm = self.normative_maps
        first = nm.sum is None
        if first:
            unwrap(self.network).eval()
            with torch.no_grad():
                for k in self.keys["healthy_train"]:
                    case = self.load_case(k)
                    nm.record(case, self.plain_anomaly(case)[1])
        nm.sum = broadcast_array(nm.sum, self.device)
        nm.weight = broadcast_array(nm.weight, self.device)
        nm.update_mean()
        nm.decay()
        return first

    def record_healthy_share(self, epoch: int) -> None:
        """Normative maps without the threshold network's healthy pass (the DAE, per-slice taus): record this epoch's
        share of the healthy training cases' maps (:func:`~blogrr_nnu.trainers.upper_loop.round_robin`)."""
        unwrap(self.network).eval()
        with torch.no_grad():
            for k in round_robin(self.keys["healthy_train"], epoch):
                self.healthy_anomaly(self.load_case(k))

    def run_upper_loop(self, epoch: int) -> dict:
        """The DAE: on normative maps the mean in use, then this epoch's share of the healthy training cases' maps
        (for the next epoch's mean; none after the first pass); else nothing."""
        if self.normative and not self.update_normative(epoch):
            self.record_healthy_share(epoch)
        return {}

    # -- lower loop ----------------------------------------------------------------------------------
    def lower_loop_taus(self, epoch: int) -> dict[str, float] | None:
        """Per-case taus of the healthy training cases for this lower loop (None: no tau, every error counts)."""
        return None

    def batch_tau(self, keys, x: torch.Tensor, amap: torch.Tensor, taus: dict | None) -> torch.Tensor | None:
        """tau of one batch for the error-tolerance term: ``(B,)``, ``(B*Z,)`` per slice, or None."""
        return None

    def run_lower_loop(self, epoch: int) -> dict:
        """One lower loop: R on healthy patches (MSE, plus the error tolerance at :meth:`batch_tau` where the
        method uses it); mean losses."""
        taus = self.lower_loop_taus(epoch)
        self.seed_part(epoch, 0)
        net = self.network
        net.train()
        b = self.blogrr
        sig, rad, noise_plan = list(b.anomaly_sigma_voxels), list(b.anomaly_kernel_radius_voxels), b.coarse_noise
        totals = {"lower_loss": 0.0, "lower_mse": 0.0, "lower_tolerance": 0.0}
        n_ch = len(self.dataset_json["channel_names"])
        for _ in range(self.num_iterations_per_epoch):
            batch = self.dataloader_train.generate_train_batch()
            seg = batch["target"]
            brain = (seg[:, 0:1] > 0).to(self.device)
            data = batch["data"].to(self.device)
            x, mean = data[:, :n_ch] * brain, data[:, n_ch:]  # mean: the normative map's patch (NormativeDataset)
            noise = A.coarse_noise(x.shape, noise_plan.grid, noise_plan.std_per_channel, roll=noise_plan.roll,
                                   generator=self.noise_generator, device=self.device)
            with amp.autocast(self.device):  # fp16 on CUDA as nnU-Net; the losses below are taken in fp32
                rec = net(x + noise * brain)
            rec = rec.float()
            mse = A.masked_mse(rec, x, brain)
            amap = A.anomaly_map(x, rec, brain, sig, rad)
            if mean.shape[1]:  # normative: the tolerance compares map minus mean with the case's tau, as T does
                amap = amap - mean * brain
            tol = A.error_tolerance_term(amap, self.batch_tau(batch["keys"], x, amap, taus))
            loss = mse + (b.error_tolerance_weight * tol if self.use_error_tolerance else 0.0)
            amp.backward_step(loss, self.optimizer, net.parameters(), self.grad_scaler, max_norm=12)
            for k, v in (("lower_loss", loss), ("lower_mse", mse), ("lower_tolerance", tol)):
                totals[k] += float(v.detach()) / self.num_iterations_per_epoch
        return totals

    # -- checkpoints ---------------------------------------------------------------------------------
    def checkpoint_extras(self) -> dict:
        """On normative maps: the flag, the mean in use (``normative_map``, template grid, float32; prediction
        subtracts it) and the sums a resumed run continues from."""
        return {"normative": True, **self.normative_maps.state()} if self.normative else {}

    def load_checkpoint_extras(self, ckpt: dict) -> None:
        """Restore the normative state.

        Raises:
            ValueError: the checkpoint and this run differ in their maps (normative or plain).
        """
        if bool(ckpt.get("normative", False)) != self.normative:
            have, want = (("normative" if f else "plain") for f in (ckpt.get("normative", False), self.normative))
            raise ValueError(f"{self.output_folder}: the checkpoint was trained on {have} maps, this run is on {want} "
                             "maps (blogrr_train --maps); train into a new results folder (or remove this fold) instead "
                             "of resuming")
        if self.normative:
            self.normative_maps.load_state(ckpt)

    # -- validation ----------------------------------------------------------------------------------
    def case_prediction(self, case, amap: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(mask, tau)`` of a validation case, or ``(None, None)`` when the method has no threshold (yet)."""
        return None, None

    def validate_tau(self, case, amap: torch.Tensor, tau: torch.Tensor) -> float | None:
        """A tumour validation case's tau error (log units) against its own target, or None."""
        return None

    @torch.no_grad()
    def run_validation(self) -> dict:
        """Metrics on the held-out fold at full resolution (see the module docstring)."""
        unwrap(self.network).eval()
        out = {"val_healthy_mse": [], "val_healthy_flagged": [], "val_pseudo_dice": [], "val_gt_dice": [],
               "val_tau_error": []}
        for case in self.healthy_val + self.tumor_val:
            rec, amap = self.anomaly(case)
            brain = case.brain
            pred, tau = self.case_prediction(case, amap)
            if case.props["role"] == "healthy":
                out["val_healthy_mse"].append(float(A.masked_mse(rec[None], case.data[None], brain[None])))
                if pred is not None:
                    out["val_healthy_flagged"].append(float(pred.sum() / brain.sum().clamp_min(1)))
            elif pred is not None:
                if case.target.any():
                    out["val_pseudo_dice"].append(mask_dice(pred, case.target > 0))
                if case.label is not None:
                    out["val_gt_dice"].append(mask_dice(pred, case.label))
                err = self.validate_tau(case, amap, tau)
                if err is not None:
                    out["val_tau_error"].append(err)
        res = {k: float(np.mean(v)) if v else math.nan for k, v in out.items() if k != "val_tau_error"}
        res["val_tau_error"] = float(np.median(out["val_tau_error"])) if out["val_tau_error"] else math.nan
        return res

    def epoch_summary(self, lower: dict, upper: dict, val: dict) -> str:
        slope = upper.get("tau_slope")  # a linear one-feature T (the contrast T): its slope on log input
        slope = f" slope {slope:.2f}" if slope is not None else ""
        return (f"lower {lower['lower_loss']:.4f} (mse {lower['lower_mse']:.4f}) | upper "
                f"{upper.get('upper_loss', math.nan):.4f} tau {upper.get('tau_mean', math.nan):.3f}{slope} | "
                f"val pseudo Dice {val['val_pseudo_dice']:.3f} GT Dice {val['val_gt_dice']:.3f} healthy flagged "
                f"{val['val_healthy_flagged']:.4f}")


class DAETrainer(ReconstructionTrainer):
    """Baseline DAE (coarse noise): the reconstruction network, noise and schedule of BLOGRR, trained with the
    MSE alone; no threshold network (thresholds are chosen afterwards, see blogrr_benchmark)."""
