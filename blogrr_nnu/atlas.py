"""Offline access to the MNI-space template, tissue maps and Hammers atlas shipped in deepmriprep.

All three live in one MNI space ("template space"). The files are read from the installed
``deepmriprep`` package; nothing is downloaded. We locate the package folder with
``importlib.util.find_spec`` rather than ``importlib.resources.files``, because the latter imports
``deepmriprep``, whose ``__init__`` pulls in torch, deepbet and torchreg (seconds of start-up).

The Hammers atlas (Hammers et al. 2003; Gousias et al. 2008) is distributed for research use.
"""
from __future__ import annotations

import csv
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from blogrr_nnu.image_io import Geometry, sitk_to_array

TISSUE_CLASSES = ("gm", "wm", "rest")


class AtlasNotFoundError(RuntimeError):
    """The deepmriprep data files are missing."""


@functools.lru_cache(maxsize=1)
def data_dir() -> Path:
    """Folder holding ``hammers.nii.gz``, ``hammers.csv`` and the templates.

    Raises:
        AtlasNotFoundError: deepmriprep is not installed or lacks its data files.
    """
    spec = importlib.util.find_spec("deepmriprep")
    if spec is None or not spec.submodule_search_locations:
        raise AtlasNotFoundError(
            "the Python package 'deepmriprep' (template and Hammers atlas) is not installed: "
            "run `pip install -c constraints.txt deepmriprep` (or reinstall blogrr-nnu)"
        )
    folder = Path(spec.submodule_search_locations[0]) / "data" / "templates"
    missing = [n for n in ("hammers.nii.gz", "hammers.csv", "Template_05mm_bet.nii.gz", "Template_4_GS.nii.gz")
               if not (folder / n).is_file()]
    if missing:
        raise AtlasNotFoundError(f"{folder}: deepmriprep data files missing ({', '.join(missing)}); reinstall deepmriprep")
    return folder


@dataclass(frozen=True)
class HammersRegion:
    """One Hammers atlas label.

    Attributes:
        label: integer id in ``hammers.nii.gz`` (1..95).
        name: name from ``hammers.csv``, e.g. ``"FL superior frontal gyrus R"``.
        side: ``"left"``, ``"right"`` or ``"midline"`` (unpaired structures).
        lobe: ``"frontal"``, ``"temporal"``, ``"parietal"``, ``"occipital"``, ``"insula"``,
            ``"cingulate"`` or ``None`` for deep / other structures.
        structure: the name without lobe prefix and side suffix, e.g. ``"superior frontal gyrus"``.
        tissue: tissue flags ``(gm, wm, csf)`` from the csv.
    """

    label: int
    name: str
    side: str
    lobe: str | None
    structure: str
    tissue: tuple[int, int, int]


_LOBE_PREFIX = {"FL": "frontal", "TL": "temporal", "PL": "parietal", "OL": "occipital", "CG": "cingulate"}


def _parse_region(row: dict[str, str]) -> HammersRegion:
    name = row["ROIname"].strip()
    words = name.split()
    side = {"L": "left", "R": "right"}.get(words[-1], "midline")
    if side != "midline":
        words = words[:-1]
    lobe = _LOBE_PREFIX.get(words[0])
    if lobe is not None:
        words = words[1:]
    elif words[0].lower() == "insula":
        lobe = "insula"
    return HammersRegion(
        label=int(row["ROIid"]),
        name=name,
        side=side,
        lobe=lobe,
        structure=" ".join(words).lower(),
        tissue=(int(row["Vgm"]), int(row["Vwm"]), int(row["Vcsf"])),
    )


@functools.lru_cache(maxsize=1)
def hammers_regions() -> dict[int, HammersRegion]:
    """All 95 Hammers regions keyed by label id."""
    with open(data_dir() / "hammers.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter=";"))
    return {r.label: r for r in map(_parse_region, rows)}


@functools.lru_cache(maxsize=4)
def _read(name: str) -> sitk.Image:
    return sitk.ReadImage(str(data_dir() / name))


def load_hammers() -> tuple[np.ndarray, Geometry]:
    """Hammers label map, ``(X, Y, Z)`` uint8 at 1 mm, and its geometry (template space)."""
    image = _read("hammers.nii.gz")
    return sitk_to_array(image).astype(np.uint8), Geometry.from_sitk(image)


def load_t1_template() -> tuple[np.ndarray, Geometry]:
    """Skull-stripped T1 template, ``(X, Y, Z)`` float32 in [0, 1] at 0.5 mm, and its geometry."""
    image = _read("Template_05mm_bet.nii.gz")
    return sitk_to_array(image).astype(np.float32), Geometry.from_sitk(image)


def load_tissue_maps() -> tuple[np.ndarray, Geometry]:
    """Tissue probability maps ``(3, X, Y, Z)`` float32 (order :data:`TISSUE_CLASSES`) at 1.5 mm.

    The file is a 4D NIfTI; its first three axes define the returned 3D geometry.
    """
    image = _read("Template_4_GS.nii.gz")
    arr = sitk.GetArrayFromImage(image)  # (C, Z, Y, X)
    maps = np.ascontiguousarray(np.transpose(arr, (0, 3, 2, 1))).astype(np.float32)
    direction = np.asarray(image.GetDirection()).reshape(4, 4)[:3, :3]
    geometry = Geometry(
        spacing=tuple(float(s) for s in image.GetSpacing()[:3]),
        origin=tuple(float(o) for o in image.GetOrigin()[:3]),
        direction=tuple(direction.ravel().tolist()),
        shape=tuple(int(s) for s in maps.shape[1:]),
    )
    return maps, geometry
