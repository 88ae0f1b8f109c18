"""Training progress: per-epoch numbers (kept in the checkpoint) and ``progress.png``."""
from __future__ import annotations

import json
import math
from pathlib import Path

from blogrr_nnu.image_io import atomic_write

KEYS = ("epoch", "lower_loss", "lower_mse", "lower_tolerance", "upper_loss", "tau_mean", "upper_cases",
        "upper_tau_error", "tau_slope",
        "val_healthy_mse", "val_healthy_flagged", "val_pseudo_dice", "val_gt_dice", "val_tau_error",
        "time_lower", "time_upper", "time_val", "ce", "contrastive")


def new_progress() -> dict[str, list[float]]:
    """Empty progress record: one list per key, one entry per finished outer epoch."""
    return {k: [] for k in KEYS}


def append(progress: dict, **values: float) -> None:
    """Add one epoch (missing keys get NaN, so all lists stay aligned)."""
    for k in KEYS:
        v = values.get(k, math.nan)
        progress[k].append(float(v) if v is not None else math.nan)


def write(progress: dict, folder: Path) -> None:
    """``progress.json`` and ``progress.png`` in ``folder`` (atomic)."""
    atomic_write(Path(folder) / "progress.json", lambda tmp: Path(tmp).write_text(json.dumps(progress, indent=1)))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = progress["epoch"]
    fig, axes = plt.subplots(3, 1, figsize=(9, 10), sharex=True)
    ax = axes[0]
    if any(math.isfinite(v) for v in progress.get("ce", [])):  # CGC: a segmentation network
        ax.plot(ep, progress["lower_loss"], label="total")
        ax.plot(ep, progress["ce"], label="cross-entropy vs pseudo-label")
        ax.plot(ep, progress["contrastive"], label="mini-patch contrastive")
        ax.set_ylabel("training loss")
    else:
        ax.plot(ep, progress["lower_loss"], label="lower loop: total")
        ax.plot(ep, progress["lower_mse"], label="lower loop: MSE")
        ax.plot(ep, progress["lower_tolerance"], label="lower loop: error tolerance")
        ax.plot(ep, progress["val_healthy_mse"], "--", label="val healthy MSE (no noise)")
        ax.set_ylabel("reconstruction")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(ep, progress["upper_loss"], label="upper loop loss (map T: Huber on log tau; reference T: 1 - soft Dice)")
    ax.plot(ep, progress["tau_mean"], label="mean tau (tumour cases)")
    ax.set_ylabel("threshold")
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.plot(ep, progress["val_pseudo_dice"], label="val Dice vs pseudo-label (checkpoint choice)")
    ax.plot(ep, progress["val_gt_dice"], label="val Dice vs ground truth (reported only)")
    ax.plot(ep, progress["val_healthy_flagged"], label="val healthy: fraction of brain flagged")
    ax.set_ylim(0, 1)
    ax.set_xlabel("outer epoch")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(Path(folder) / "progress.png", lambda tmp: fig.savefig(tmp, dpi=80, format="png"))
    plt.close(fig)
