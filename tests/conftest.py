"""Shared fixtures: tiny synthetic raw datasets built in temporary folders."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from blogrr_nnu.image_io import Geometry, write_image

SHAPE = (24, 28, 24)
SPACING = (2.0, 2.0, 2.0)


def tiny_geometry(shape=SHAPE, spacing=SPACING) -> Geometry:
    origin = tuple(-s * (n - 1) / 2 for s, n in zip(spacing, shape))
    return Geometry(tuple(spacing), origin, (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), tuple(shape))


def ellipsoid(shape=SHAPE, radii=(0.42, 0.42, 0.40), center=(0.5, 0.5, 0.5)) -> np.ndarray:
    """Boolean ellipsoid, radii and centre as fractions of the shape."""
    grids = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, center, radii)) <= 1.0


def write_tiny_dataset(
    root: Path,
    name: str = "Dataset990_Tiny",
    n_healthy: int = 2,
    n_tumor: int = 2,
    n_test: int = 1,
    channels: tuple[str, ...] = ("T1", "FLAIR"),
    seed: int = 0,
) -> Path:
    """Write a small valid raw dataset (ellipsoid 'brains', spherical 'tumours', reports)."""
    rng = np.random.default_rng(seed)
    folder = root / name
    geo = tiny_geometry()
    brain = ellipsoid()
    lesion = ellipsoid(radii=(0.12, 0.12, 0.12), center=(0.35, 0.5, 0.55)) & brain

    def case(folder_name: str, cid: str, tumor: bool):
        for ch in range(len(channels)):
            img = (brain * (1.0 + 0.05 * rng.standard_normal(SHAPE))).astype(np.float32)
            if tumor:
                img[lesion] += 0.8 if ch else -0.4
            write_image(folder / folder_name / f"{cid}_{ch:04d}.nii.gz", img * brain, geo)

    for i in range(n_healthy):
        case("imagesTr", f"healthy_{i:03d}", False)
    for split, n, img_dir, lab_dir, rep_dir in (("tumor", n_tumor, "imagesTrTumor", "labelsTrTumor", "reportsTr"),
                                               ("test", n_test, "imagesTs", "labelsTs", "reportsTs")):
        for i in range(n):
            cid = f"{split}_{i:03d}"
            case(img_dir, cid, True)
            write_image(folder / lab_dir / f"{cid}.nii.gz", lesion.astype(np.uint8), geo)
            (folder / rep_dir).mkdir(parents=True, exist_ok=True)
            (folder / rep_dir / f"{cid}.txt").write_text("Mass in the right frontal lobe, 2 cm.\n", encoding="utf-8")
    dj = {"name": name, "channel_names": {str(i): c for i, c in enumerate(channels)},
          "labels": {"background": 0, "tumor": 1}, "file_ending": ".nii.gz",
          "numHealthy": n_healthy, "numTumor": n_tumor, "numTest": n_test}
    (folder / "dataset.json").write_text(json.dumps(dj, indent=2))
    return folder


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """A valid tiny raw dataset under ``tmp_path/raw``."""
    return write_tiny_dataset(tmp_path / "raw")
