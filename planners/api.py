"""``plan_and_preprocess``: verification -> fingerprint (+ registration) -> plans -> preprocessed data."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from blogrr_nnu.channels import check_previous_selection, resolve_channels
from blogrr_nnu.image_io import atomic_write
from blogrr_nnu.paths import preprocessed_root, raw_root, resolve_dataset
from blogrr_nnu.planners.fingerprint import extract_fingerprint
from blogrr_nnu.planners.planner import PLANS_NAME, BlogrrPlanner
from blogrr_nnu.planners.preprocessing import ConfigTarget, preprocess_dataset
from blogrr_nnu.verify import require_valid

logger = logging.getLogger(__name__)

GPU_CONFIGS = ("2d", "3d_fullres", "3d_lowres")
CPU_CONFIGS = ("3d_cpu", "2d_cpu")


def default_configurations() -> list[str]:
    """nnU-Net's set on a machine with a CUDA GPU, the CPU variants otherwise."""
    import torch

    return list(GPU_CONFIGS if torch.cuda.is_available() else CPU_CONFIGS)


def load_plans(preprocessed_folder: str | Path) -> dict:
    """Read ``blogrr_plans.json`` of a preprocessed dataset folder."""
    path = Path(preprocessed_folder) / f"{PLANS_NAME}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `blogrr_plan_and_preprocess -d {Path(preprocessed_folder).name}` first")
    return json.loads(path.read_text())


def spacing_xyz(plans: dict, configuration: str) -> tuple[float, float, float]:
    """The configuration's voxel spacing along template X, Y, Z."""
    stored = plans["configurations"][configuration]["spacing_3d"]
    return tuple(float(stored[i]) for i in plans["transpose_backward"])


def plan_and_preprocess(dataset: str | int, configurations: list[str] | None = None, *, num_processes: int = 1,
                        gpu_memory_target_gb: float = 8.0, overwrite: bool = False, raw: str | None = None,
                        preprocessed: str | None = None, seed: int = 0, channels: list[str] | None = None,
                        fusion_margin_mm: float | None = None) -> Path:
    """Run the whole first stage; returns the dataset's preprocessed folder.

    Args:
        dataset: id, folder name or name of a raw dataset.
        configurations: which configurations to preprocess (default: :func:`default_configurations`);
            all configurations are always planned.
        num_processes: worker processes.
        gpu_memory_target_gb: memory target of the GPU configurations.
        overwrite: redo registrations and preprocessed cases that exist.
        raw, preprocessed: root folders (default: environment, see :mod:`blogrr_nnu.paths`).
        seed: registration sampling seed.
        channels: channel names the model uses (``None``: all; needed when healthy and tumour scans
            have different channels, see :mod:`blogrr_nnu.channels`); stored as ``plans["channels"]``.
        fusion_margin_mm: growth of the report region for the fused pseudo-label (default
            :data:`blogrr_nnu.gmm.DEFAULT_FUSION_MARGIN_MM`; docs/pseudo_labels.md says how it was chosen).

    Raises:
        DatasetVerificationError: the raw dataset has errors (nothing is written).
        ValueError: an unknown configuration was asked for; a channel choice that does not fit
            (:class:`~blogrr_nnu.channels.ChannelSelectionError`).
    """
    raw_folder = resolve_dataset(dataset, raw_root(raw))
    result = require_valid(raw_folder, num_processes)  # nothing is written before this passes
    selection = resolve_channels(result.dataset_json, channels, raw_folder / "dataset.json")
    dj = selection.model_dataset_json(result.dataset_json)  # what the preprocessed data hold
    out = preprocessed_root(preprocessed) / raw_folder.name
    check_previous_selection(out / f"{PLANS_NAME}.json", selection, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "dataset.json", lambda tmp: Path(tmp).write_text(json.dumps(dj, indent=1)))

    cases = {role: [selection.select(c) for c in cs] for role, cs in result.cases.items()}
    # Test cases (imagesTs/, labelsTs/) are never read here: planning, preprocessing and every pseudo-label see
    # training cases only, so no training or pseudo-labelling code path can reach a test label. The predictor
    # and the benchmark read test scans from the raw folder.
    train = cases["healthy"] + cases["tumor"]
    fingerprint = extract_fingerprint(train, dj["channel_names"], out / "registration",
                                      out / "dataset_fingerprint.json", num_processes=num_processes, seed=seed,
                                      overwrite=overwrite)
    planner = BlogrrPlanner(raw_folder.name, dj, fingerprint, out, gpu_memory_target_gb)
    plans = planner.plan_experiment()
    plans["channels"] = selection.to_dict()  # training reads the data; prediction reads these input files
    from blogrr_nnu.gmm import DEFAULT_FUSION_MARGIN_MM

    margin = DEFAULT_FUSION_MARGIN_MM if fusion_margin_mm is None else float(fusion_margin_mm)
    plans["fusion_margin_mm"] = margin  # what the fused pseudo-labels were made with (blogrr_pseudo_labels reads it)
    planner.save_plans(plans)

    wanted = configurations or default_configurations()
    unknown = [c for c in wanted if c not in plans["configurations"]]
    if unknown:
        raise ValueError(f"unknown configuration(s) {', '.join(unknown)}; planned: {', '.join(plans['configurations'])}")
    targets = [ConfigTarget(c, out / plans["configurations"][c]["data_identifier"], spacing_xyz(plans, c),
                            list(plans["configurations"][c]["patch_size"])) for c in wanted]
    registrations = {c.case_id: json.loads((out / "registration" / f"{c.case_id}.json").read_text())
                     for c in train}
    status = preprocess_dataset(train, registrations, targets, plans["transpose_forward"],
                                num_processes=num_processes, overwrite=overwrite)
    for t in targets:
        remove_test_cases(t.folder)
    from blogrr_nnu.pseudo_labels import add_image_pseudo_labels


    for t in targets:  # second pass: needs every healthy case of the configuration (blogrr_nnu/pseudo_labels.py)
        add_image_pseudo_labels(t.folder, t.patch_size, num_processes=num_processes, overwrite=overwrite, seed=seed,
                                fusion_margin_mm=margin)
    done = sum(v == "done" for s in status.values() for v in s.values() if isinstance(v, str))
    logger.info("preprocessed %d case-configuration(s) into %s", done, out)
    return out


def remove_test_cases(folder: Path) -> list[str]:
    """Delete test cases that earlier versions preprocessed (with their labels) into a configuration folder.

    Returns:
        The removed case ids (logged): nothing that trains or makes pseudo-labels may find a test label.
    """
    from blogrr_nnu.splits import case_roles

    removed = [cid for cid, role in case_roles(folder).items() if role == "test"]
    for cid in removed:
        for suffix in ("_seg.b2nd", ".b2nd", ".pkl"):
            (Path(folder) / f"{cid}{suffix}").unlink(missing_ok=True)
    if removed:
        logger.warning("%s: removed %d test case(s) an older version had preprocessed (test cases are never "
                       "preprocessed now): %s", folder, len(removed), ", ".join(removed))
    return removed


def summary_table(plans: dict) -> str:
    """Plain-text table of the planned configurations."""
    rows = ["configuration | device | spacing (mm, stored order) | patch | batch | features | memory estimate (GB)",
            "---|---|---|---|---|---|---"]
    for name, c in plans["configurations"].items():
        feats = c["architecture"]["arch_kwargs"]["features_per_stage"]
        rows.append(f"{name} | {c['blogrr']['device_class']} | {np.round(c['spacing'], 2).tolist()} | "
                    f"{list(c['patch_size'])} | {c['batch_size']} | {feats[0]}-{feats[-1]} | "
                    f"{c['blogrr']['memory_estimate_gb']:.2f}")
    return "\n".join(rows)
