"""Dataset fingerprint: geometry, brain size, intensities and registration quality of every case.

nnU-Net's own extractor needs a label for every training case and crashes on all-zero labels
(DESIGN.md section 6); our healthy cases have none and our tumour labels may not exist. So the
fingerprint is computed here, registering each case to the MNI template on the way (the registration
is stored and reused by preprocessing). Healthy cases drive the intensity statistics: they define
what "normal" looks like.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from blogrr_nnu.image_io import atomic_write, read_image
from blogrr_nnu.parallel import process_pool
from blogrr_nnu.raw_dataset import RawCase
from blogrr_nnu.registration import register_to_template, transform_from_dict

logger = logging.getLogger(__name__)

PERCENTILES = (0.5, 25.0, 50.0, 75.0, 99.5)


def registration_channel(channel_names: dict[str, str]) -> int:
    """Channel registered to the T1 template: the one named T1 (any case), else 'T1...' (e.g. T1ce), else 0."""
    names = {int(k): v.strip().lower() for k, v in channel_names.items()}
    for test in (lambda n: n in ("t1", "t1w", "t1-weighted"), lambda n: n.startswith("t1")):
        hits = [k for k, n in sorted(names.items()) if test(n)]
        if hits:
            return hits[0]
    return 0


def load_case_channels(case: RawCase) -> tuple[np.ndarray, "object"]:
    """All channels of a case as ``(C, X, Y, Z)`` float32 and the geometry of channel 0."""
    arrays, geometry = [], None
    for path in case.image_files():
        arr, geo = read_image(path)
        geometry = geometry or geo
        arrays.append(arr.astype(np.float32))
    return np.stack(arrays), geometry


def template_axis_order(direction: tuple[float, ...], case_to_template_matrix: tuple[float, ...]) -> list[int]:
    """For each template axis X, Y, Z, the native voxel axis that runs most nearly along it.

    A sagittally acquired scan with 5 mm slices has its coarse axis along the template's X; the planner
    must see that anisotropy on X, not on whatever axis the file stores first.
    """
    rot = np.asarray(case_to_template_matrix).reshape(3, 3) @ np.asarray(direction).reshape(3, 3)
    weights = np.abs(rot)  # weights[t, n]: how much native axis n runs along template axis t
    order: list[int] = []
    for t in np.argsort(-weights.max(1)):  # most clear-cut template axis first
        n = max((n for n in range(3) if n not in order), key=lambda n: weights[t, n])
        order.append(int(n))
    result = [0, 0, 0]
    for t, n in zip(np.argsort(-weights.max(1)), order):
        result[int(t)] = n
    return result


def _intensity_stats(values: np.ndarray) -> dict:
    pct = np.percentile(values, PERCENTILES) if values.size else [0.0] * len(PERCENTILES)
    return {"mean": float(values.mean()) if values.size else 0.0, "std": float(values.std()) if values.size else 0.0,
            **{f"p{p:g}": float(v) for p, v in zip(PERCENTILES, pct)}}


def case_fingerprint(case: RawCase, reg_channel: int, registration_file: Path, seed: int = 0,
                     overwrite: bool = False) -> dict:
    """Fingerprint one case, registering it to the template unless ``registration_file`` exists.

    Returns:
        Per-case dict: spacing, shape, shape after cropping to the brain, brain volume (ml), per-channel
        intensity statistics inside the brain, registration quality.
    """
    data, geo = load_case_channels(case)
    brain = np.any(data != 0, axis=0)
    idx = np.argwhere(brain)
    crop_shape = (idx.max(0) - idx.min(0) + 1).tolist() if idx.size else list(geo.shape)
    if registration_file.is_file() and not overwrite:
        registration = json.loads(registration_file.read_text())
    else:
        result = register_to_template(data[reg_channel], geo, seed=seed)
        registration = result.to_dict()
        atomic_write(registration_file, lambda tmp: Path(tmp).write_text(json.dumps(registration, indent=1)))
    axes = template_axis_order(geo.direction, transform_from_dict(registration["case_to_template"]).GetMatrix())
    return {
        "case_id": case.case_id,
        "role": case.role,
        "spacing": list(geo.spacing),
        "shape": list(geo.shape),
        "shape_after_crop": crop_shape,
        # the same, reordered along the template's X, Y, Z axes (what the planner works with)
        "spacing_template_axes": [float(geo.spacing[i]) for i in axes],
        "shape_after_crop_template_axes": [int(crop_shape[i]) for i in axes],
        "brain_volume_ml": float(brain.sum() * np.prod(geo.spacing) / 1000.0),
        "intensity": [_intensity_stats(data[c][brain]) for c in range(data.shape[0])],
        "registration": {"metric": registration["metric"], "brain_dice": registration["brain_dice"]},
    }


def _one(args):
    return case_fingerprint(*args)


def extract_fingerprint(cases: list[RawCase], channel_names: dict[str, str], registration_dir: Path,
                        output_file: Path, *, num_processes: int = 1, seed: int = 0, overwrite: bool = False) -> dict:
    """Fingerprint a dataset and write it as human-readable JSON (atomically).

    Args:
        cases: healthy and tumour training cases (``plan_and_preprocess`` never passes test cases; any that
            are given stay out of the dataset-level statistics).
        channel_names: ``dataset.json['channel_names']``.
        registration_dir: where ``<case>.json`` registrations are written / reused.
        output_file: the fingerprint JSON.
        num_processes: worker processes.
        seed: seed of the registration metric sampling.
        overwrite: redo registrations that exist.

    Returns:
        The fingerprint dict (also written to ``output_file``).
    """
    reg_channel = registration_channel(channel_names)
    jobs = [(c, reg_channel, registration_dir / f"{c.case_id}.json", seed, overwrite) for c in cases]
    if num_processes > 1 and len(jobs) > 1:
        with process_pool(num_processes) as pool:
            per_case = list(tqdm(pool.map(_one, jobs), total=len(jobs), desc="fingerprint + registration"))
    else:
        per_case = [_one(j) for j in tqdm(jobs, desc="fingerprint + registration")]
    train = [c for c in per_case if c["role"] in ("healthy", "tumor")]
    healthy = [c for c in per_case if c["role"] == "healthy"] or train
    n_ch = len(channel_names)
    # nnU-Net's planner reads these keys; the intensity properties come from healthy cases only.
    fingerprint = {
        "spacings": [c["spacing_template_axes"] for c in train],
        "shapes_after_crop": [c["shape_after_crop_template_axes"] for c in train],
        "median_relative_size_after_cropping": float(np.median(
            [np.prod(c["shape_after_crop"]) / np.prod(c["shape"]) for c in train])),
        "foreground_intensity_properties_per_channel": {
            str(ch): {
                "mean": float(np.mean([c["intensity"][ch]["mean"] for c in healthy])),
                "std": float(np.mean([c["intensity"][ch]["std"] for c in healthy])),
                "percentile_00_5": float(np.median([c["intensity"][ch]["p0.5"] for c in healthy])),
                "percentile_99_5": float(np.median([c["intensity"][ch]["p99.5"] for c in healthy])),
                "median": float(np.median([c["intensity"][ch]["p50"] for c in healthy])),
                "min": float(np.min([c["intensity"][ch]["p0.5"] for c in healthy])),
                "max": float(np.max([c["intensity"][ch]["p99.5"] for c in healthy])),
            } for ch in range(n_ch)
        },
        "registration_channel": reg_channel,
        "registration_quality": {
            "brain_dice_min": float(min(c["registration"]["brain_dice"] for c in per_case)),
            "brain_dice_median": float(np.median([c["registration"]["brain_dice"] for c in per_case])),
        },
        "cases": per_case,
    }
    poor = [c["case_id"] for c in per_case if c["registration"]["brain_dice"] < 0.85]
    if poor:
        logger.warning("registration to the template looks poor (brain Dice < 0.85) for: %s", ", ".join(poor))
    atomic_write(output_file, lambda tmp: Path(tmp).write_text(json.dumps(fingerprint, indent=1)))
    return fingerprint
