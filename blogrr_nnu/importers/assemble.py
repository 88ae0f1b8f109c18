"""BraTS tumour cases + a healthy collection + reports -> one raw dataset, written atomically and verified.

The dataset is assembled in a hidden sibling folder, verified there with
:func:`blogrr_nnu.verify.verify_dataset`, and renamed into place only when verification finds no
error: a failed or killed conversion leaves nothing half written.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from blogrr_nnu import paths
from blogrr_nnu.channels import canonical_name
from blogrr_nnu.image_io import publish_folder
from blogrr_nnu.importers import brats
from blogrr_nnu.importers.files import ConversionError, SourceCase, copy_nifti
from blogrr_nnu.importers.healthy import find_healthy_cases, write_healthy_case
from blogrr_nnu.importers.reports import load_reports
from blogrr_nnu.parallel import process_pool
from blogrr_nnu.verify import VerificationResult, verify_dataset

logger = logging.getLogger(__name__)

MISSING_REPORTS = ("error", "test", "skip")


@dataclass
class ConversionRequest:
    """What to convert and how (the options of ``blogrr_convert_brats``).

    Attributes:
        brats_dir: folder with BraTS case folders (either naming).
        healthy_dir: folder with the healthy scans.
        healthy_patterns: healthy channel name -> file pattern (:mod:`blogrr_nnu.importers.healthy`).
        dataset_id, name: the new ``DatasetXXX_Name``.
        reports: folder / CSV / JSON of reports (``None``: no reports; every case then needs
            ``missing_reports="test"``).
        test_fraction: share of the tumour cases (with reports) held out as test cases.
        test_cases: explicit test case ids (overrides ``test_fraction``).
        missing_reports: tumour cases without a report: ``"error"``, ``"test"`` (held out) or ``"skip"``.
        brain_extraction: brain-extract the healthy scans (deepbet, on ``bet_channel``).
        bet_channel: healthy channel the mask is computed on (default: the one named T1, else the first).
        resample_healthy: resample healthy channels onto the first channel's grid.
        skip_incomplete: leave out healthy cases that lack a channel.
        seed: seed of the test split.
        num_processes: worker processes for the healthy scans.
        overwrite: replace an existing dataset folder.
        raw: raw root (default: :func:`blogrr_nnu.paths.raw_root`).
        device: brain-extraction device (default: cuda when available).
    """

    brats_dir: Path
    healthy_dir: Path
    healthy_patterns: dict[str, str]
    dataset_id: int
    name: str = "BraTS"
    reports: Path | None = None
    test_fraction: float = 0.2
    test_cases: list[str] | None = None
    missing_reports: str = "error"
    brain_extraction: bool = False
    bet_channel: str | None = None
    resample_healthy: bool = False
    skip_incomplete: bool = False
    seed: int = 0
    num_processes: int = 1
    overwrite: bool = False
    raw: str | None = None
    device: str | None = None


@dataclass
class ConversionResult:
    """The written dataset and what went into it."""

    folder: Path
    verification: VerificationResult
    counts: dict[str, int] = field(default_factory=dict)
    test_cases: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def split_tumour_cases(ids: list[str], reports: dict[str, str], *, test_fraction: float = 0.2,
                       test_cases: list[str] | None = None, missing_reports: str = "error", seed: int = 0
                       ) -> tuple[list[str], list[str], list[str]]:
    """Training and test tumour cases; training cases all have a report.

    Returns:
        ``(training ids, test ids, left-out ids)``, each sorted. Same ids and seed, same split.

    Raises:
        ConversionError: cases without a report under ``missing_reports="error"``, unknown test ids,
            a fraction outside [0, 1), or no training case left.
    """
    if missing_reports not in MISSING_REPORTS:
        raise ConversionError(f"--missing_reports must be one of {', '.join(MISSING_REPORTS)}, got {missing_reports!r}")
    if not 0.0 <= test_fraction < 1.0:
        raise ConversionError(f"--test_fraction must be in [0, 1), got {test_fraction}")
    ids = sorted(ids)
    no_report = [c for c in ids if not reports.get(c, "").strip()]
    if no_report and missing_reports == "error":
        raise ConversionError(f"{len(no_report)} tumour case(s) have no report (e.g. {', '.join(no_report[:3])}): add "
                              "them, or pass --missing_reports test (hold them out) or skip")
    skipped = no_report if missing_reports == "skip" else []
    forced_test = no_report if missing_reports == "test" else []
    pool = [c for c in ids if c not in no_report]
    if test_cases is not None:
        unknown = sorted(set(test_cases) - set(ids))
        if unknown:
            raise ConversionError(f"--test_cases {', '.join(unknown[:3])}: not among the BraTS cases; check the ids")
        test = sorted(set(test_cases) | set(forced_test))
    else:
        order = np.random.default_rng(seed).permutation(len(pool))
        test = sorted({pool[i] for i in order[: int(round(test_fraction * len(pool)))]} | set(forced_test))
    train = [c for c in pool if c not in test]
    if not train:
        raise ConversionError("no tumour training case left (every case is a test case or has no report); "
                              "lower --test_fraction or add reports")
    return train, test, skipped


def _bet_channel(names: list[str], wanted: str | None) -> str:
    if wanted is not None:
        hits = [n for n in names if canonical_name(n).lower() == canonical_name(wanted).lower()]
        if not hits:
            raise ConversionError(f"--bet_channel {wanted}: not a healthy channel ({', '.join(names)})")
        return hits[0]
    return next((n for n in names if canonical_name(n) == "T1"), names[0])


_EXTRACTOR = None  # one deepbet per worker process


def _healthy_job(args: tuple) -> tuple[str, dict]:
    global _EXTRACTOR
    case, out_files, resample, bet, bet_channel, device, threads = args
    if bet and _EXTRACTOR is None:
        import torch

        from blogrr_nnu.brain_extraction import BrainExtractor

        if threads:
            torch.set_num_threads(threads)
        _EXTRACTOR = BrainExtractor(device=device)
    info = write_healthy_case(case, out_files, resample=resample, brain_extractor=_EXTRACTOR if bet else None,
                              bet_channel=bet_channel)
    return case.case_id, info


def _write_tumour_case(tmp: Path, case: SourceCase, split: str, report: str | None) -> None:
    images, labels, reports = ("imagesTrTumor", "labelsTrTumor", "reportsTr") if split == "tumor" else (
        "imagesTs", "labelsTs", "reportsTs")
    for c, name in enumerate(brats.CHANNELS):
        copy_nifti(case.images[name], tmp / images / f"{case.case_id}_{c:04d}.nii.gz")
    if case.label is not None:
        (tmp / labels).mkdir(exist_ok=True)
        brats.whole_tumour(case.label).to_filename(str(tmp / labels / f"{case.case_id}.nii.gz"))
    if report is not None and report.strip():
        (tmp / reports).mkdir(exist_ok=True)
        (tmp / reports / f"{case.case_id}.txt").write_text(report, encoding="utf-8")


def _healthy_names(patterns: dict[str, str]) -> tuple[list[str], bool]:
    """Healthy channel order, and whether it equals the BraTS channels (then stored in their order)."""
    names = list(patterns)
    keys = {canonical_name(n).lower() for n in names}
    if keys == {c.lower() for c in brats.CHANNELS} and len(names) == len(brats.CHANNELS):
        by_key = {canonical_name(n).lower(): n for n in names}
        return [by_key[c.lower()] for c in brats.CHANNELS], True
    return names, False


def convert_dataset(req: ConversionRequest, progress: bool = True) -> ConversionResult:
    """Convert, verify and publish the dataset described by ``req``.

    Raises:
        ConversionError: bad input (one line naming the file and the fix).
        BrainExtractionUnavailable: brain extraction asked for but deepbet is missing.
        blogrr_nnu.verify.DatasetVerificationError: the assembled dataset fails verification (nothing
            is left on disk; the message lists the problems).
    """
    if req.brain_extraction:
        from blogrr_nnu.brain_extraction import require_tool

        require_tool()  # one line before any work when deepbet is missing
    tumour = brats.find_brats_cases(req.brats_dir)
    healthy = find_healthy_cases(req.healthy_dir, req.healthy_patterns, skip_incomplete=req.skip_incomplete)
    clash = sorted({c.case_id for c in tumour} & {c.case_id for c in healthy})
    if clash:
        raise ConversionError(f"{req.healthy_dir}: healthy case id {clash[0]!r} is also a BraTS case; rename one")
    reports = load_reports(req.reports) if req.reports is not None else {}
    unused = sorted(set(reports) - {c.case_id for c in tumour})
    if unused:
        logger.warning("%d report(s) name no BraTS case (e.g. %s); ignored", len(unused), ", ".join(unused[:3]))
    train, test, skipped = split_tumour_cases([c.case_id for c in tumour], reports, test_fraction=req.test_fraction,
                                              test_cases=req.test_cases, missing_reports=req.missing_reports,
                                              seed=req.seed)
    h_names, same_as_tumour = _healthy_names(req.healthy_patterns)
    for case in healthy:
        case.images = {n: case.images[n] for n in h_names}
    bet_channel = None
    if req.brain_extraction:
        bet_channel = _bet_channel(h_names, req.bet_channel)

    base = paths.raw_root(req.raw)
    final = base / paths.dataset_folder_name(req.dataset_id, req.name)
    if final.exists() and not req.overwrite:
        raise ConversionError(f"{final}: already exists; pass --overwrite or choose another -d/-n")
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for sub in ("imagesTr", "imagesTrTumor") + (("imagesTs",) if test else ()):
            (tmp / sub).mkdir(parents=True)
        by_id = {c.case_id: c for c in tumour}
        for cid in tqdm(train + test, desc="tumour cases", disable=not progress):
            _write_tumour_case(tmp, by_id[cid], "tumor" if cid in train else "test", reports.get(cid))
        threads = 1 if req.num_processes > 1 else 0
        jobs = [(c, [tmp / "imagesTr" / f"{c.case_id}_{i:04d}.nii.gz" for i in range(len(h_names))],
                 req.resample_healthy, req.brain_extraction, bet_channel, req.device, threads) for c in healthy]
        if req.num_processes > 1 and len(jobs) > 1:
            with process_pool(req.num_processes) as pool:
                infos = dict(tqdm(pool.map(_healthy_job, jobs), total=len(jobs), desc="healthy cases",
                                  disable=not progress))
        else:
            infos = dict(_healthy_job(j) for j in tqdm(jobs, desc="healthy cases", disable=not progress))
        dj = _dataset_json(req, h_names, same_as_tumour, len(healthy), train, test, bet_channel, infos)
        (tmp / "dataset.json").write_text(json.dumps(dj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        verification = verify_dataset(tmp, req.num_processes)
        if not verification.ok:
            from blogrr_nnu.verify import DatasetVerificationError

            raise DatasetVerificationError(verification.format().replace(str(tmp), str(final))
                                           .replace(tmp.name, final.name))
        publish_folder(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    verification.folder = final
    verification.problems = [type(p)(p.path.replace(str(tmp), str(final)), p.problem,
                                     p.fix.replace(tmp.name, final.name), p.severity) for p in verification.problems]
    counts = {"healthy": len(healthy), "tumor": len(train), "test": len(test)}
    logger.info("wrote %s: %s", final, counts)
    return ConversionResult(final, verification, counts, test, skipped)


def _dataset_json(req: ConversionRequest, h_names: list[str], same_as_tumour: bool, n_healthy: int,
                  train: list[str], test: list[str], bet_channel: str | None, infos: dict) -> dict:
    dj = {
        "name": req.name,
        "description": "BraTS tumour cases (whole tumour = every sub-region) and healthy scans, converted by "
                       "blogrr_convert_brats (docs/data_format.md, 'Bringing your own data').",
        "channel_names": {str(i): c for i, c in enumerate(brats.CHANNELS)},
        "labels": {"background": 0, "tumor": 1},
        "file_ending": ".nii.gz",
        "numHealthy": n_healthy,
        "numTumor": len(train),
        "numTest": len(test),
    }
    if not same_as_tumour:
        dj["channel_names_healthy"] = {str(i): n for i, n in enumerate(h_names)}
    brain_ml = [v["brain_ml"] for v in infos.values() if "brain_ml" in v]
    dj["conversion"] = {
        "tool": "blogrr_convert_brats",
        "brats_source": str(Path(req.brats_dir).resolve()),
        "healthy_source": str(Path(req.healthy_dir).resolve()),
        "healthy_patterns": dict(req.healthy_patterns),
        "reports_source": None if req.reports is None else str(Path(req.reports).resolve()),
        "test_cases": list(test),
        "seed": int(req.seed),
        "healthy_resampled": bool(req.resample_healthy),
        "brain_extraction": None if bet_channel is None else {
            "tool": "deepbet", "channel": bet_channel,
            "brain_ml_min": min(brain_ml) if brain_ml else None, "brain_ml_max": max(brain_ml) if brain_ml else None},
    }
    return dj
