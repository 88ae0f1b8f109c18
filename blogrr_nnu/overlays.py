"""PNG overlays for a person to look at: image, ground truth, prediction, anomaly map and tau.

Slices are shown in radiological convention for LPS grids with (near-)identity direction: patient
left on the image's right, anterior at the top. The slice is the axial slice with the most ground
truth (else the most prediction, else the middle of the brain).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from blogrr_nnu.image_io import atomic_write


def pick_slice(*masks: np.ndarray | None, fallback: np.ndarray | None = None) -> int:
    """Axial index (last axis) with the largest area of the first non-empty mask."""
    for m in masks:
        if m is not None and np.any(m):
            return int(np.argmax(np.asarray(m > 0).sum(axis=(0, 1))))
    if fallback is not None and np.any(fallback):
        z = np.nonzero(np.asarray(fallback).any(axis=(0, 1)))[0]
        return int((z[0] + z[-1]) // 2)
    return int(fallback.shape[2] // 2) if fallback is not None else 0


def _panel_pair(ax_img, ax_map, image, gt, pred, amap, tau, z, title):
    sl = lambda a: np.asarray(a)[:, :, z].T  # noqa: E731 - rows = Y (anterior at top), cols = X (left on right)
    img = sl(image)
    brain = img != 0
    lo, hi = np.percentile(img[brain], (1, 99)) if brain.any() else (0, 1)
    ax_img.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    if gt is not None and np.any(sl(gt)):
        ax_img.contour(sl(gt) > 0, levels=[0.5], colors="lime", linewidths=1.0)
    if pred is not None and np.any(sl(pred)):
        ax_img.contour(sl(pred) > 0, levels=[0.5], colors="red", linewidths=1.0)
    ax_img.set_title(title, fontsize=8)
    a = sl(amap)
    vmax = max(float(np.percentile(a[brain], 99.5)) if brain.any() else 1.0, tau * 1.5, 1e-6)
    im = ax_map.imshow(np.ma.masked_where(~brain, a), cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
    if np.any(a > tau):
        ax_map.contour(a > tau, levels=[0.5], colors="cyan", linewidths=1.0)
    ax_map.set_title(f"anomaly map, tau = {tau:.3f} (cyan)", fontsize=8)
    for ax in (ax_img, ax_map):
        ax.set_xticks([])
        ax.set_yticks([])
    return im


def write_overlay(path: str | Path, image: np.ndarray, pred: np.ndarray, amap: np.ndarray, tau: float,
                  gt: np.ndarray | None = None, title: str = "") -> Path:
    """One case: image with ground truth (green) and prediction (red) contours | anomaly map with tau.

    Args:
        path: PNG to write (atomically).
        image: ``(X, Y, Z)`` the channel to show (e.g. FLAIR).
        pred, gt: ``(X, Y, Z)`` masks (``gt`` may be ``None``).
        amap: ``(X, Y, Z)`` anomaly map on the same grid.
        tau: the case's threshold.
        title: text above the image panel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = pick_slice(gt, pred, fallback=image)
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.8))
    im = _panel_pair(axes[0], axes[1], image, gt, pred, amap, tau, z, f"{title} (z={z}) GT green, prediction red")
    fig.colorbar(im, ax=axes[1], fraction=0.046)
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return out


def write_overview(path: str | Path, cases: list[dict], max_cases: int = 12) -> Path:
    """All cases in one PNG, one row each; ``cases`` hold the keyword arguments of :func:`write_overlay`
    (``image, pred, amap, tau, gt, title``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = cases[:max_cases]
    if not cases:
        raise ValueError("no case to show")
    fig, axes = plt.subplots(len(cases), 2, figsize=(6.5, 3.0 * len(cases)), squeeze=False)
    for row, c in zip(axes, cases):
        z = pick_slice(c.get("gt"), c["pred"], fallback=c["image"])
        _panel_pair(row[0], row[1], c["image"], c.get("gt"), c["pred"], c["amap"], c["tau"], z, c.get("title", ""))
    fig.suptitle("ground truth green, prediction red; anomaly map with tau contour cyan", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / (3.0 * len(cases))))  # keep 0.4 inch on top for the title
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)
    return out
