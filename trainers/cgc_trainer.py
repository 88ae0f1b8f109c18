"""CGCTrainer: a segmentation network refined from image pseudo-labels with a cross-granularity loss.

CGC (DESIGN.md section 1, no public code) trains an encoder-decoder on a GMM pseudo-label P with

- a **coarse-grained** loss: voxel-wise cross-entropy against P (inside the brain);
- a **fine-grained** loss: the deepest feature map (of the reference's geometry, see
  :func:`contrast_geometry`) goes through a projection head; it is cut into
  *mini-patches* whose embeddings (mean over the mini-patch, L2-normalised) are contrasted: mini-patches
  that are mostly lesion in P are anchors and positives, mini-patches free of lesion (and mostly brain)
  are negatives, with temperature-scaled logits (:func:`cross_granularity_contrastive_loss`).

Choices where the poster is silent (docs/cgc.md): network = the plans' U-Net (the reference's double
3x3x3 conv blocks, deepest map 24x24x8 of a 192x192x64 patch), 2 output classes, no deep supervision;
features and mini-patch of the reference's physical geometry (:func:`contrast_geometry`); lesion mini-patch: > 50 % lesion; negative: no lesion and > 50 % brain; temperature 0.2; loss =
CE + 1.0 x contrastive; Adam (amsgrad) at 1e-3 on CPU / 3e-4 on GPU, constant; the same spatial-only
augmentation as BLOGRR; training patches from tumour training cases; target ``pseudo_gmm`` by default
(``--pseudo_label fused`` for the fused label). Validation: Dice of the argmax against the pseudo-label
(best checkpoint) and against ground truth where it exists (reported only), and the fraction of brain
flagged on held-out healthy cases.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from blogrr_nnu import amp
from blogrr_nnu.sliding_window import inference_tile_size, sliding_window_reconstruct
from blogrr_nnu.trainers.base_trainer import BaseTrainer, unwrap
from blogrr_nnu.cases import load_whole_case
from blogrr_nnu.metrics import dice as mask_dice

# The reference: 1 mm BraTS voxels, deepest map at stride 8 (8 mm voxels). Its mini-patches were 6x6x2
# (48 x 48 x 16 mm, best) and 3x3x1 (24 x 24 x 8 mm, close). Stored axis order is (Z, X, Y): slice axis first.
REF_FEATURE_VOXEL_MM = 8.0
REF_MINI_PATCH_MM = (8.0, 24.0, 24.0)


def contrast_geometry(spacing, strides, ref_voxel_mm: float = REF_FEATURE_VOXEL_MM,
                      ref_mini_mm=REF_MINI_PATCH_MM) -> tuple[int, tuple[int, ...]]:
    """Which encoder stage the contrastive loss reads, and its mini-patch size in that stage's voxels.

    The stage is the one whose voxels are closest in size to the reference's deepest map (8 mm), the
    mini-patch the reference's 3x3x1 option in mm (24 x 24 x 8, slice axis 8 mm), at least one voxel. On a
    GPU configuration at 1 mm that is the reference's geometry; on the demo's 3d_cpu (3 mm, strides
    1-2-2-2) the deepest map has 24 mm voxels, where a lesion rarely fills half of any mini-patch (docs/cgc.md),
    so the 6 mm stage is used.

    Args:
        spacing: voxel size of the stored array (``(Z, X, Y)``, or ``(X, Y)`` for 2D), mm.
        strides: per-stage strides of the encoder (plans).

    Returns:
        ``(stage index, mini-patch size per axis)``.

    Example:
        >>> contrast_geometry((1.0, 1.0, 1.0), [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]])
        (3, (1, 3, 3))
        >>> contrast_geometry((3.0, 3.0, 3.0), [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]])
        (1, (1, 4, 4))
    """
    spacing = np.asarray(spacing, float)
    ref = np.asarray(ref_mini_mm[-len(spacing):], float)
    voxel = spacing.copy()
    best = None
    for stage, stride in enumerate(strides):
        voxel = voxel * np.asarray(stride, float)
        gap = abs(float(np.exp(np.log(voxel).mean())) - ref_voxel_mm)
        if best is None or gap < best[0]:
            best = (gap, stage, voxel.copy())
    _, stage, vox = best
    return stage, tuple(max(1, int(round(r / v))) for r, v in zip(ref, vox))


def cross_granularity_contrastive_loss(embeddings: torch.Tensor, lesion: torch.Tensor, normal: torch.Tensor,
                                       temperature: float = 0.2) -> torch.Tensor:
    """Supervised contrastive loss over mini-patch embeddings, lesion mini-patches as anchors.

    For every lesion anchor i: ``-mean_{p in lesion, p != i} log(exp(z_i.z_p / T) / sum_{a != i} exp(z_i.z_a / T))``
    with the sum over all lesion and normal mini-patches. Lower when lesion embeddings sit together and
    away from normal ones.

    Args:
        embeddings: ``(N, D)`` L2-normalised.
        lesion, normal: ``(N,)`` bool; mini-patches in neither are ignored.
        temperature: T.

    Returns:
        Scalar (0 when there are fewer than 2 lesion or no normal mini-patches).
    """
    keep = lesion | normal
    z, pos = embeddings[keep], lesion[keep]
    if int(pos.sum()) < 2 or int((~pos).sum()) < 1:
        return embeddings.sum() * 0.0
    logits = z @ z.t() / temperature
    n = z.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(eye, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    same = pos[:, None] & pos[None, :] & ~eye
    per_anchor = -(log_prob.masked_fill(~same, 0.0).sum(1)) / same.sum(1).clamp_min(1)
    return per_anchor[pos].mean()


class CGCTrainer(BaseTrainer):
    """Segmentation network + projection head trained on image pseudo-labels (module docstring)."""

    upper_loop_target = "pseudo_gmm"
    temperature = 0.2
    contrastive_weight = 1.0
    projection_dim = 64

    def build_networks(self, n_channels: int) -> None:
        """The plans' U-Net with 2 output classes and the projection head on the contrast stage."""
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

        arch = self.configuration_manager.configuration["architecture"]
        self.network = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"],
                                              arch["_kw_requires_import"], n_channels, 2, allow_init=True,
                                              deep_supervision=False).to(self.device)
        self.contrast_stage, self.mini_patch = contrast_geometry(self.configuration_manager.spacing,
                                                                 arch["arch_kwargs"]["strides"])
        deep = int(arch["arch_kwargs"]["features_per_stage"][self.contrast_stage])
        conv = nn.Conv3d if self.dim == 3 else nn.Conv2d
        self.projection_head = nn.Sequential(conv(deep, deep, 1), nn.LeakyReLU(0.01, inplace=True),
                                             conv(deep, self.projection_dim, 1)).to(self.device)
        if not self.cpu_schedule:
            self.initial_lr = 3e-4
        params = list(self.network.parameters()) + list(self.projection_head.parameters())
        self.optimizer = torch.optim.Adam(params, self.initial_lr, weight_decay=self.weight_decay, amsgrad=True)

    def wrap_ddp(self, device_ids) -> None:
        super().wrap_ddp(device_ids)
        self.projection_head = DDP(self.projection_head, device_ids=device_ids)

    def patch_keys(self, folder: Path) -> list[str]:
        if not self.keys["tumor_train"]:
            raise ValueError(f"{folder}: no tumour training case in fold {self.fold}; CGC trains on tumour scans")
        return self.keys["tumor_train"]

    def load_training_cases(self, folder: Path) -> None:
        """Only where the pseudo-label sits in the stored seg channels (training reads patches)."""
        first = load_whole_case(folder, self.keys["tumor_train"][0], self.upper_loop_target)
        self.target_index = list(first.props["seg_channels"]).index(self.upper_loop_target)
        self.tumor_train = []

    # -- one training step -----------------------------------------------------------------------------
    def losses(self, x: torch.Tensor, target: torch.Tensor, brain: torch.Tensor) -> dict[str, torch.Tensor]:
        """CE (inside the brain) and the contrastive loss of one batch; ``x (B, C, *P)``, masks ``(B, 1, *P)``.

        The forward pass runs through ``self.network`` (the DDP wrapper when there is one: only a forward through
        DDP prepares its gradient all-reduce); the encoder's skips are read by a forward hook. Under fp16
        autocast on CUDA (as nnU-Net); logits and projections are cast to fp32 before the losses.
        """
        seen = {}
        hook = unwrap(self.network).encoder.register_forward_hook(lambda m, i, out: seen.update(skips=out))
        try:
            with amp.autocast(self.device):
                logits = self.network(x).float()
        finally:
            hook.remove()
        ce_map = F.cross_entropy(logits, target[:, 0].long(), reduction="none")
        ce = (ce_map * brain[:, 0]).sum() / brain.sum().clamp_min(1)
        with amp.autocast(self.device):
            proj = self.projection_head(seen["skips"][self.contrast_stage]).float()
        deep = tuple(proj.shape[2:])
        mini = self.mini_patch
        pool = F.avg_pool3d if self.dim == 3 else F.avg_pool2d
        emb = F.normalize(pool(proj, mini, mini, ceil_mode=True), dim=1)
        lesion_frac = pool(F.adaptive_avg_pool3d(target, deep) if self.dim == 3 else F.adaptive_avg_pool2d(target, deep),
                           mini, mini, ceil_mode=True)
        brain_frac = pool(F.adaptive_avg_pool3d(brain, deep) if self.dim == 3 else F.adaptive_avg_pool2d(brain, deep),
                          mini, mini, ceil_mode=True)
        d = emb.shape[1]
        emb = emb.movedim(1, -1).reshape(-1, d)
        lesion = (lesion_frac > 0.5).reshape(-1)
        normal = ((lesion_frac == 0) & (brain_frac > 0.5)).reshape(-1)
        con = cross_granularity_contrastive_loss(emb, lesion, normal, self.temperature)
        return {"loss": ce + self.contrastive_weight * con, "ce": ce, "contrastive": con,
                "n_lesion": lesion.sum(), "n_normal": normal.sum()}

    def run_lower_loop(self, epoch: int) -> dict:
        self.seed_part(epoch, 0)
        self.network.train()
        self.projection_head.train()
        totals = {"lower_loss": 0.0, "ce": 0.0, "contrastive": 0.0}
        for _ in range(self.num_iterations_per_epoch):
            batch = self.dataloader_train.generate_train_batch()
            seg = batch["target"].to(self.device)
            brain = (seg[:, 0:1] > 0).float()
            target = (seg[:, self.target_index:self.target_index + 1] > 0).float()
            x = batch["data"].to(self.device) * brain
            out = self.losses(x, target, brain)
            amp.backward_step(out["loss"], self.optimizer,
                              list(self.network.parameters()) + list(self.projection_head.parameters()),
                              self.grad_scaler, max_norm=12)
            for k, key in (("lower_loss", "loss"), ("ce", "ce"), ("contrastive", "contrastive")):
                totals[k] += float(out[key].detach()) / self.num_iterations_per_epoch
        return totals

    # -- whole cases -------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_probability(self, data: torch.Tensor) -> torch.Tensor:
        """Tumour probability ``(1, *S)`` of a whole case ``(C, *S)`` (softmax of the sliding-window logits)."""
        net = unwrap(self.network)
        net.eval()
        patch = self.configuration_manager.patch_size
        tile = inference_tile_size(data.shape[1:], patch, self.strides)
        logits = sliding_window_reconstruct(net, data, tile, tile_step_size=self.tile_step_size,
                                            window_device=self.device, stitch_device="cpu", out_channels=2)
        return torch.softmax(logits, 0)[1:2]

    @torch.no_grad()
    def run_validation(self) -> dict:
        out = {"val_healthy_flagged": [], "val_pseudo_dice": [], "val_gt_dice": []}
        for case in self.healthy_val + self.tumor_val:
            pred = (self.predict_probability(case.data) >= 0.5) & case.brain
            if case.props["role"] == "healthy":
                out["val_healthy_flagged"].append(float(pred.sum() / case.brain.sum().clamp_min(1)))
                continue
            if case.target.any():
                out["val_pseudo_dice"].append(mask_dice(pred, case.target > 0))
            if case.label is not None:
                out["val_gt_dice"].append(mask_dice(pred, case.label))
        res = {k: float(np.mean(v)) if v else math.nan for k, v in out.items()}
        res["val_healthy_mse"] = math.nan
        return res

    def epoch_summary(self, lower: dict, upper: dict, val: dict) -> str:
        return (f"loss {lower['lower_loss']:.4f} (CE {lower['ce']:.4f}, contrastive {lower['contrastive']:.4f}) | val "
                f"pseudo Dice {val['val_pseudo_dice']:.3f} GT Dice {val['val_gt_dice']:.3f} healthy flagged "
                f"{val['val_healthy_flagged']:.4f}")

    # -- checkpoints -------------------------------------------------------------------------------------
    def checkpoint_extras(self) -> dict:
        return {"projection_weights": unwrap(self.projection_head).state_dict(), "method": "cgc"}

    def load_checkpoint_extras(self, ckpt: dict) -> None:
        unwrap(self.projection_head).load_state_dict(ckpt["projection_weights"])
