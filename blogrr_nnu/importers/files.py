"""What every importer hands on: a source case (channel name -> file) and how its files are copied."""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib

NIFTI_ENDINGS = (".nii.gz", ".nii")


class ConversionError(ValueError):
    """Bad input to an importer; the message names the file (or folder) and the fix, in one line."""


@dataclass
class SourceCase:
    """One case as found in a source folder.

    Attributes:
        case_id: the id it keeps in the raw dataset.
        images: channel name -> file, in channel order.
        label: ground-truth file (BraTS sub-regions), if any.
        naming: which naming it was found with (``"brats2021"``, ``"brats2023"``, ``"pattern"``).
    """

    case_id: str
    images: dict[str, Path] = field(default_factory=dict)
    label: Path | None = None
    naming: str = ""


def strip_nifti_ending(name: str) -> str | None:
    """``"x.nii.gz"`` -> ``"x"``; ``None`` for a file that is not NIfTI."""
    for ending in NIFTI_ENDINGS:
        if name.endswith(ending):
            return name[: -len(ending)]
    return None


def copy_nifti(src: Path, dst: Path) -> None:
    """Copy a NIfTI file to ``dst`` (``.nii.gz``): bytes as they are for ``.nii.gz``, recompressed otherwise.

    nibabel, not SimpleITK, re-writes ``.nii`` files: SimpleITK's reader turns NaN into 0 silently, and the
    verifier must still see them.
    """
    if src.name.endswith(".nii.gz"):
        shutil.copyfile(src, dst)
    else:
        nib.save(nib.load(str(src)), str(dst))
