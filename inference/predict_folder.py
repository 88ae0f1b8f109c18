"""Predict a folder of raw cases: listing, checks, sharding, skipping, atomic outputs, failures.

Input: ``IN/<case>_<4-digit channel><file_ending>`` as in nnU-Net (the run's dataset.json says
the channels and the ending). Output per case:

- ``OUT/<case><file_ending>``: uint8 {0, 1} mask on the input's native grid (written last: its
  presence marks the case as done);
- with ``save_anomaly_maps``: ``OUT/anomaly_maps/<case>_anomaly<file_ending>`` (float32, native grid)
  and ``OUT/anomaly_maps/<case>.json`` (tau, voxel count, volume in ml, registration quality).

A case that cannot be read, lacks a channel or whose channels disagree is reported by name and
skipped; the others are still predicted.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from blogrr_nnu.channels import selection_from_plans
from blogrr_nnu.image_io import atomic_write, write_image
from blogrr_nnu.inference.predictor import BlogrrPredictor
from blogrr_nnu.planners.fingerprint import load_case_channels
from blogrr_nnu.raw_dataset import RawCase, image_name_pattern
from blogrr_nnu.verify import check_case

logger = logging.getLogger(__name__)

ANOMALY_DIR = "anomaly_maps"


@dataclass
class FolderResult:
    """What happened to each case."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def list_input_cases(in_dir: Path, channel_names: dict, file_ending: str, file_indices: list[int] | None = None,
                     n_input_channels: int | None = None) -> tuple[list[RawCase], dict[str, str]]:
    """Cases of an input folder, and problems that concern a whole case or a stray file.

    Args:
        channel_names: the model's channels ``{"0": name, ...}``.
        file_indices: per model channel, the ``_XXXX`` index it is read from (the plans' channel
            selection, :mod:`blogrr_nnu.channels`); ``None``: 0..N-1.
        n_input_channels: how many channels the dataset's scans have (default N); other channels below
            it are ignored, channels at or above it are reported.

    Returns:
        ``(cases with every channel, renumbered in model order; {case id or file name: problem})``.
    """
    in_dir = Path(in_dir)
    if not in_dir.is_dir():
        raise FileNotFoundError(f"{in_dir}: input folder not found")
    pattern = image_name_pattern(file_ending)
    cases: dict[str, RawCase] = {}
    problems: dict[str, str] = {}
    for f in sorted(in_dir.iterdir()):
        m = pattern.match(f.name)
        if not f.is_file():
            continue
        if not m:
            if f.name.endswith(file_ending):
                problems[f.name] = (f"{f}: name is not <case>_<4-digit channel>{file_ending}; rename it "
                                    f"(e.g. {f.name[:-len(file_ending)]}_0000{file_ending})")
            continue
        cases.setdefault(m["case"], RawCase(m["case"], "test")).images[int(m["channel"])] = f
    n = len(channel_names)
    selected = list(range(n)) if file_indices is None else list(file_indices)
    complete = []
    for cid, case in sorted(cases.items()):
        missing = [(k, c) for k, c in enumerate(selected) if c not in case.images]
        extra = sorted(c for c in case.images if c >= (n_input_channels or n))
        if missing:
            names = ", ".join(f"{c:04d} ({channel_names[str(k)]})" for k, c in missing)
            needed = ", ".join(f"{c:04d} ({channel_names[str(k)]})" for k, c in enumerate(selected))
            problems[cid] = f"{in_dir / cid}_*: missing channel(s) {names}; the model reads {needed}"
        elif extra:
            problems[cid] = (f"{case.images[extra[0]]}: channel {extra[0]:04d} is not one of the dataset's "
                             f"{n_input_channels or n} "
                             "channels; remove it or check the channel order")
        else:
            case.images = {k: case.images[c] for k, c in enumerate(selected)}
            complete.append(case)
    return complete, problems


def output_paths(out_dir: Path, case_id: str, file_ending: str) -> dict[str, Path]:
    """Where the outputs of one case go."""
    return {"mask": out_dir / f"{case_id}{file_ending}",
            "anomaly": out_dir / ANOMALY_DIR / f"{case_id}_anomaly{file_ending}",
            "json": out_dir / ANOMALY_DIR / f"{case_id}.json"}


def predict_folder(predictor: BlogrrPredictor, in_dir: str | Path, out_dir: str | Path, *,
                   save_anomaly_maps: bool = False, overwrite: bool = False, num_parts: int = 1, part_id: int = 0
                   ) -> FolderResult:
    """Predict every case of ``in_dir`` (this part of it) into ``out_dir``.

    Args:
        predictor: an initialised :class:`BlogrrPredictor`.
        in_dir: folder of ``<case>_<channel><file_ending>`` files.
        out_dir: output folder (created).
        save_anomaly_maps: also write anomaly maps and per-case JSON.
        overwrite: predict cases whose outputs exist again.
        num_parts, part_id: process every ``num_parts``-th case starting at ``part_id`` (sorted by id),
            so that several processes or machines share a folder as with nnU-Net.

    Returns:
        A :class:`FolderResult`; cases that failed carry a one-line reason.
    """
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise ValueError(f"need num_parts >= 1 and 0 <= part_id < num_parts, got {num_parts}, {part_id}")
    dj = predictor.dataset_json
    ending = dj["file_ending"]
    selection = selection_from_plans(predictor.plans_manager.plans, dj)
    cases, problems = list_input_cases(Path(in_dir), dj["channel_names"], ending, list(selection.tumor_indices),
                                       len(selection.tumor_channel_names))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = FolderResult()
    names = sorted([c.case_id for c in cases] + [k for k in problems])[part_id::num_parts]
    mine = set(names)
    for key, problem in problems.items():
        if key in mine:
            result.failed[key] = problem
    todo = [c for c in cases if c.case_id in mine]
    if not todo and not result.failed:
        logger.warning("%s: no input case for part %d of %d", in_dir, part_id, num_parts)
    for case in tqdm(todo, desc="predicting", disable=not predictor.allow_tqdm):
        paths = output_paths(out_dir, case.case_id, ending)
        wanted = [paths["mask"]] + ([paths["anomaly"], paths["json"]] if save_anomaly_maps else [])
        if not overwrite and all(p.is_file() for p in wanted):
            result.skipped.append(case.case_id)
            continue
        t0 = time.perf_counter()
        errors = [p for p in check_case(case, len(dj["channel_names"]), ending) if p.severity == "error"]
        if errors:
            result.failed[case.case_id] = errors[0].line() + (f" (+{len(errors) - 1} more)" if len(errors) > 1 else "")
            continue
        try:
            data, geometry = load_case_channels(case)
            pred = predictor.predict_case(data, geometry)
        except Exception as exc:  # noqa: BLE001 - one bad case must not stop the others; the trace is logged
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            result.failed[case.case_id] = f"{case.images[0]}: prediction failed ({type(exc).__name__}: {first})"
            logger.exception("case %s failed", case.case_id)
            continue
        if save_anomaly_maps:
            write_image(paths["anomaly"], pred.anomaly_map, geometry)
            info = {"case_id": case.case_id, **pred.info, "input_files": [str(p) for p in case.image_files()]}
            atomic_write(paths["json"], lambda tmp, info=info: Path(tmp).write_text(json.dumps(info, indent=1)))
        write_image(paths["mask"], pred.mask.astype(np.uint8), geometry)  # last: marks the case as done
        result.done.append(case.case_id)
        result.seconds[case.case_id] = time.perf_counter() - t0
    return result
