"""The plain FLAIR-threshold baseline on a raw dataset, to check the phantom is not too easy.

FLAIR is z-scored inside the brain (non-zero voxels) per case; one global threshold is applied to
every case and the threshold with the best mean per-case Dice is reported ("best possible global
threshold", as in Meissen et al. 2021, who measured 0.738 on BraTS 2020).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from blogrr_nnu.image_io import read_image
from blogrr_nnu.metrics import dice as mask_dice

FLAIR_CHANNEL = 2
THRESHOLDS = np.round(np.arange(0.0, 6.001, 0.05), 3)


def flair_threshold_dice(folder: str | Path, roles: tuple[str, ...] = ("tumor", "test"),
                         thresholds: np.ndarray = THRESHOLDS) -> dict:
    """Dice of the best single global threshold on per-case z-scored FLAIR.

    Args:
        folder: a raw dataset folder with labels (``labelsTrTumor`` and/or ``labelsTs``).
        roles: which tumour groups to use.
        thresholds: candidate z-score thresholds.

    Returns:
        ``{"dice": mean per-case Dice at the best threshold, "threshold": z, "dice_std": ...,
        "pooled_dice": Dice of all voxels pooled at that threshold, "n_cases": N,
        "curve": [(threshold, mean Dice), ...]}``.
    """
    folder = Path(folder)
    dirs = {"tumor": ("imagesTrTumor", "labelsTrTumor"), "test": ("imagesTs", "labelsTs")}
    per_case, inter, sums = [], np.zeros(len(thresholds)), np.zeros(len(thresholds))
    for role in roles:
        img_dir, lab_dir = (folder / d for d in dirs[role])
        if not lab_dir.is_dir():
            continue
        for lab_path in sorted(lab_dir.glob("*.nii.gz")):
            cid = lab_path.name[: -len(".nii.gz")]
            flair, _ = read_image(img_dir / f"{cid}_{FLAIR_CHANNEL:04d}.nii.gz")
            gt, _ = read_image(lab_path)
            gt = gt > 0
            brain = flair > 0
            v = flair[brain].astype(np.float64)
            z = (flair.astype(np.float64) - v.mean()) / max(v.std(), 1e-6)
            zb, gb = z[brain], gt[brain]
            row = []
            for k, t in enumerate(thresholds):
                p = zb > t
                row.append(mask_dice(p, gb))
                inter[k] += np.logical_and(p, gb).sum()
                sums[k] += p.sum() + gb.sum()
            per_case.append(row)
    if not per_case:
        raise ValueError(f"{folder}: no labelled tumour cases found")
    d = np.asarray(per_case)
    mean = d.mean(axis=0)
    best = int(np.argmax(mean))
    return {"dice": float(mean[best]), "dice_std": float(d[:, best].std()), "threshold": float(thresholds[best]),
            "pooled_dice": float(2 * inter[best] / max(sums[best], 1)), "n_cases": int(d.shape[0]),
            "curve": [(float(t), float(m)) for t, m in zip(thresholds, mean)]}
