"""BraTS case folders: both namings, channels by name, sub-region labels to whole tumour.

=====================  ===========================================  =============================
release                file names (one folder per case)             labels
=====================  ===========================================  =============================
2020, 2021             ``<case>_t1 / _t1ce / _t2 / _flair / _seg``  0, 1 (necrosis), 2 (oedema), 4 (enhancing)
2023+ (GLI, MEN, ...)  ``<case>-t1n / -t1c / -t2w / -t2f / -seg``   0, 1, 2, 3 (enhancing)
=====================  ===========================================  =============================

Both may sit in one input folder (at any depth); each case becomes channels ``T1, T1ce, T2, FLAIR``
(:data:`CHANNELS`) and, with a ``seg`` file, a binary whole-tumour label (every non-zero sub-region).
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import nibabel as nib
import numpy as np

from blogrr_nnu.importers.files import ConversionError, SourceCase

logger = logging.getLogger(__name__)

CHANNELS = ("T1", "T1ce", "T2", "FLAIR")
NAMINGS = {
    "brats2021": (re.compile(r"^(?P<case>.+)_(?P<mod>t1|t1ce|t2|flair|seg)\.nii(\.gz)?$", re.IGNORECASE),
                  {"t1": "T1", "t1ce": "T1ce", "t2": "T2", "flair": "FLAIR"}),
    "brats2023": (re.compile(r"^(?P<case>.+)-(?P<mod>t1n|t1c|t2w|t2f|seg)\.nii(\.gz)?$", re.IGNORECASE),
                  {"t1n": "T1", "t1c": "T1ce", "t2w": "T2", "t2f": "FLAIR"}),
}
BRATS_LABELS = {0, 1, 2, 3, 4}


def match_brats_file(name: str) -> tuple[str, str, str] | None:
    """``(naming, case id, channel name or "seg")`` of a BraTS file name, or ``None``."""
    for naming, (pattern, channels) in NAMINGS.items():
        m = pattern.match(name)
        if m:
            mod = m["mod"].lower()
            return naming, m["case"], "seg" if mod == "seg" else channels[mod]
    return None


def find_brats_cases(folder: Path) -> list[SourceCase]:
    """Every BraTS case below ``folder`` (files at any depth), sorted by id.

    Raises:
        ConversionError: the folder is missing or holds no BraTS file, a case lacks a channel, or a
            file appears twice.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ConversionError(f"{folder}: BraTS folder not found; pass the folder that holds the case folders")
    cases: dict[str, SourceCase] = {}
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        hit = match_brats_file(f.name)
        if hit is None:
            continue
        naming, cid, channel = hit
        case = cases.setdefault(cid, SourceCase(cid, naming=naming))
        if channel == "seg":
            if case.label is not None:
                raise ConversionError(f"{f}: second label of case {cid!r} (also {case.label}); keep one")
            case.label = f
        else:
            if channel in case.images:
                raise ConversionError(f"{f}: second {channel} file of case {cid!r} (also {case.images[channel]}); keep one")
            case.images[channel] = f
    if not cases:
        raise ConversionError(f"{folder}: no BraTS file found (expected e.g. BraTS20_Training_001_flair.nii.gz or "
                              "BraTS-GLI-00000-000-t2f.nii.gz)")
    out = []
    for cid in sorted(cases):
        case = cases[cid]
        missing = [c for c in CHANNELS if c not in case.images]
        if missing:
            where = next(iter(case.images.values()), case.label)
            raise ConversionError(f"{where.parent}: case {cid!r} lacks {', '.join(missing)}; add the file(s) or move "
                                  "the case out of the input folder")
        case.images = {c: case.images[c] for c in CHANNELS}
        out.append(case)
    logger.info("found %d BraTS case(s) in %s", len(out), folder)
    return out


def whole_tumour(label_file: Path) -> nib.Nifti1Image:
    """A BraTS sub-region label as a binary whole-tumour label (uint8 {0, 1}), same grid and header.

    Raises:
        ConversionError: values other than BraTS labels {0, 1, 2, 3, 4}.
    """
    img = nib.load(str(label_file))
    data = np.asanyarray(img.dataobj)
    values = np.unique(data)
    if not set(values.tolist()) <= BRATS_LABELS:
        shown = ", ".join(f"{v:g}" for v in values[:8])
        raise ConversionError(f"{label_file}: values {shown} are not BraTS labels {{0,1,2,4}} or {{0,1,2,3}}; "
                              "pass the BraTS segmentation file")
    out = nib.Nifti1Image((data > 0).astype(np.uint8), img.affine, img.header)
    out.set_data_dtype(np.uint8)
    out.header.set_slope_inter(1, 0)
    return out
