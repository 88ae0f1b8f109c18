"""The upper loop (T updated, R frozen), one class per threshold model, and T's taus of the healthy cases.

Both read the tumour training cases of the trainer and its frozen reconstruction network R; each
upper loop first computes every case's anomaly map once with R (whole-case windows where they fit).

- :class:`StatsUpperLoop` (the map models, ``contrast`` by default and ``stats``): per case, the map's features
  (:func:`blogrr_nnu.tau.case_features`) and the target tau_P of its pseudo-label
  (:func:`blogrr_nnu.tau.target_threshold`; cases without one are left out), then a full-batch robust
  regression of log tau on the features (:func:`blogrr_nnu.tau.fit_threshold_regression`; the contrast T's slope is
  pulled towards :data:`blogrr_nnu.tau.CONTRAST_SLOPE_PRIOR` on plain maps,
  :data:`~blogrr_nnu.tau.NORMATIVE_CONTRAST_SLOPE_PRIOR` on normative ones). A linear model on
  one to three features converges in a few hundred Adam steps, which cost well under a second, so every upper loop
  fits T to the current maps rather than nudging it.
- :class:`ReferenceUpperLoop`: the reference's procedure: mini-batches of (resampled) cases or slices, loss
  1 - soft Dice of ``sigmoid(k (A - tau))`` against the pseudo-label, T's learning rate 0.1 x R's.

After either, :func:`refresh_healthy_taus` updates the taus the next lower loop uses on healthy cases
(their error-tolerance term).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import distributed as dist

from blogrr_nnu import anomaly as A
from blogrr_nnu.networks import MAP_THRESHOLD_MODELS
from blogrr_nnu.tau import case_features, fit_threshold_regression, fitted_slope, slope_prior, target_threshold
from blogrr_nnu.trainers.base_trainer import unwrap
from blogrr_nnu.threshold_modes import resize_mask, slice_mean_tau

logger = logging.getLogger(__name__)

# Each epoch refreshes the taus of this fraction of healthy training cases (round robin; all of them the first
# time): the pass costs one whole-case reconstruction per case, and one case's tau hardly moves between epochs.
HEALTHY_TAU_REFRESH_FRACTION = 0.25


def round_robin(keys: list[str], epoch: int, done=None) -> list[str]:
    """This epoch's share of ``keys`` (:data:`HEALTHY_TAU_REFRESH_FRACTION`: case ``i`` when ``i % n_groups ==
    epoch % n_groups``), plus every key not in ``done``."""
    groups = max(1, round(1 / HEALTHY_TAU_REFRESH_FRACTION))
    return [k for i, k in enumerate(keys) if (done is not None and k not in done) or i % groups == epoch % groups]


def broadcast_array(array: np.ndarray | None, device: torch.device) -> np.ndarray | None:
    """Under DDP, every rank's copy of an array := rank 0's (unchanged without a process group)."""
    if array is None or not (dist.is_available() and dist.is_initialized()):
        return array
    t = torch.from_numpy(np.ascontiguousarray(array)).to(device)
    dist.broadcast(t, src=0)
    return t.cpu().numpy()


def broadcast_module(module: torch.nn.Module) -> None:
    """Under DDP, overwrite every rank's parameters and buffers with rank 0's (no-op without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


class UpperLoop:
    """One upper loop of a :class:`~blogrr_nnu.trainers.blogrr_trainer.BlogrrTrainer` (``tr``)."""

    #: upper-loop optimiser steps per epoch (CPU, GPU configurations)
    default_iterations = (10, 50)

    def __init__(self, trainer):
        self.tr = trainer

    def optimizer(self, net: torch.nn.Module) -> torch.optim.Optimizer:
        raise NotImplementedError

    def run(self, epoch: int) -> dict:
        raise NotImplementedError

    def anomaly_maps(self) -> list[torch.Tensor]:
        """``(1, *S)`` anomaly map of every tumour training case with the frozen R."""
        unwrap(self.tr.network).eval()
        with torch.no_grad():
            return [self.tr.anomaly(case)[1] for case in self.tr.tumor_train]


class StatsUpperLoop(UpperLoop):
    """Fit a map T (``contrast`` or ``stats``) to every case's target tau_P (module docstring)."""

    default_iterations = (300, 300)
    learning_rate = 1e-2
    weight_decay = 1e-3

    @classmethod
    def make_optimizer(cls, net: torch.nn.Module) -> torch.optim.Optimizer:
        """A map T's optimiser (also used by the diagnostic's leave-one-out fits)."""
        return torch.optim.AdamW(net.parameters(), cls.learning_rate, weight_decay=cls.weight_decay)

    def optimizer(self, net):
        return self.make_optimizer(net)

    def case_target(self, case, amap: torch.Tensor) -> float | None:
        """tau_P of one case on its map ``(1, *S)`` (None: the case has no usable target)."""
        report = case.props.get("report") or {}
        t = target_threshold(amap.numpy(), case.brain.numpy(), case.target.numpy(), self.tr.upper_loop_target,
                             size_mm=report.get("size_mm"), spacing=case.props["spacing"])
        return t if t is not None and t > 0 else None

    def check_targets(self, cases) -> None:
        """Before training: with the report target, some report must state a size (else no case has a target).

        Raises:
            ValueError: no tumour training case's report states a size.
        """
        if self.tr.upper_loop_target == "pseudo_report" and not any((c.props.get("report") or {}).get("size_mm")
                                                                   for c in cases):
            raise ValueError("no report of the tumour training cases states a lesion size, which the default threshold "
                             "network's report target needs; train with --pseudo_label gmm|fused or "
                             "--threshold_model reference")

    def targets(self) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """Features ``(N, F)``, targets ``(N,)`` and case ids of the cases with a usable target."""
        feats, targets, ids = [], [], []
        for case, amap in zip(self.tr.tumor_train, self.anomaly_maps()):
            t = self.case_target(case, amap)
            if t is not None:
                feats.append(case_features(self.tr.threshold_model, amap, case.brain))
                targets.append(t)
                ids.append(case.case_id)
        if not ids:
            return torch.zeros(0, 0), torch.zeros(0), ids
        return torch.stack(feats), torch.tensor(targets, dtype=torch.float32), ids

    def run(self, epoch):
        tr = self.tr
        feats, targets, ids = self.targets()
        if not ids:  # no map could match any target this epoch: keep T as it is (it may not be fitted yet)
            what = ("no stated lesion size could be matched on the anomaly maps" if tr.upper_loop_target ==
                    "pseudo_report" else f"every {tr.upper_loop_target} pseudo-label is empty")
            logger.warning("epoch %d: %s; the threshold network is left as it was", epoch, what)
            return {"upper_cases": 0}
        tr.seed_part(epoch, 1)
        t = unwrap(tr.threshold_network)
        t.train()
        loss = fit_threshold_regression(t, tr.threshold_optimizer, feats.to(tr.device), targets.to(tr.device),
                                        tr.num_upper_iterations_per_epoch,
                                        slope_prior=slope_prior(tr.threshold_model, tr.normative))
        t.eval()
        broadcast_module(t)  # DDP: every rank keeps rank 0's fit (float sums may differ between GPUs)
        tr.tau_initialised = True
        with torch.no_grad():
            taus = t(feats.to(tr.device)).cpu()
        log_err = torch.log(taus / targets).abs()
        return {"upper_loss": loss, "tau_mean": float(taus.mean()), "upper_cases": len(ids),
                "upper_tau_error": float(log_err.median()), "tau_slope": fitted_slope(t)}


@dataclass
class CachedCase:
    """One tumour case at T's resolution (reference model): T's input, anomaly map, pseudo-label, brain."""

    inputs: torch.Tensor
    amap: torch.Tensor
    target: torch.Tensor
    brain: torch.Tensor


class ReferenceUpperLoop(UpperLoop):
    """The reference's soft-Dice upper loop (module docstring)."""

    def optimizer(self, net):
        tr = self.tr
        return torch.optim.Adam(net.parameters(), tr.initial_lr * tr.threshold_lr_factor, weight_decay=tr.weight_decay,
                                amsgrad=True)

    def cache(self) -> list[CachedCase]:
        """Every tumour case at T's resolution, computed once per upper loop."""
        tr, mode = self.tr, self.tr.threshold_mode
        size, sl = mode.input_size, mode.t_slices
        out = []
        for case, amap in zip(tr.tumor_train, self.anomaly_maps()):
            out.append(CachedCase(mode.inputs(case.data, case.brain, amap), resize_mask(amap, size, sl),
                                  resize_mask(case.target, size, sl), (resize_mask(case.brain, size, sl) > 0.5).float()))
        return out

    def initialise_tau(self, cache: list[CachedCase]) -> None:
        """Start tau where the predicted volume equals the pseudo-label's (median over cases).

        The reference starts from a random sigmoid head; a start on the right scale makes the few
        upper-loop steps of a CPU run count.
        """
        starts = []
        for c in cache:
            inside = c.amap[c.brain > 0]
            frac = float(c.target[c.brain > 0].mean()) if inside.numel() else 0.0
            if inside.numel() and 0 < frac < 1:
                starts.append(float(torch.quantile(inside.float(), 1 - frac)))
        t = unwrap(self.tr.threshold_network)
        tau0 = float(np.clip(np.median(starts) if starts else 0.05 * t.tau_max, 1e-3 * t.tau_max, 0.999 * t.tau_max))
        t.set_constant(tau0)
        self.tr.tau_initialised = True

    def run(self, epoch):
        tr, mode = self.tr, self.tr.threshold_mode
        cache = self.cache()
        if not tr.tau_initialised:
            self.initialise_tau(cache)
        rng = tr.seed_part(epoch, 1)
        t = tr.threshold_network
        t.train()
        k = tr.blogrr.sigmoid_steepness
        stack_per_case = mode.t_slices and not mode.per_slice  # 2D, one tau per case: a whole stack per case
        if mode.per_slice:  # sample slices that hold brain
            items = [(c, z) for c, entry in enumerate(cache) for z in range(entry.brain.shape[0]) if entry.brain[z].any()]
        else:
            items = [(c, None) for c in range(len(cache))]
        total, taus = 0.0, []
        batch = 4 if stack_per_case else tr.upper_batch_size
        for _ in range(tr.num_upper_iterations_per_epoch):
            sel = [items[i] for i in rng.choice(len(items), size=min(batch, len(items)), replace=False)]
            if stack_per_case:
                losses, step_taus = [], []
                for c, _ in sel:
                    e = cache[c]
                    inp, amap, target, brain = (x.to(tr.device) for x in (e.inputs, e.amap, e.target, e.brain))
                    tau_c = slice_mean_tau(t(inp), brain)
                    soft = A.soft_segmentation(amap, tau_c.expand(amap.shape[0]), k) * brain
                    losses.append(A.soft_dice_loss(soft.reshape(1, -1), target.reshape(1, -1), mask=brain.reshape(1, -1)))
                    step_taus.append(tau_c)
                loss, tau = torch.stack(losses).mean(), torch.cat(step_taus)
            else:
                def pick(field):
                    return torch.stack([getattr(cache[c], field)[0 if z is None else z] for c, z in sel]).to(tr.device)

                inp, amap, target, brain = (pick(f) for f in ("inputs", "amap", "target", "brain"))
                tau = t(inp)
                soft = A.soft_segmentation(amap, tau, k) * brain
                loss = A.soft_dice_loss(soft, target, mask=brain)
            tr.threshold_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            tr.threshold_optimizer.step()
            total += float(loss.detach()) / tr.num_upper_iterations_per_epoch
            taus.extend(tau.detach().cpu().tolist())
        return {"upper_loss": total, "tau_mean": float(np.mean(taus))}


UPPER_LOOPS = {**{m: StatsUpperLoop for m in MAP_THRESHOLD_MODELS}, "reference": ReferenceUpperLoop}


def refresh_healthy_taus(tr, epoch: int) -> dict[str, float]:
    """T's tau of healthy training cases for the next lower loop (3D, and 2D with one tau per case).

    The first call computes every case; later calls recompute :data:`HEALTHY_TAU_REFRESH_FRACTION` of them
    (:func:`round_robin`) and keep the others' previous taus; on normative maps the same pass records their maps
    for the next epoch's mean. Deterministic in
    the epoch, so a resumed run refreshes the same cases (the taus are part of the checkpoint).
    """
    todo = round_robin(tr.keys["healthy_train"], epoch, done=tr.healthy_taus)
    unwrap(tr.network).eval()
    t = unwrap(tr.threshold_network).eval()
    fresh = torch.zeros(len(todo), dtype=torch.float64)
    for i, k in enumerate(todo):
        case = tr.load_case(k)
        amap = tr.healthy_anomaly(case)  # normative maps: minus the mean in use (its plain map recorded)
        fresh[i] = float(tr.threshold_mode.case_tau(t, case.data, case.brain, amap, tr.device)[0])
    if dist.is_available() and dist.is_initialized():  # every rank uses rank 0's taus (and so does its checkpoint)
        fresh = fresh.to(tr.device)
        dist.broadcast(fresh, src=0)
    tr.healthy_taus.update({k: float(v) for k, v in zip(todo, fresh.cpu().tolist())})
    return tr.healthy_taus
