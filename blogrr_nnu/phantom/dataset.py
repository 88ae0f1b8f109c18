"""Write the demo raw dataset (DESIGN.md section 3) from phantom cases.

The dataset is assembled in a hidden sibling folder and renamed into place at the end, so a killed
run leaves no half-written ``DatasetXXX_Name``. Cases are generated in worker processes (each case
depends only on the seed and its id, so the number of workers does not change a byte).
Images are written as int16 NIfTI (scanner-like; 0 outside the brain, >= 1 inside).
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import SimpleITK as sitk
from tqdm import tqdm

from blogrr_nnu import paths
from blogrr_nnu.image_io import atomic_write, publish_folder, write_image
from blogrr_nnu.phantom.cases import GENERATOR_VERSION, case_id, generate_case
from blogrr_nnu.phantom.contrast import CHANNELS
from blogrr_nnu.phantom.template import smoothing_for_spacing, template_model

logger = logging.getLogger(__name__)

DEFAULT_COUNTS = {"healthy": 24, "tumor": 24, "test": 12}
DEFAULT_SPACING = 2.0
DEFAULT_SEED = 0
FOLDERS = {"healthy": ("imagesTr", None, None), "tumor": ("imagesTrTumor", "labelsTrTumor", "reportsTr"),
           "test": ("imagesTs", "labelsTs", "reportsTs")}
META_FOLDER = "phantom_meta"
LICENCE = ("Synthetic phantom built from the deepmriprep MNI template, tissue maps and the Hammers atlas "
           "(Hammers et al. 2003, Gousias et al. 2008); these atlas data are for research use only.")


def _write_json(path: Path, obj: dict) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _write_case(args: tuple[Path, int, str, int, float]) -> dict:
    """Generate one case and write its files below ``folder``; returns its summary."""
    folder, seed, role, index, spacing = args
    case = generate_case(seed, role, index, spacing)
    img_dir, lab_dir, rep_dir = FOLDERS[role]
    for c in range(len(CHANNELS)):
        write_image(folder / img_dir / f"{case.case_id}_{c:04d}.nii.gz", case.images[c], case.geometry)
    if case.label is not None:
        write_image(folder / lab_dir / f"{case.case_id}.nii.gz", case.label, case.geometry)
        text = case.report
        atomic_write(folder / rep_dir / f"{case.case_id}.txt", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    _write_json(folder / META_FOLDER / f"{case.case_id}.json", case.meta)
    vol = None if case.meta["findings"] is None else case.meta["findings"]["volume_ml"]
    return {"case": case.case_id, "role": role, "lesion_ml": vol}


def _init_worker() -> None:
    # Two processes on two cores: one ITK thread each avoids oversubscription.
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def make_demo_dataset(root: str | os.PathLike | None = None, *, dataset_id: int = 501, name: str = "BlogrrDemo",
                      n_healthy: int = DEFAULT_COUNTS["healthy"], n_tumor: int = DEFAULT_COUNTS["tumor"],
                      n_test: int = DEFAULT_COUNTS["test"], spacing: float = DEFAULT_SPACING,
                      seed: int = DEFAULT_SEED, overwrite: bool = False, num_workers: int | None = None,
                      montage: bool = True, progress: bool = True) -> Path:
    """Generate the BraTS-like demo dataset ``DatasetXXX_Name`` below ``root``.

    Args:
        root: raw-data root (default :func:`blogrr_nnu.paths.raw_root`).
        dataset_id: 1..999.
        name: dataset name (letters, digits, ``_``).
        n_healthy: healthy training cases (``imagesTr``).
        n_tumor: tumour training cases with reports and labels (``imagesTrTumor`` etc.).
        n_test: held-out tumour cases (``imagesTs`` etc.).
        spacing: isotropic voxel size in mm (2 mm: ~85 x 102 x 86 voxels; 1 mm is 8x slower).
        seed: same seed, byte-identical files; another seed, other subjects.
        overwrite: replace an existing dataset folder of the same name.
        num_workers: worker processes (default: up to 2, one per core); never changes the output.
        montage: write ``montage.png`` beside the data.
        progress: show a progress bar.

    Returns:
        The dataset folder.

    Raises:
        FileExistsError: the folder exists and ``overwrite`` is False.
        ValueError: invalid counts, spacing or name.

    Example:
        >>> make_demo_dataset("/tmp/raw", n_healthy=2, n_tumor=2, n_test=1, spacing=4.0)  # doctest: +SKIP
        PosixPath('/tmp/raw/Dataset501_BlogrrDemo')
    """
    for key, n in (("n_healthy", n_healthy), ("n_tumor", n_tumor), ("n_test", n_test)):
        if int(n) != n or n < 0 or n > 999:
            raise ValueError(f"{key} must be an integer 0..999, got {n}")
    if n_healthy + n_tumor == 0:
        raise ValueError("the dataset needs at least one training case (n_healthy or n_tumor > 0)")
    if not 0.5 <= float(spacing) <= 8.0:
        raise ValueError(f"spacing must be between 0.5 and 8 mm, got {spacing}")
    base = paths.raw_root(root)
    final = base / paths.dataset_folder_name(dataset_id, name)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists: pass overwrite=True (--overwrite) or choose another id/name")
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        jobs = [(tmp, int(seed), role, i, float(spacing))
                for role, n in (("healthy", n_healthy), ("tumor", n_tumor), ("test", n_test)) for i in range(n)]
        for role in ("healthy", "tumor", "test"):
            for sub in FOLDERS[role]:
                if sub and (role == "healthy" or (n_tumor if role == "tumor" else n_test)):
                    (tmp / sub).mkdir(exist_ok=True)
        (tmp / META_FOLDER).mkdir()
        workers = num_workers if num_workers is not None else min(2, os.cpu_count() or 1, len(jobs))
        bar = tqdm(total=len(jobs), desc="demo cases", unit="case", disable=not progress)
        summaries = []
        if workers <= 1:
            for job in jobs:
                summaries.append(_write_case(job))
                bar.update()
        else:
            # Fork (as nnU-Net's own preprocessing does) so the children inherit the template model
            # built here once, and so no caller needs an ``if __name__ == "__main__"`` guard.
            template_model(smoothing_for_spacing(float(spacing)))
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
                for s in pool.map(_write_case, jobs, chunksize=1):
                    summaries.append(s)
                    bar.update()
        bar.close()
        _write_json(tmp / "dataset.json", _dataset_json(name, n_healthy, n_tumor, n_test, spacing, seed, summaries))
        if montage:
            from blogrr_nnu.phantom.montage import write_montage
            write_montage(tmp, tmp / "montage.png", title=final.name)
        publish_folder(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote %s (%d healthy, %d tumour, %d test)", final, n_healthy, n_tumor, n_test)
    return final


def _dataset_json(name: str, n_healthy: int, n_tumor: int, n_test: int, spacing: float, seed: int,
                  summaries: list[dict]) -> dict:
    vols = [s["lesion_ml"] for s in summaries if s["lesion_ml"] is not None]
    return {
        "name": name,
        "description": ("BraTS-like phantom on real anatomy: healthy and tumour subjects synthesised from the "
                        "deepmriprep MNI template (T1, T2, FLAIR), whole-tumour labels and generated radiology "
                        "reports. Made by blogrr_make_demo_dataset; see docs/demo_dataset.md."),
        "channel_names": {str(i): ch for i, ch in enumerate(CHANNELS)},
        "labels": {"background": 0, "tumor": 1},
        "file_ending": ".nii.gz",
        "numHealthy": int(n_healthy),
        "numTumor": int(n_tumor),
        "numTest": int(n_test),
        "licence": LICENCE,
        "reference": "blogrr-nnu phantom generator (docs/demo_dataset.md)",
        "phantom": {"seed": int(seed), "spacing": float(spacing), "generator_version": GENERATOR_VERSION,
                    "image_dtype": "int16", "lesion_ml_min": min(vols) if vols else None,
                    "lesion_ml_max": max(vols) if vols else None},
    }


def case_ids(role: str, n: int) -> list[str]:
    """Ids of the first ``n`` cases of ``role``."""
    return [case_id(role, i) for i in range(n)]
