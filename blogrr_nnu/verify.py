"""Verification of a raw dataset (DESIGN.md section 3): every problem, with its file and its fix.

:func:`verify_dataset` reads headers and voxels but writes nothing. It collects *all* problems
instead of stopping at the first, so a user fixes a dataset in one pass. ``plan_and_preprocess``
calls the same function and refuses to write anything while an error remains.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from blogrr_nnu.channels import channels_differ, common_channels, role_channel_names
from blogrr_nnu.image_io import Geometry
from blogrr_nnu.parallel import process_pool
from blogrr_nnu.raw_dataset import (
    IGNORED_TOP_LEVEL,
    KNOWN_ENTRIES,
    ROLES,
    DatasetJsonError,
    RawCase,
    image_file,
    list_cases,
    load_dataset_json,
)

logger = logging.getLogger(__name__)

# A skull-stripped adult brain is ~1.0-1.7 l; a head with skull and scalp is 3-5 l. Anything
# non-zero over this volume is almost certainly not skull-stripped.
MAX_BRAIN_ML = 2500.0


@dataclass(frozen=True)
class Problem:
    """One finding of the verifier.

    Attributes:
        path: the file (or folder) concerned.
        problem: what is wrong.
        fix: what to do about it.
        severity: ``"error"`` (blocks preprocessing) or ``"warning"``.
    """

    path: str
    problem: str
    fix: str
    severity: str = "error"

    def line(self) -> str:
        """One line: ``ERROR path: problem -> fix``."""
        return f"{self.severity.upper()} {self.path}: {self.problem} -> {self.fix}"


@dataclass
class VerificationResult:
    """All problems of a dataset and the cases found (``None`` when dataset.json is unusable)."""

    folder: Path
    problems: list[Problem] = field(default_factory=list)
    cases: dict[str, list[RawCase]] | None = None
    dataset_json: dict | None = None

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors

    def format(self) -> str:
        """Human-readable report, one problem a line, errors first."""
        if not self.problems:
            return f"{self.folder}: OK"
        lines = [p.line() for p in sorted(self.problems, key=lambda p: (p.severity != "error", p.path))]
        head = f"{self.folder}: {len(self.errors)} error(s), {len(self.problems) - len(self.errors)} warning(s)"
        return "\n".join([head, *lines])


class DatasetVerificationError(ValueError):
    """Raised by :func:`require_valid` with the full report as message."""


def _read(path: Path) -> tuple[Geometry | None, np.ndarray | None, str | None]:
    """Header geometry (SimpleITK) and raw voxels (nibabel) of a file, or an error message.

    Voxels are read with nibabel on purpose: SimpleITK's NIfTI reader silently turns NaN and inf
    into 0 (measured with SimpleITK 2.5), which would hide exactly what we look for.
    """
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        data = np.asanyarray(nib.load(str(path)).dataobj)
    except Exception as exc:  # noqa: BLE001 - any reader failure means "not a readable image"
        msg = str(exc).strip().splitlines()
        return None, None, (msg[-1] if msg else type(exc).__name__)
    if reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 1 or data.ndim != 3:
        return None, data, (f"is {data.ndim}D (shape {tuple(data.shape)}), expected a scalar 3D image")
    geometry = Geometry(tuple(reader.GetSpacing()), tuple(reader.GetOrigin()), tuple(reader.GetDirection()),
                        tuple(int(s) for s in reader.GetSize()))
    return geometry, data, None


def _geometry_diff(geo: Geometry, ref: Geometry) -> str:
    """Which of shape, spacing, origin and direction differ, with both values."""
    parts = []
    for name in ("shape", "spacing", "origin", "direction"):
        a, b = getattr(geo, name), getattr(ref, name)
        if not np.allclose(a, b, atol=1e-3):
            parts.append(f"{name} {tuple(round(float(x), 4) for x in a)} vs {tuple(round(float(x), 4) for x in b)}")
    return "; ".join(parts)


def check_case(case: RawCase, n_channels: int, file_ending: str) -> list[Problem]:
    """Per-case checks that need voxel data (runs in a worker process)."""
    problems: list[Problem] = []
    ref_geo: Geometry | None = None
    ref_path: Path | None = None
    for channel in sorted(case.images):
        path = case.images[channel]
        geo, data, err = _read(path)
        if geo is None and data is None:
            problems.append(Problem(str(path), f"cannot be read as an image ({err})",
                                    f"re-export it as a valid {file_ending} file"))
            continue
        if geo is None:
            problems.append(Problem(str(path), err, "split 4D/multi-component files into one 3D file per channel"))
            continue
        if not np.issubdtype(data.dtype, np.number):
            problems.append(Problem(str(path), f"voxel type {data.dtype} is not numeric", "save as float32 or int16"))
            continue
        finite = np.isfinite(data)
        if not finite.all():
            problems.append(Problem(str(path), f"contains {int((~finite).sum())} NaN/inf voxel(s)",
                                    "replace NaN/inf by 0 (outside the brain) before use"))
        vals = data[finite]
        if vals.size == 0 or vals.min() == vals.max():
            problems.append(Problem(str(path), "is empty (all voxels equal)", "replace it with the real scan"))
        else:
            nonzero_ml = float(np.count_nonzero(data)) * float(np.prod(geo.spacing)) / 1000.0
            if nonzero_ml > MAX_BRAIN_ML:
                problems.append(Problem(str(path), f"does not look skull-stripped ({nonzero_ml:.0f} ml of non-zero voxels; "
                                        "a brain is ~1000-1700 ml)",
                                        "skull-strip the case first and set voxels outside the brain to 0 (e.g. "
                                        "blogrr_convert_brats --brain_extraction for healthy scans, or deepbet / "
                                        "HD-BET / SynthStrip)"))
        if ref_geo is None:
            ref_geo, ref_path = geo, path
        elif not geo.close_to(ref_geo):
            problems.append(Problem(str(path), f"geometry differs from {ref_path.name} ({_geometry_diff(geo, ref_geo)})",
                                    "resample all channels of a case onto one grid (e.g. register to channel 0)"))
    if case.label is not None:
        problems.extend(_check_label(case.label, ref_geo, ref_path, file_ending))
    return problems


def _check_label(path: Path, ref_geo: Geometry | None, ref_path: Path | None, file_ending: str) -> list[Problem]:
    geo, data, err = _read(path)
    if geo is None and data is None:
        return [Problem(str(path), f"cannot be read as an image ({err})", f"re-export it as a valid {file_ending} file")]
    if geo is None:
        return [Problem(str(path), f"label {err}", "save the label as one 3D volume")]
    problems = []
    if ref_geo is not None and not geo.close_to(ref_geo):
        problems.append(Problem(str(path), f"label geometry differs from {ref_path.name} ({_geometry_diff(geo, ref_geo)})",
                                "resample the label onto the image grid with nearest-neighbour interpolation"))
    values = np.unique(data[np.isfinite(data)]) if np.issubdtype(data.dtype, np.floating) else np.unique(data)
    if not np.isfinite(data).all() or not set(values.tolist()) <= {0, 1}:
        shown = ", ".join(f"{v:g}" for v in values[:6]) + (" ..." if values.size > 6 else "")
        problems.append(Problem(str(path), f"label is not binary {{0,1}} (values: {shown})",
                                "merge all tumour sub-regions into 1 and background into 0"))
    elif values.size == 1 and values[0] == 0:
        problems.append(Problem(str(path), "label is empty (no tumour voxel)",
                                "check the label; an empty label makes Dice undefined for this case", "warning"))
    return problems


def _check_report(path: Path) -> list[Problem]:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        return [Problem(str(path), f"report is not UTF-8 (byte {exc.start})", "re-save the report as UTF-8 text")]
    if not text.strip():
        return [Problem(str(path), "report is empty", "paste the radiology report text into the file")]
    return []


def _channel_set_problems(folder: Path, dj: dict) -> list[Problem]:
    """Healthy scans with other channels than the tumour scans: say which are common and how to plan with them."""
    if not channels_differ(dj):
        return []
    path = str(folder / "dataset.json")
    healthy = ", ".join(role_channel_names(dj, "healthy").values())
    tumour = ", ".join(dj["channel_names"].values())
    common = common_channels(dj)
    if not common:
        return [Problem(path, f"healthy scans ({healthy}) and tumour scans ({tumour}) share no channel",
                        "add healthy scans with at least one of the tumour scans' contrasts")]
    return [Problem(path, f"healthy scans have {healthy}, tumour scans {tumour}; both have {', '.join(common)}",
                    f"plan with `blogrr_plan_and_preprocess -d {folder.name} --channels {' '.join(common)}`", "warning")]


def _structure_problems(folder: Path, dj: dict, cases: dict[str, list[RawCase]], unmatched: list[Path]) -> list[Problem]:
    """Checks on names, counts and completeness (no voxel data needed)."""
    problems: list[Problem] = []
    ending = dj["file_ending"]
    problems.extend(_channel_set_problems(folder, dj))
    for entry in sorted(folder.iterdir()):
        if entry.name not in KNOWN_ENTRIES and entry.name not in IGNORED_TOP_LEVEL:
            problems.append(Problem(str(entry), "unknown file or folder in the dataset folder",
                                    f"move it out; expected only {', '.join(sorted(KNOWN_ENTRIES))}"))
    for f in unmatched:
        kind = f.parent.name
        if kind.startswith("images"):
            what, fix = (f"name does not follow <case>_<XXXX>{ending}",
                         f"rename it (e.g. case01_0000{ending}) or move it out of {kind}/")
        else:
            what, fix = ("has no matching image case (or a wrong name/ending)",
                         f"name it after an image case of the same split, or remove it from {kind}/")
        problems.append(Problem(str(f), f"unknown file: {what}", fix))
    seen: dict[str, str] = {}
    for role in ROLES:
        role_cases = cases.get(role.name, [])
        expected = dj.get(role.count_key)
        img_dir = folder / role.images
        if expected is not None and expected != len(role_cases):
            problems.append(Problem(str(folder / "dataset.json"), f"{role.count_key} is {expected} but {role.images}/ "
                                    f"holds {len(role_cases)} case(s)", f"set {role.count_key} to {len(role_cases)} "
                                    "or add/remove cases"))
        if role.name in ("healthy", "tumor") and not img_dir.is_dir():
            problems.append(Problem(str(img_dir), "folder is missing", f"create {role.images}/ with the {role.name} training scans"))
        names = role_channel_names(dj, role.name)
        n_ch = len(names)
        for case in role_cases:
            if case.case_id in seen:
                problems.append(Problem(str(case.image_files()[0]), f"duplicate case id {case.case_id!r} "
                                        f"(also in {seen[case.case_id]}/)", "give every case a unique id across all splits"))
            seen.setdefault(case.case_id, role.images)
            for ch in range(n_ch):
                if ch not in case.images:
                    problems.append(Problem(str(image_file(img_dir, case.case_id, ch, ending)),
                                            f"missing channel {ch} ({names[str(ch)]}) of case {case.case_id!r}",
                                            "add the file; every case needs all channels of dataset.json"))
            for ch in sorted(set(case.images) - set(range(n_ch))):
                key = "channel_names_healthy" if role.name == "healthy" and "channel_names_healthy" in dj else "channel_names"
                problems.append(Problem(str(case.images[ch]), f"extra channel {ch}: dataset.json declares {n_ch} channel(s)",
                                        f"remove the file or add the channel to {key}"))
            if role.reports_required and case.report is None:
                problems.append(Problem(str(folder / role.reports / f"{case.case_id}.txt"),
                                        f"report missing for tumour case {case.case_id!r}",
                                        "write the case's radiology report into this UTF-8 text file"))
            if role.labels and case.label is None and (folder / role.labels).is_dir():
                problems.append(Problem(str(folder / role.labels / f"{case.case_id}{ending}"),
                                        f"no ground truth for case {case.case_id!r} while {role.labels}/ exists",
                                        "add the label; cases without one are left out of evaluation", "warning"))
    return problems


def verify_dataset(folder: str | Path, num_processes: int = 1) -> VerificationResult:
    """Check a raw dataset against DESIGN.md section 3; never writes anything.

    Args:
        folder: the ``DatasetXXX_Name`` folder.
        num_processes: worker processes for the per-case voxel checks.

    Returns:
        A :class:`VerificationResult` with every problem found (``ok`` is True when there is no error).

    Example:
        >>> result = verify_dataset("blogrr_data/raw/Dataset501_BlogrrDemo")  # doctest: +SKIP
        >>> print(result.format())  # doctest: +SKIP
    """
    folder = Path(folder)
    result = VerificationResult(folder)
    if not folder.is_dir():
        result.problems.append(Problem(str(folder), "dataset folder does not exist", "check the path or dataset id"))
        return result
    try:
        dj = load_dataset_json(folder)
    except DatasetJsonError as exc:
        result.problems.append(Problem(str(folder / "dataset.json"), str(exc).split(": ", 1)[-1],
                                       "fix dataset.json (see docs/data_format.md)"))
        return result
    cases, unmatched = list_cases(folder, dj)
    result.cases, result.dataset_json = cases, dj
    result.problems.extend(_structure_problems(folder, dj, cases, unmatched))
    all_cases = [c for role in ROLES for c in cases[role.name]]
    for case in all_cases:
        if case.report is not None:
            result.problems.extend(_check_report(case.report))
    ending = dj["file_ending"]
    n_chs = [len(role_channel_names(dj, c.role)) for c in all_cases]
    if num_processes > 1 and len(all_cases) > 1:
        with process_pool(num_processes) as pool:
            per_case = list(pool.map(check_case, all_cases, n_chs, [ending] * len(all_cases)))
    else:
        per_case = [check_case(c, n, ending) for c, n in zip(all_cases, n_chs)]
    for probs in per_case:
        result.problems.extend(probs)
    logger.info("verified %s: %d case(s), %d problem(s)", folder, len(all_cases), len(result.problems))
    return result


def require_valid(folder: str | Path, num_processes: int = 1) -> VerificationResult:
    """Verify and raise :class:`DatasetVerificationError` (with the whole report) on any error."""
    result = verify_dataset(folder, num_processes)
    if not result.ok:
        raise DatasetVerificationError(result.format())
    return result
