"""Preprocessing: native case -> template-aligned, cropped, normalised arrays + pseudo-labels.

Per case and configuration, written in nnU-Net's Blosc2 format (``<case>.b2nd`` data
``(C, Z, X, Y)`` float32, ``<case>_seg.b2nd`` int8, ``<case>.pkl`` properties) so nnU-Net's data
loaders read it. The seg array holds several channels, named in the plans (``seg_channels``):

- ``brain``: 1 inside the brain (healthy cases need *some* mask: nnU-Net crashes on all-zero labels);
- ``pseudo_report``: the report's atlas regions (tumour cases with a report; 0 elsewhere);
- ``label``: ground truth where the raw dataset has it, **-1 where it has none**; evaluation only;
- ``pseudo_gmm``, ``pseudo_fused``: image-based and fused pseudo-labels (tumour and test cases), filled
  by a second pass once the healthy intensity model of the configuration exists (:mod:`blogrr_nnu.pseudo_labels`).

Writes are atomic per case: files go to ``.tmp/`` and are renamed into place, the ``.pkl`` last, so a
case counts as done exactly when its ``.pkl`` exists; a killed run leaves no half-written case.
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from blogrr_nnu.image_io import array_to_sitk, sitk_to_array
from blogrr_nnu.parallel import process_pool
from blogrr_nnu.planners.fingerprint import load_case_channels
from blogrr_nnu.raw_dataset import RawCase
from blogrr_nnu.registration import transform_from_dict
from blogrr_nnu.spatial import CaseSpace, make_case_space

logger = logging.getLogger(__name__)

# pseudo_gmm / pseudo_fused are filled after all cases are preprocessed (blogrr_nnu/pseudo_labels.py):
# they need the healthy intensity model of the whole configuration.
SEG_CHANNELS = ("brain", "pseudo_report", "label", "pseudo_gmm", "pseudo_fused")
NO_LABEL = -1


def robust_zscore(channel: np.ndarray, brain: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Normalise one channel inside the brain: (x - median) / (IQR / 1.349); 0 outside the brain.

    Median and IQR instead of mean and std so that a large tumour (bright on FLAIR) shifts the
    normalisation of its own case as little as possible.

    Returns:
        ``(normalised float32, center, scale)``.
    """
    values = channel[brain > 0]
    if values.size == 0:
        return np.zeros_like(channel, np.float32), 0.0, 1.0
    q25, q50, q75 = np.percentile(values, (25, 50, 75))
    scale = float((q75 - q25) / 1.349) or float(values.std()) or 1.0
    out = ((channel - q50) / scale).astype(np.float32)
    out[brain == 0] = 0
    return out, float(q50), scale


def prepare_case(data: np.ndarray, native, case_to_template, spacing_xyz, transpose_forward
                 ) -> tuple[CaseSpace, np.ndarray, np.ndarray, list[dict]]:
    """Native channels -> template-aligned, cropped, normalised arrays: the one path of training and prediction.

    Args:
        data: ``(C, X, Y, Z)`` native intensities, 0 outside the brain.
        native: the case's :class:`~blogrr_nnu.image_io.Geometry`.
        case_to_template: the case's affine registration to the template.
        spacing_xyz: the configuration's spacing along template X, Y, Z.
        transpose_forward: stored axis order (the plans' ``transpose_forward``).

    Returns:
        ``(space, image (C, *S) float32, brain (*S) uint8, normalisation per channel)``.
    """
    brain_native = np.any(data != 0, axis=0)
    space = make_case_space(native, case_to_template, tuple(spacing_xyz), brain_native, tuple(transpose_forward))
    brain = space.mask_to_training(brain_native)
    channels, norm = [], []
    for c in range(data.shape[0]):
        normed, center, scale = robust_zscore(space.image_to_training(data[c]), brain)
        channels.append(normed)
        norm.append({"center": center, "scale": scale})
    return space, np.stack(channels), brain, norm


def template_mask_to_training(mask: np.ndarray, mask_geometry, space: CaseSpace) -> np.ndarray:
    """A template-space mask (e.g. report regions on the Hammers grid) -> stored uint8 of ``space``.

    The training grid is template-aligned, so no case transform is involved: only resampling onto the
    configuration's grid (linear on the mask, >= 0.5) and the case's crop.
    """
    ref = space.grid.apply_to(sitk.Image([int(s) for s in space.grid.shape], sitk.sitkUInt8))
    img = array_to_sitk(np.asarray(mask, np.float32), mask_geometry)
    on_grid = sitk_to_array(sitk.Resample(img, ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    (x0, x1), (y0, y1), (z0, z1) = space.bbox
    cropped = on_grid[x0:x1, y0:y1, z0:z1]
    return (np.transpose(cropped, space.transpose_forward) >= 0.5).astype(np.uint8)


def report_pseudo_label(report_file: Path, space: CaseSpace) -> tuple[np.ndarray | None, dict]:
    """The report's atlas regions on the stored grid (``None`` when the report names no site)."""
    from blogrr_nnu.reports.masks import findings_to_mask, explain
    from blogrr_nnu.reports.parser import parse_report

    parsed = parse_report(report_file.read_text(encoding="utf-8"))
    mask, geometry = findings_to_mask(parsed)
    info = explain(parsed)
    if not mask.any():
        return None, info
    return template_mask_to_training(mask, geometry, space), info


@dataclass
class ConfigTarget:
    """One configuration to preprocess into."""

    name: str
    folder: Path
    spacing_xyz: tuple[float, float, float]  # template X, Y, Z
    patch_size: list[int]


def save_case_atomic(folder: Path, case_id: str, data: np.ndarray, seg: np.ndarray, props: dict, patch: list[int]) -> None:
    from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params, nnUNetDatasetBlosc2

    tmp = folder / ".tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    stem = tmp / f"{case_id}.{os.getpid()}"
    blocks, chunks = comp_blosc2_params(data.shape, patch, data.itemsize)
    blocks_s, chunks_s = comp_blosc2_params(seg.shape, patch, seg.itemsize)
    nnUNetDatasetBlosc2.save_case(data, seg, props, str(stem), chunks=chunks, blocks=blocks, chunks_seg=chunks_s,
                                  blocks_seg=blocks_s)
    os.replace(f"{stem}.b2nd", folder / f"{case_id}.b2nd")
    os.replace(f"{stem}_seg.b2nd", folder / f"{case_id}_seg.b2nd")
    os.replace(f"{stem}.pkl", folder / f"{case_id}.pkl")  # last: marks the case as done


def is_done(folder: Path, case_id: str) -> bool:
    """A case is done when all three files exist (the .pkl is renamed into place last)."""
    return all((folder / f"{case_id}{s}").is_file() for s in (".pkl", ".b2nd", "_seg.b2nd"))


def preprocess_case(case: RawCase, registration: dict, targets: list[ConfigTarget], transpose_forward: list[int],
                    overwrite: bool = False) -> dict:
    """Preprocess one case into every configuration in ``targets``.

    Returns:
        ``{config name: "done" | "skipped"}`` plus the report explanation under ``"report"`` when used.
    """
    todo = [t for t in targets if overwrite or not is_done(t.folder, case.case_id)]
    status: dict = {t.name: "skipped" for t in targets if t not in todo}
    if not todo:
        return status
    data, native = load_case_channels(case)
    label_native = None
    if case.label is not None:
        label_native = load_case_channels(RawCase(case.case_id, case.role, {0: case.label}))[0][0] > 0.5
    transform = transform_from_dict(registration["case_to_template"])
    for target in todo:
        space, image, brain, norm = prepare_case(data, native, transform, target.spacing_xyz, transpose_forward)
        seg = np.zeros((len(SEG_CHANNELS),) + brain.shape, np.int8)
        seg[0] = brain
        report_info = None
        if case.report is not None:
            pseudo, report_info = report_pseudo_label(case.report, space)
            if pseudo is not None:
                seg[1] = pseudo * brain
            else:
                logger.warning("%s: the report names no site the atlas knows; pseudo-label left empty", case.report)
        seg[2] = NO_LABEL if label_native is None else space.mask_to_training(label_native)
        props = {
            "case_id": case.case_id,
            "role": case.role,
            "seg_channels": list(SEG_CHANNELS),
            "has_label": label_native is not None,
            "has_report_pseudo_label": bool(seg[1].any()),
            "image_pseudo_labels": None,  # set by the second pass (blogrr_nnu.pseudo_labels)
            "case_space": space.to_dict(),
            "normalisation": norm,
            "spacing": [float(target.spacing_xyz[i]) for i in transpose_forward],
            "shape_after_cropping_and_before_resampling": list(space.cropped_shape),
            "class_locations": {},
            "report": report_info,
            "registration": {"metric": registration["metric"], "brain_dice": registration["brain_dice"]},
        }
        save_case_atomic(target.folder, case.case_id, image, seg, props, target.patch_size)
        status[target.name] = "done"
    return status


def _one(args):
    return args[0].case_id, preprocess_case(*args)


def preprocess_dataset(cases: list[RawCase], registrations: dict[str, dict], targets: list[ConfigTarget],
                       transpose_forward: list[int], *, num_processes: int = 1, overwrite: bool = False) -> dict:
    """Preprocess all cases (in parallel with ``num_processes``); returns per-case status."""
    for t in targets:
        t.folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(t.folder / ".tmp", ignore_errors=True)  # leftovers of a killed run
    jobs = [(c, registrations[c.case_id], targets, transpose_forward, overwrite) for c in cases]
    if num_processes > 1 and len(jobs) > 1:
        with process_pool(num_processes) as pool:
            results = dict(tqdm(pool.map(_one, jobs), total=len(jobs), desc="preprocessing"))
    else:
        results = dict(_one(j) for j in tqdm(jobs, desc="preprocessing"))
    for t in targets:
        shutil.rmtree(t.folder / ".tmp", ignore_errors=True)
    return results
