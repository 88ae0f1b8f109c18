"""The raw dataset format (DESIGN.md section 3): folder layout, file naming and case listing.

```
DatasetXXX_Name/
  dataset.json     channel_names, file_ending, numHealthy, numTumor, (optional) numTest, channel_names_healthy
  imagesTr/        healthy training scans        <case>_<4-digit channel><file_ending>
  imagesTrTumor/   tumour training scans
  reportsTr/       <case>.txt, one report per imagesTrTumor case
  labelsTrTumor/   optional ground truth of imagesTrTumor (evaluation only, never training)
  imagesTs/, labelsTs/, reportsTs/   optional held-out test scans, ground truth, reports
```
This module only names and lists things; :mod:`blogrr_nnu.verify` checks them.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

REQUIRED_JSON_KEYS = ("channel_names", "file_ending", "numHealthy", "numTumor")


@dataclass(frozen=True)
class Role:
    """One group of cases and the folders that hold its files."""

    name: str
    images: str
    labels: str | None
    reports: str | None
    count_key: str
    reports_required: bool


ROLES = (
    Role("healthy", "imagesTr", None, None, "numHealthy", False),
    Role("tumor", "imagesTrTumor", "labelsTrTumor", "reportsTr", "numTumor", True),
    Role("test", "imagesTs", "labelsTs", "reportsTs", "numTest", False),
)
KNOWN_ENTRIES = {"dataset.json"} | {r.images for r in ROLES} | {r.labels for r in ROLES if r.labels} | {
    r.reports for r in ROLES if r.reports
}
# Files a tool may leave beside the data without being part of it (the demo's montage, its metadata).
IGNORED_TOP_LEVEL = {"montage.png", "phantom_meta", "README.md", "README.txt", ".DS_Store"}


@dataclass
class RawCase:
    """One case of a raw dataset.

    Attributes:
        case_id: the ``<case>`` part of the file names.
        role: ``"healthy"``, ``"tumor"`` or ``"test"``.
        images: channel index -> image file.
        label: ground-truth file, if present.
        report: report file, if present.
    """

    case_id: str
    role: str
    images: dict[int, Path] = field(default_factory=dict)
    label: Path | None = None
    report: Path | None = None

    def image_files(self) -> list[Path]:
        """Image files ordered by channel."""
        return [self.images[c] for c in sorted(self.images)]


class DatasetJsonError(ValueError):
    """dataset.json is missing or malformed."""


def load_dataset_json(folder: str | Path) -> dict:
    """Read and minimally validate ``dataset.json``.

    Raises:
        DatasetJsonError: missing file, invalid JSON, missing keys or wrong types; the message says how to fix it.
    """
    path = Path(folder) / "dataset.json"
    if not path.is_file():
        raise DatasetJsonError(f"{path}: missing; create it with keys {', '.join(REQUIRED_JSON_KEYS)}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetJsonError(f"{path}: not valid UTF-8 JSON ({exc}); fix the syntax") from None
    if not isinstance(data, dict):
        raise DatasetJsonError(f"{path}: must hold a JSON object")
    missing = [k for k in REQUIRED_JSON_KEYS if k not in data]
    if missing:
        raise DatasetJsonError(f"{path}: missing key(s) {', '.join(missing)}")
    for key in ("channel_names", "channel_names_healthy"):
        names = data.get(key)
        if key == "channel_names_healthy" and names is None:
            continue  # optional: healthy scans with other channels than the tumour scans (docs/data_format.md)
        if (not isinstance(names, dict) or not names or sorted(names, key=str) != sorted(str(i) for i in range(len(names)))
                or not all(isinstance(v, str) and v.strip() for v in names.values())):
            raise DatasetJsonError(f'{path}: {key} must map "0".."N-1" to names, e.g. {{"0": "T1", "1": "FLAIR"}}')
    if not isinstance(data["file_ending"], str) or not data["file_ending"].startswith("."):
        raise DatasetJsonError(f'{path}: file_ending must be a string such as ".nii.gz"')
    for key in ("numHealthy", "numTumor", "numTest"):
        if key in data and (not isinstance(data[key], int) or isinstance(data[key], bool) or data[key] < 0):
            raise DatasetJsonError(f"{path}: {key} must be a non-negative integer")
    return data


def image_name_pattern(file_ending: str) -> re.Pattern[str]:
    """Regex for ``<case>_<4-digit channel><file_ending>`` with groups ``case`` and ``channel``."""
    return re.compile(rf"^(?P<case>.+)_(?P<channel>\d{{4}}){re.escape(file_ending)}$")


def image_file(folder: Path, case_id: str, channel: int, file_ending: str) -> Path:
    """Path of one channel of a case."""
    return folder / f"{case_id}_{channel:04d}{file_ending}"


def list_cases(folder: str | Path, dataset_json: dict | None = None) -> tuple[dict[str, list[RawCase]], list[Path]]:
    """List the cases of each role, without opening any image.

    Args:
        folder: the dataset folder.
        dataset_json: its parsed dataset.json (read if ``None``).

    Returns:
        ``(cases_by_role, unmatched)``: role name -> cases sorted by id, and files whose name fits no
        case (unknown files, labels or reports without an image).
    """
    folder = Path(folder)
    dj = dataset_json if dataset_json is not None else load_dataset_json(folder)
    ending = dj["file_ending"]
    pattern = image_name_pattern(ending)
    by_role: dict[str, list[RawCase]] = {}
    unmatched: list[Path] = []
    for role in ROLES:
        cases: dict[str, RawCase] = {}
        img_dir = folder / role.images
        if img_dir.is_dir():
            for f in sorted(img_dir.iterdir()):
                m = pattern.match(f.name)
                if not m or not f.is_file():
                    unmatched.append(f)
                    continue
                case = cases.setdefault(m["case"], RawCase(m["case"], role.name))
                case.images[int(m["channel"])] = f
        for sub, attr, suffix in ((role.labels, "label", ending), (role.reports, "report", ".txt")):
            d = folder / sub if sub else None
            if d is None or not d.is_dir():
                continue
            for f in sorted(d.iterdir()):
                cid = f.name[: -len(suffix)] if f.name.endswith(suffix) else None
                if cid is None or cid not in cases or not f.is_file():
                    unmatched.append(f)
                else:
                    setattr(cases[cid], attr, f)
        by_role[role.name] = [cases[k] for k in sorted(cases)]
    return by_role, unmatched
