"""BlogrrTrainer: the reconstruction trainer plus a threshold network and BLOGRR's bi-level loop.

Every outer epoch (:class:`~blogrr_nnu.trainers.base_trainer.BaseTrainer` runs the loop):

1. **lower loop** (R updated, T frozen; :class:`~blogrr_nnu.trainers.reconstruction_trainer.ReconstructionTrainer`):
   healthy patches, coarse noise inside the brain, loss = MSE(R(x + noise), x) + w * error-tolerance(A, tau).
   tau is T's per healthy case (refreshed at the end of each upper loop,
   :func:`~blogrr_nnu.trainers.upper_loop.refresh_healthy_taus`) or per slice (2D reference model, on the fly);
   in the first epoch there is no tau yet, which is the reference's "tau = minus infinity" (every error counts).
2. **upper loop** (T updated, R frozen; :mod:`blogrr_nnu.trainers.upper_loop`): the anomaly map of every
   tumour training case is computed once with the frozen R; a map T (the default contrast T, or the quantile
   ``stats`` T) is fitted to each case's target threshold read off its pseudo-label (the report's stated size by
   default), the reference T by soft Dice against the pseudo-label.
3. **validation** on the held-out fold: as the reconstruction trainer's, with T's tau of each case; the best
   checkpoint is chosen by T's distance from the validation cases' own targets (map T) or Dice against the
   pseudo-label (reference T), never by ground truth.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from blogrr_nnu import anomaly as A
from blogrr_nnu.networks import MAP_THRESHOLD_MODELS, THRESHOLD_MODELS, build_threshold_network
from blogrr_nnu.threshold_modes import ThresholdMode
from blogrr_nnu.trainers.base_trainer import unwrap
from blogrr_nnu.trainers.reconstruction_trainer import ReconstructionTrainer
from blogrr_nnu.trainers.upper_loop import UPPER_LOOPS, refresh_healthy_taus

THRESHOLD_INPUTS = ("image", "image+anomaly")


class BlogrrTrainer(ReconstructionTrainer):
    """Reconstruction network R + threshold network T, trained by BLOGRR's alternating loops.

    Class attributes choose the variant (``blogrr_train`` options make subclasses, :func:`~blogrr_nnu.trainers.api.variant_class`):

    Attributes:
        threshold_model: ``"contrast"`` (default: T sees the case's half-contrast threshold on its anomaly map and
            is fitted to per-case target thresholds), ``"stats"`` (the same with three quantiles of the map) or
            ``"reference"`` (the reference's CNN on the image, soft Dice).
        threshold_input: reference model: ``"image+anomaly"`` (T sees the image and R's anomaly map) or ``"image"``.
        upper_loop_target: seg channel used as pseudo-label P (``"pseudo_report"``).
        threshold_per_case_2d: 2D configurations: one tau per case (T's per-slice outputs averaged over the
            brain slices, trained against the whole case) instead of one per slice (the reference).
    """

    threshold_model = "contrast"
    threshold_input = "image+anomaly"
    threshold_per_case_2d = False
    use_error_tolerance = True

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.threshold_model not in THRESHOLD_MODELS:
            raise ValueError(f"threshold_model must be one of {', '.join(THRESHOLD_MODELS)}, got {self.threshold_model!r}")
        self.threshold_mode = ThresholdMode.create(self.threshold_model, self.dim, self.blogrr,
                                                   threshold_input=self.threshold_input,
                                                   per_case_2d=self.threshold_per_case_2d)
        self.t_slices, self.per_slice = self.threshold_mode.t_slices, self.threshold_mode.per_slice
        self.upper_loop = UPPER_LOOPS[self.threshold_model](self)
        self.num_upper_iterations_per_epoch = self.upper_loop.default_iterations[0 if self.cpu_schedule else 1]
        self.upper_batch_size = 4 if self.dim == 3 else 32
        self.threshold_lr_factor = 0.1  # reference: T at 0.1x R's learning rate
        self.threshold_network = self.threshold_optimizer = None
        self.tau_initialised = False
        self.healthy_taus: dict[str, float] = {}  # T's tau of healthy training cases (lower loop)

    # -- set-up ------------------------------------------------------------------------------------
    def build_networks(self, n_channels: int) -> None:
        super().build_networks(n_channels)
        self.threshold_network = build_threshold_network(self.blogrr, n_channels, self.dim, self.threshold_input,
                                                         self.threshold_model).to(self.device)
        self.threshold_optimizer = self.upper_loop.optimizer(self.threshold_network)

    def wrap_ddp(self, device_ids) -> None:
        super().wrap_ddp(device_ids)
        if self.threshold_model == "reference":  # a map T's fit is full-batch: every rank computes the same step
            self.threshold_network = DDP(self.threshold_network, device_ids=device_ids)

    def patch_keys(self, folder: Path) -> list[str]:
        keys = super().patch_keys(folder)
        if not self.keys["tumor_train"]:
            raise ValueError(f"{folder}: no tumour training case with a report in fold {self.fold}")
        return keys

    def load_training_cases(self, folder: Path) -> None:
        """The tumour training cases the upper loop fits T on (with their pseudo-label as the target)."""
        self.tumor_train = [self.load_case(k) for k in self.keys["tumor_train"]]
        if self.threshold_model in MAP_THRESHOLD_MODELS:
            self.upper_loop.check_targets(self.tumor_train)

    def case_tau(self, case, amap) -> torch.Tensor:
        """tau of a whole case: ``(1,)`` (3D, 2D per case) or ``(Z,)`` per slice (2D), on the CPU."""
        t = unwrap(self.threshold_network)
        was = t.training
        t.eval()
        tau = self.threshold_mode.case_tau(t, case.data, case.brain, amap, self.device)
        t.train(was)
        return tau

    # -- lower loop: the error tolerance at T's taus --------------------------------------------------------
    def lower_loop_taus(self, epoch: int) -> dict[str, float] | None:
        if self.tau_initialised and not self.per_slice and not self.healthy_taus:  # resumed without them
            refresh_healthy_taus(self, epoch)
        return self.healthy_taus if self.tau_initialised and not self.per_slice else None

    def batch_tau(self, keys, x, amap, taus):
        if taus is not None:
            return torch.tensor([taus[k] for k in keys], device=self.device)
        if self.per_slice and self.tau_initialised:
            with torch.no_grad():
                inp = torch.cat([x, amap.detach()], 1) if self.threshold_input == "image+anomaly" else x
                return unwrap(self.threshold_network)(A.resize(inp, list(self.blogrr.threshold_net.input_size)))
        return None

    # -- upper loop ----------------------------------------------------------------------------------
    def run_upper_loop(self, epoch: int) -> dict:
        """One upper loop (T trained, R frozen; :mod:`blogrr_nnu.trainers.upper_loop`) on the maps minus the mean in
        use (normative maps: :meth:`update_normative` first), then the healthy taus (whose pass records the healthy
        maps for the next epoch's mean)."""
        self.update_normative(epoch)
        out = self.upper_loop.run(epoch)
        if not self.per_slice:
            refresh_healthy_taus(self, epoch)
        elif self.normative:  # per-slice taus need no healthy pass; the mean still does
            self.record_healthy_share(epoch)
        return out

    # -- validation ----------------------------------------------------------------------------------
    def case_prediction(self, case, amap):
        if not self.tau_initialised:
            return None, None
        tau = self.case_tau(case, amap)
        return (amap > self.threshold_mode.shaped(tau)) & case.brain, tau

    def validate_tau(self, case, amap, tau):
        if self.threshold_model not in MAP_THRESHOLD_MODELS:
            return None
        t_p = self.upper_loop.case_target(case, amap)
        return None if t_p is None else abs(math.log(float(tau[0]) / t_p))

    def checkpoint_score(self, val: dict) -> float:
        """For a map T the median log distance of T's tau from the validation cases' own targets (negated),
        else Dice against the pseudo-label (never a ground-truth number)."""
        if self.threshold_model in MAP_THRESHOLD_MODELS:
            return -val["val_tau_error"]
        return val["val_pseudo_dice"]

    # -- checkpoints -----------------------------------------------------------------------------------
    def checkpoint_extras(self) -> dict:
        return {
            **super().checkpoint_extras(),
            "threshold_weights": unwrap(self.threshold_network).state_dict(),
            "threshold_optimizer_state": self.threshold_optimizer.state_dict(),
            "tau_initialised": bool(self.tau_initialised),
            "threshold_input": self.threshold_input,
            "threshold_per_case": bool(not self.per_slice),
            "threshold_model": self.threshold_model,
            "healthy_taus": {k: float(v) for k, v in self.healthy_taus.items()},
        }

    def load_checkpoint_extras(self, ckpt: dict) -> None:
        super().load_checkpoint_extras(ckpt)
        model = ckpt.get("threshold_model", "reference")  # checkpoints before the stats model
        seen = ckpt.get("threshold_input", "image+anomaly")
        if model != self.threshold_model or (model == "reference" and seen != self.threshold_input):
            raise ValueError(f"{self.output_folder}: the checkpoint's threshold network is {model!r} ({seen}), this run "
                             f"trains {self.threshold_model!r} ({self.threshold_input}); train into a new results folder "
                             "(or remove this fold) instead of resuming")
        unwrap(self.threshold_network).load_state_dict(ckpt["threshold_weights"])
        self.healthy_taus = {str(k): float(v) for k, v in (ckpt.get("healthy_taus") or {}).items()}
        self.threshold_optimizer.load_state_dict(ckpt["threshold_optimizer_state"])
        self.tau_initialised = bool(ckpt["tau_initialised"])
