"""Small raw datasets made from the real MNI template: known affines, known spherical lesions.

Cases are the deepmriprep T1 template moved by a seeded random affine onto a coarse native grid
(4 mm: ~45 voxels a side), so registration, resampling and report masks meet real anatomy while
tests stay fast. Lesions are spheres placed at a template-space point (default: right frontal lobe).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from blogrr_nnu import registration as reg
from blogrr_nnu.image_io import Geometry, sitk_to_array, write_image

RIGHT_FRONTAL_LPS = (-30.0, -35.0, 30.0)  # template LPS mm: x < 0 is the right hemisphere


def random_affine(rng: np.random.Generator) -> sitk.AffineTransform:
    """Case -> template transform: rotation up to 6 degrees, scale +-5 %, shift +-6 mm."""
    angles = np.deg2rad(rng.uniform(-6, 6, 3))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    t = sitk.AffineTransform(3)
    t.SetMatrix((rx @ ry @ rz @ np.diag(rng.uniform(0.95, 1.05, 3))).ravel().tolist())
    t.SetTranslation(rng.uniform(-6, 6, 3).tolist())
    return t


def make_case(rng, spacing=4.0, lesion_center=None, lesion_radius=22.0, direction=None):
    """One case: ``(T1, FLAIR)`` arrays, label (or None), native geometry and the true transform."""
    t = random_affine(rng)
    sp = np.broadcast_to(np.asarray(spacing, float), (3,))  # a number, or (sx, sy, sz) along the voxel axes
    direction = direction or (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    d = np.asarray(direction).reshape(3, 3)
    # field of view 180 x 216 x 180 mm along the physical axes, whatever the voxel axes' order
    extent = np.abs(d.T) @ np.array([180.0, 216.0, 180.0])
    shape = tuple(int(np.ceil(v / s)) for v, s in zip(extent, sp))
    origin = -(d @ ((np.asarray(shape) - 1) * sp)) / 2.0 + np.array([0.0, -18.0, 18.0])
    geo = Geometry(tuple(sp.tolist()), tuple(origin.tolist()), tuple(direction), shape)
    ref = geo.apply_to(sitk.Image(list(shape), sitk.sitkFloat32))
    t1 = sitk_to_array(sitk.Resample(reg.template_t1(2.0), ref, t, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    brain = t1 > 0.02
    t1 = np.where(brain, t1, 0).astype(np.float32)
    flair = np.where(brain, 0.3 + 0.6 * (1.0 - t1) * (t1 > 0.35) + 0.02 * rng.standard_normal(shape), 0)
    label = None
    if lesion_center is not None:
        # native point of the template-space centre: invert the case -> template affine
        center = np.asarray(t.GetInverse().TransformPoint(lesion_center))
        idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
        pts = (idx * sp) @ d.T + origin
        label = ((np.linalg.norm(pts - center, axis=1) <= lesion_radius).reshape(shape) & brain).astype(np.uint8)
        flair = np.where(label > 0, 1.2, flair)
        t1 = np.where(label > 0, 0.25 * t1, t1)
    return (np.stack([t1 * 800.0, flair * 500.0]).astype(np.float32), label, geo, t)


def write_template_dataset(root: Path, name="Dataset980_TplTiny", n_healthy=3, n_tumor=2, n_test=1, seed=0,
                           spacing=4.0, report="MRI brain: a 4 cm mass in the right frontal lobe with surrounding oedema.") -> Path:
    """Raw dataset (T1, FLAIR) from the template; tumour cases get a right frontal sphere and ``report``."""
    rng = np.random.default_rng(seed)
    folder = root / name
    for split, n, img, lab, rep in (("healthy", n_healthy, "imagesTr", None, None),
                                     ("tumor", n_tumor, "imagesTrTumor", "labelsTrTumor", "reportsTr"),
                                     ("test", n_test, "imagesTs", "labelsTs", "reportsTs")):
        for i in range(n):
            cid = f"{split}_{i:03d}"
            data, label, geo, _ = make_case(rng, spacing, None if split == "healthy" else RIGHT_FRONTAL_LPS)
            for ch in range(data.shape[0]):
                write_image(folder / img / f"{cid}_{ch:04d}.nii.gz", data[ch], geo)
            if lab:
                write_image(folder / lab / f"{cid}.nii.gz", label, geo)
                (folder / rep).mkdir(parents=True, exist_ok=True)
                (folder / rep / f"{cid}.txt").write_text(report, encoding="utf-8")
    dj = {"name": name, "channel_names": {"0": "T1", "1": "FLAIR"}, "labels": {"background": 0, "tumor": 1},
          "file_ending": ".nii.gz", "numHealthy": n_healthy, "numTumor": n_tumor, "numTest": n_test}
    (folder / "dataset.json").write_text(json.dumps(dj, indent=1))
    return folder
