"""A PNG montage of a few demo cases so a person can look at the phantom.

One row per case (up to four tumour / test cases and one healthy case): T1, T2, FLAIR and FLAIR
with the ground-truth outline, on the axial slice holding the most lesion (the middle slice for
healthy cases). Images are shown in LPS orientation (patient left on the image's right, anterior
at the top) whatever the file's direction.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from blogrr_nnu.image_io import atomic_write, read_image

logger = logging.getLogger(__name__)


def _to_lps(array: np.ndarray, direction: tuple[float, ...]) -> np.ndarray:
    # The phantom only writes axis-aligned directions; flip axes stored in the opposite sense.
    d = np.asarray(direction).reshape(3, 3)
    for ax in range(3):
        if d[ax, ax] < 0:
            array = np.flip(array, axis=ax)
    return array


def _pick_cases(folder: Path, max_tumor: int) -> list[tuple[str, Path, Path | None]]:
    out = []
    for img_dir, lab_dir in (("imagesTrTumor", "labelsTrTumor"), ("imagesTs", "labelsTs")):
        for f in sorted((folder / img_dir).glob("*_0000.nii.gz")) if (folder / img_dir).is_dir() else []:
            if len(out) >= max_tumor:
                break
            cid = f.name[: -len("_0000.nii.gz")]
            out.append((cid, folder / img_dir, folder / lab_dir / f"{cid}.nii.gz"))
    healthy = sorted((folder / "imagesTr").glob("*_0000.nii.gz")) if (folder / "imagesTr").is_dir() else []
    if healthy:
        out.append((healthy[0].name[: -len("_0000.nii.gz")], folder / "imagesTr", None))
    return out


def write_montage(folder: str | Path, out_png: str | Path, max_tumor: int = 4, title: str | None = None) -> Path | None:
    """Draw the montage of dataset ``folder`` into ``out_png`` (atomic; ``None`` if no case).

    Args:
        folder: a raw dataset folder written by :func:`~blogrr_nnu.phantom.dataset.make_demo_dataset`.
        out_png: output file.
        max_tumor: number of tumour cases shown.
        title: figure title (default: the folder name).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    cases = _pick_cases(folder, max_tumor)
    if not cases:
        return None
    fig, axes = plt.subplots(len(cases), 4, figsize=(10, 2.9 * len(cases)), squeeze=False)
    for row, (cid, img_dir, label_path) in enumerate(cases):
        chans = []
        for c in range(3):
            arr, geo = read_image(img_dir / f"{cid}_{c:04d}.nii.gz")
            chans.append(_to_lps(arr.astype(np.float32), geo.direction))
        label = None
        if label_path is not None and label_path.is_file():
            lab, geo = read_image(label_path)
            label = _to_lps(lab, geo.direction)
        z = int(np.argmax(label.sum(axis=(0, 1)))) if label is not None and label.any() else chans[0].shape[2] // 2
        for col, (col_title, img) in enumerate(zip(("T1", "T2", "FLAIR", "FLAIR + label"), chans + [chans[2]])):
            ax = axes[row, col]
            sl = img[:, :, z].T
            vmax = np.percentile(img[img > 0], 99.5) if (img > 0).any() else 1.0
            ax.imshow(sl, cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
            if col == 3 and label is not None:
                ax.contour(label[:, :, z].T, levels=[0.5], colors="red", linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(col_title)
            if col == 0:
                ax.set_ylabel(f"{cid}\nz={z}")
    fig.suptitle(f"{title or folder.name} (axial, patient left on the right)")
    fig.tight_layout()
    out_png = Path(out_png)
    # No timestamp/software metadata: the PNG is byte-identical for the same dataset.
    atomic_write(out_png, lambda tmp: fig.savefig(tmp, dpi=80, format="png", metadata={"Software": None}))
    plt.close(fig)
    return out_png
