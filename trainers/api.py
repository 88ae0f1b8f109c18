"""``train``: build a trainer from the plans (classes, not names), resume, override, run; DDP launch."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from blogrr_nnu.image_io import atomic_write
from blogrr_nnu.paths import preprocessed_root, resolve_dataset
from blogrr_nnu.planners.api import load_plans
from blogrr_nnu.networks import THRESHOLD_MODELS
from blogrr_nnu.trainers.base_trainer import BaseTrainer
from blogrr_nnu.trainers.blogrr_trainer import BlogrrTrainer, THRESHOLD_INPUTS
from blogrr_nnu.trainers.cgc_trainer import CGCTrainer
from blogrr_nnu.trainers.reconstruction_trainer import DAETrainer

logger = logging.getLogger(__name__)

TRAINERS = {"blogrr": BlogrrTrainer, "dae": DAETrainer, "cgc": CGCTrainer}
# The maps each trainer uses unless told (``blogrr_train --maps``): BLOGRR on normative maps (minus the healthy
# training cases' mean map; better on every demo seed, docs/benchmark.md), the DAE baseline on plain maps, as published.
DEFAULT_NORMATIVE = {"blogrr": True, "dae": False}


def default_configuration(device: torch.device) -> str:
    """3d_fullres on a GPU, the CPU variant 3d_cpu otherwise."""
    return "3d_fullres" if device.type in ("cuda", "mps") else "3d_cpu"


def variant_class(cls: type, threshold_input: str | None = None, pseudo_label: str | None = None,
                  threshold_per_case: bool = False, threshold_model: str | None = None, normative: bool = False) -> type:
    """The trainer class for a variant; each variant gets its own class name, hence its own run folder.

    ``threshold_model="reference"`` -> ``...ReferenceT`` (the reference's CNN threshold network, which then sees
    the image only, as in the reference, unless ``threshold_input`` says otherwise); ``"stats"`` -> ``...StatsT``
    (the quantile map T), ``"contrast"`` -> ``...ContrastT`` (only where it is not the class's default);
    ``threshold_input="image"`` -> ``...ImageOnlyT``; ``pseudo_label="gmm"`` / ``"fused"`` -> ``...GMMTarget`` /
    ``...FusedTarget`` (the upper loop's target; ``"report"`` is the default); ``threshold_per_case`` (2D
    configurations) -> ``...PerCaseT``; ``normative`` (maps minus the healthy training cases' mean map) ->
    ``...Normative``.
    """
    from blogrr_nnu.pseudo_labels import SOURCES

    attrs, name = {}, cls.__name__
    default_input = getattr(cls, "threshold_input", None)
    if threshold_model is not None and threshold_model != getattr(cls, "threshold_model", threshold_model):
        attrs["threshold_model"] = threshold_model
        name += {"reference": "ReferenceT", "stats": "StatsT", "contrast": "ContrastT"}[threshold_model]
        if threshold_model == "reference":  # the reference's T sees the image only: that is ReferenceT's default
            default_input = attrs["threshold_input"] = "image"
    if threshold_input is not None and threshold_input != default_input:
        attrs["threshold_input"] = threshold_input
        name += "ImageOnlyT" if threshold_input == "image" else "ImageAnomalyT"
    if pseudo_label is not None:
        if pseudo_label not in SOURCES:
            raise ValueError(f"pseudo_label must be one of {', '.join(SOURCES)}, got {pseudo_label!r}")
        if SOURCES[pseudo_label] != cls.upper_loop_target:
            attrs["upper_loop_target"] = SOURCES[pseudo_label]
            name += {"gmm": "GMMTarget", "fused": "FusedTarget", "report": "ReportTarget"}[pseudo_label]
    if threshold_per_case and not getattr(cls, "threshold_per_case_2d", False):
        attrs["threshold_per_case_2d"] = True
        name += "PerCaseT"
    if normative and not getattr(cls, "normative", False):
        attrs["normative"] = True
        name += "Normative"
    return type(name, (cls,), attrs) if attrs else cls


def trainer_class(trainer: str = "blogrr", *, normative: bool | None = None, **variant) -> type:
    """The class (hence the run folder) a ``blogrr_train`` call trains: :func:`variant_class` of ``TRAINERS[trainer]``
    with the trainer's default maps (:data:`DEFAULT_NORMATIVE`) unless ``normative`` says otherwise."""
    if normative is None:
        normative = DEFAULT_NORMATIVE.get(trainer, False)
    return variant_class(TRAINERS[trainer], normative=normative, **variant)


def build_trainer(dataset: str | int, fold: int | str, configuration: str | None = None, *, trainer: str = "blogrr",
                  device: str = "cpu", threshold_input: str | None = None, pseudo_label: str | None = None,
                  threshold_per_case: bool = False, threshold_model: str | None = None, epochs: int | None = None,
                  iters: int | None = None, upper_iters: int | None = None,
                  preprocessed: str | None = None, normative: bool | None = None) -> BaseTrainer:
    """Instantiate a trainer for a preprocessed dataset, with overrides applied.

    Raises:
        ValueError / FileNotFoundError: unknown trainer, configuration, fold or missing preprocessing.
    """
    if trainer not in TRAINERS:
        raise ValueError(f"unknown trainer {trainer!r}; choose one of {', '.join(TRAINERS)}")
    if threshold_input is not None and threshold_input not in THRESHOLD_INPUTS:
        raise ValueError(f"threshold_input must be one of {THRESHOLD_INPUTS}")
    if threshold_model is not None and threshold_model not in THRESHOLD_MODELS:
        raise ValueError(f"threshold_model must be one of {', '.join(THRESHOLD_MODELS)}, got {threshold_model!r}")
    if trainer != "blogrr" and (threshold_model or threshold_input):
        raise ValueError(f"--threshold_model / --threshold_input apply to the blogrr trainer, not {trainer!r}")
    if normative is not None and not hasattr(TRAINERS[trainer], "normative"):
        raise ValueError(f"--maps applies to the reconstruction trainers (blogrr, dae), not {trainer!r}")
    dev = torch.device(device)
    if preprocessed:
        os.environ["BLOGRR_preprocessed"] = str(Path(preprocessed).resolve())
    folder = resolve_dataset(dataset, preprocessed_root())
    plans = load_plans(folder)
    configuration = configuration or default_configuration(dev)
    if configuration not in plans["configurations"]:
        raise ValueError(f"configuration {configuration!r} is not in the plans ({', '.join(plans['configurations'])})")
    data_folder = folder / plans["configurations"][configuration]["data_identifier"]
    if not any(data_folder.glob("*.pkl")):
        raise FileNotFoundError(f"{data_folder} holds no preprocessed case: run `blogrr_plan_and_preprocess -d "
                                f"{folder.name} -c {configuration}` first")
    if fold != "all":
        fold = int(fold)
        if not 0 <= fold < 5:
            raise ValueError(f"fold must be 0-4 or 'all', got {fold}")
    dataset_json = json.loads((folder / "dataset.json").read_text())
    if threshold_per_case and len(plans["configurations"][configuration]["patch_size"]) != 2:
        raise ValueError(f"--threshold_per_case applies to 2D configurations; {configuration} is 3D and always "
                         "learns one threshold per case")
    if threshold_per_case and (threshold_model or getattr(TRAINERS[trainer], "threshold_model", None)) != "reference":
        raise ValueError("--threshold_per_case applies to the reference threshold model (--threshold_model reference); "
                         "the map models (contrast, the default, and stats) always give one threshold per case")
    if threshold_input is not None and (threshold_model or getattr(TRAINERS[trainer], "threshold_model", None)) != "reference":
        raise ValueError("--threshold_input applies to the reference threshold model (--threshold_model reference); "
                         "the map models (contrast, the default, and stats) see the anomaly map's statistics")
    cls = trainer_class(trainer, normative=normative, threshold_input=threshold_input, pseudo_label=pseudo_label,
                        threshold_per_case=threshold_per_case, threshold_model=threshold_model)
    tr = cls(plans, configuration, fold, dataset_json, dev)
    if epochs is not None:
        tr.num_epochs = int(epochs)
    if iters is not None:
        tr.num_iterations_per_epoch = int(iters)
    if upper_iters is not None:
        tr.num_upper_iterations_per_epoch = int(upper_iters)
    return tr


def write_run_config(tr: BaseTrainer, overrides: dict) -> Path:
    """The resolved configuration and the user's overrides, beside the checkpoints."""
    path = Path(tr.output_folder) / "run_config.json"
    cfg = {"trainer": type(tr).__name__, "configuration": tr.configuration_name, "fold": str(tr.fold),
           "device": str(tr.device), "num_epochs": tr.num_epochs, "num_iterations_per_epoch": tr.num_iterations_per_epoch,
           "num_upper_iterations_per_epoch": getattr(tr, "num_upper_iterations_per_epoch", None),
           "initial_lr": tr.initial_lr, "threshold_lr_factor": getattr(tr, "threshold_lr_factor", None),
           "weight_decay": tr.weight_decay,  # the threshold entries are None for trainers without a threshold network
           "threshold_model": getattr(tr, "threshold_model", None), "threshold_input": getattr(tr, "threshold_input", None),
           "upper_loop_target": tr.upper_loop_target, "normative": bool(getattr(tr, "normative", False)),
           "batch_size": tr.configuration_manager.batch_size, "patch_size": list(tr.configuration_manager.patch_size),
           "overrides": {k: v for k, v in overrides.items() if v is not None},
           "plans_configuration": tr.configuration_manager.configuration}
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(cfg, indent=1)))
    return path


def resume(tr: BaseTrainer) -> str | None:
    """Load the newest checkpoint for ``--c``: latest, else final; returns which (None = start fresh)."""
    for name in ("checkpoint_latest.pth", "checkpoint_final.pth"):
        path = Path(tr.output_folder) / name
        if path.is_file():
            tr.load_checkpoint(str(path))
            return name
    return None


def run(dataset, fold, configuration=None, *, continue_training=False, validation_only=False, **kw) -> BaseTrainer:
    """Build, optionally resume, and train (or only validate) one fold."""
    tr = build_trainer(dataset, fold, configuration, **kw)
    if tr.local_rank == 0:
        write_run_config(tr, {k: kw.get(k) for k in ("epochs", "iters", "upper_iters", "device", "threshold_input",
                                                       "pseudo_label", "threshold_model", "normative")})
    if continue_training or validation_only:
        which = resume(tr)
        if validation_only and which is None:
            raise FileNotFoundError(f"{tr.output_folder}: no checkpoint to validate; train first")
        logger.info("resumed from %s at epoch %d", which, tr.current_epoch) if which else logger.info("no checkpoint: starting fresh")
        plain = Path(str(tr.output_folder).replace("Normative__", "__"))  # the same variant on plain maps
        if (which is None and getattr(tr, "normative", False) and plain != Path(tr.output_folder)
                and (plain / "checkpoint_latest.pth").is_file()):
            logger.warning("%s holds an unfinished run on plain maps (the default until 2026-12-02); this run trains on "
                           "normative maps from scratch; to resume that one, add --maps plain", plain)
    if validation_only:
        best = Path(tr.output_folder) / "checkpoint_final.pth"
        if best.is_file():
            tr.load_checkpoint(str(best))
        tr.on_train_start()
        metrics = tr.run_validation()
        if tr.local_rank == 0:
            atomic_write(Path(tr.output_folder) / "validation.json", lambda tmp: Path(tmp).write_text(json.dumps(metrics, indent=1)))
        tr.validation_metrics = metrics
        return tr
    tr.run_training()
    return tr
