"""Where raw, preprocessed and result folders live, and how a dataset id is resolved.

Order (first that is set wins): the command-line flag, ``BLOGRR_raw`` / ``BLOGRR_preprocessed`` /
``BLOGRR_results``, nnU-Net's ``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results``, and
finally ``./blogrr_data/{raw,preprocessed,results}`` below the current directory. Nothing is
resolved at import time, so setting a variable after import works.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path

_KINDS = {
    "raw": ("BLOGRR_raw", "nnUNet_raw"),
    "preprocessed": ("BLOGRR_preprocessed", "nnUNet_preprocessed"),
    "results": ("BLOGRR_results", "nnUNet_results"),
}
DEFAULT_ROOT = "blogrr_data"
_DATASET_RE = re.compile(r"^Dataset(\d{3})_(\w+)$")


class DatasetNotFoundError(ValueError):
    """A dataset id or name does not resolve to exactly one dataset folder."""


def _resolve(kind: str, override: str | os.PathLike | None) -> Path:
    if override:
        return Path(override).expanduser().resolve()
    for var in _KINDS[kind]:
        value = os.environ.get(var)
        if value:
            return Path(value).expanduser().resolve()
    return (Path.cwd() / DEFAULT_ROOT / kind).resolve()


def raw_root(override: str | os.PathLike | None = None) -> Path:
    """Folder holding raw ``DatasetXXX_Name`` folders (flag > BLOGRR_raw > nnUNet_raw > ./blogrr_data/raw)."""
    return _resolve("raw", override)


def preprocessed_root(override: str | os.PathLike | None = None) -> Path:
    """Folder for preprocessed data (flag > BLOGRR_preprocessed > nnUNet_preprocessed > ./blogrr_data/preprocessed)."""
    return _resolve("preprocessed", override)


def results_root(override: str | os.PathLike | None = None) -> Path:
    """Folder for trained runs (flag > BLOGRR_results > nnUNet_results > ./blogrr_data/results)."""
    return _resolve("results", override)


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``DatasetXXX_Name`` for an id in 1..999 and a name of letters, digits and underscores."""
    if not 0 < int(dataset_id) < 1000:
        raise ValueError(f"dataset id must be 1..999, got {dataset_id}")
    if not re.fullmatch(r"\w+", name):
        raise ValueError(f"dataset name may hold letters, digits and '_' only, got {name!r}")
    return f"Dataset{int(dataset_id):03d}_{name}"


def parse_dataset_folder_name(folder: str) -> tuple[int, str] | None:
    """``(id, name)`` of a ``DatasetXXX_Name`` folder name, or ``None`` if it is not one."""
    m = _DATASET_RE.match(folder)
    return (int(m.group(1)), m.group(2)) if m else None


def resolve_dataset(spec: str | int, root: str | os.PathLike | None = None) -> Path:
    """Find the dataset folder named by ``spec`` below ``root`` (default :func:`raw_root`).

    ``spec`` may be an id (``501`` or ``"501"``), a folder name (``"Dataset501_Demo"``) or a
    name (``"Demo"``, case-sensitive).

    Returns:
        The dataset folder.

    Raises:
        DatasetNotFoundError: no folder, or several folders, match; the message lists what exists.

    Example:
        >>> resolve_dataset("501")  # doctest: +SKIP
        PosixPath('/data/blogrr_raw/Dataset501_BlogrrDemo')
    """
    base = Path(root) if root is not None else raw_root()
    spec = str(spec).strip()
    if not base.is_dir():
        raise DatasetNotFoundError(
            f"dataset folder {base} does not exist: set BLOGRR_raw (or pass the root) to where your "
            f"DatasetXXX_Name folders are, or create the demo with `blogrr_make_demo_dataset`"
        )
    found = {p.name: parse_dataset_folder_name(p.name) for p in sorted(base.iterdir()) if p.is_dir()}
    found = {k: v for k, v in found.items() if v is not None}
    if spec.isdigit():
        matches = [k for k, (i, _) in found.items() if i == int(spec)]
    elif spec in found:
        matches = [spec]
    else:
        matches = [k for k, (_, n) in found.items() if n == spec]
    if len(matches) == 1:
        return base / matches[0]
    available = ", ".join(found) or "none"
    if not matches:
        raise DatasetNotFoundError(f"no dataset matches {spec!r} in {base} (available: {available})")
    raise DatasetNotFoundError(
        f"{spec!r} is ambiguous in {base}: {', '.join(matches)}; pass the full folder name instead"
    )


@contextmanager
def environment(**wanted: str):
    """Set environment variables for the duration of a ``with`` block, then restore (or unset) them.

    Used where nnU-Net code reads its ``nnUNet_*`` variables at call time.
    """
    old = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
