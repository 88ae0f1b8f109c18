"""Report files on disk -> template-space mask files and their JSON account.

The logic behind ``blogrr_report_to_mask`` (the CLI only parses arguments and prints): read a report
safely, parse it, draw its template mask and write ``<case>.nii.gz`` + ``<case>.json``.

Output of one report ``<case>.txt`` in ``out_dir``:

* ``<case>.nii.gz``: uint8 ``(X, Y, Z)`` in {0, 1} on the 1 mm Hammers grid; written only when the
  report names at least one site the chosen extent draws (an all-zero mask would look like a result);
* ``<case>.json``: sites with sides and character spans, size, count, matched Hammers labels (ids and
  names), exclusions and warnings (see :func:`blogrr_nnu.reports.explain`), plus the mask file name
  and volume.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from blogrr_nnu.image_io import atomic_write, write_image
from blogrr_nnu.reports.masks import explain, findings_to_mask
from blogrr_nnu.reports.parser import ParsedReport, parse_report
from blogrr_nnu.reports.roles import DEFAULT_EXTENT
from blogrr_nnu.reports.vocabulary import Vocabulary

logger = logging.getLogger(__name__)

REPORT_SUFFIX = ".txt"
MASK_SUFFIX = ".nii.gz"


class ReportReadError(ValueError):
    """A report file cannot be used: unreadable, not UTF-8 or empty. The message names the file."""


def read_report(path: str | os.PathLike) -> str:
    """Text of one report file.

    Args:
        path: a UTF-8 text file (a UTF-8 byte-order mark is accepted and dropped).

    Returns:
        The report text.

    Raises:
        ReportReadError: the file cannot be read, is not valid UTF-8, or holds only whitespace.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ReportReadError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        # utf-8-sig: Windows editors prepend a BOM, which is not part of the report.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ReportReadError(f"{path}: not UTF-8 text (invalid byte at offset {exc.start}); "
                              f"re-save it as UTF-8, e.g. `iconv -f latin1 -t utf-8`") from None
    if not text.strip():
        raise ReportReadError(f"{path}: the report is empty")
    return text


def list_reports(path: str | os.PathLike) -> list[Path]:
    """Report files named by ``path``: the file itself, or the ``*.txt`` files of a folder (sorted).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a folder without any ``.txt`` file.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    files = sorted(p for p in path.iterdir() if p.name.endswith(REPORT_SUFFIX) and not p.name.startswith("."))
    if not files:
        raise ValueError(f"{path}: no report files (*{REPORT_SUFFIX}) in this folder")
    return files


def case_id_of(report_path: str | os.PathLike) -> str:
    """``<case>`` of ``<case>.txt`` (the whole name for other files)."""
    name = Path(report_path).name
    return name[: -len(REPORT_SUFFIX)] if name.endswith(REPORT_SUFFIX) and len(name) > len(REPORT_SUFFIX) else name


def _flat_sites(account: dict[str, Any], text: str) -> list[dict[str, Any]]:
    """Sites of all findings in text order, each with its side words and the sentence it came from."""
    out = []
    for f in account["findings"]:
        for site in f["sites"]:
            side_text = text[site["side_span"][0]:site["side_span"][1]] if site.get("side_span") else None
            out.append({**site, "side_text": side_text, "finding_span": f["span"]})
    return out


def report_account(parsed: ParsedReport, *, extent: str = DEFAULT_EXTENT,
                   vocabulary: Vocabulary | None = None) -> dict[str, Any]:
    """JSON-serialisable account of a parsed report: :func:`explain` plus flat ``sites`` and ``sides``.

    ``sites`` lists every site of every drawable role (term, side, side source, role, text, span, side span
    and side text, Hammers labels) in text order; ``sides`` maps each site term the ``extent`` draws to its
    side. Spans are ``[start, end)`` character offsets into the report text.
    """
    account = explain(parsed, extent=extent, vocabulary=vocabulary)
    return {"sites": _flat_sites(account, parsed.text), "sides": parsed.site_sides(extent), **account}


def report_to_mask_files(report_path: str | os.PathLike, out_dir: str | os.PathLike, *, dilate_mm: float = 0.0,
                         extent: str = DEFAULT_EXTENT, vocabulary: Vocabulary | None = None) -> dict[str, Any]:
    """Parse one report and write its template-space mask and JSON account into ``out_dir``.

    Args:
        report_path: ``<case>.txt``, UTF-8.
        out_dir: output folder (created if needed).
        dilate_mm: grow the mask by this distance in mm (kept inside the atlas brain).
        extent: ``whole_tumour`` (lesion + oedema + necrosis sites) or ``lesion`` (:mod:`roles`).
        vocabulary: site table (the package's when ``None``).

    Returns:
        The JSON content written to ``<case>.json``: ``case``, ``report``, ``mask`` (file name or
        ``None``), ``mask_voxels`` and ``mask_volume_ml`` (1 mm grid: voxels = ml / 1000), ``dilate_mm``,
        then ``sites`` (each with its ``role``), ``sides``, ``findings``, ``extent``, ``drawn``, ``roles``,
        ``matched_labels``, ``size_mm``, ``count``, ``crosses_midline``, ``excluded``, ``warnings`` (see
        :func:`report_account`).

    Raises:
        ReportReadError: the report is unreadable, not UTF-8 or empty (nothing is written).
        ValueError: ``dilate_mm`` is negative or not finite, or ``extent`` is unknown.
    """
    report_path, out_dir = Path(report_path), Path(out_dir)
    text = read_report(report_path)
    parsed = parse_report(text, vocabulary=vocabulary)
    case = case_id_of(report_path)
    mask_path = out_dir / f"{case}{MASK_SUFFIX}"
    result: dict[str, Any] = {"case": case, "report": str(report_path), "mask": None, "mask_voxels": 0,
                              "mask_volume_ml": 0.0, "dilate_mm": float(dilate_mm)}
    result.update(report_account(parsed, extent=extent, vocabulary=vocabulary))
    mask, geometry = findings_to_mask(parsed, extent=extent, dilate_mm=dilate_mm, vocabulary=vocabulary)
    if mask.any():
        voxels = int(mask.sum())
        write_image(mask_path, mask.astype(np.uint8), geometry)
        result.update(mask=mask_path.name, mask_voxels=voxels,
                      mask_volume_ml=round(voxels * float(np.prod(geometry.spacing)) / 1000.0, 3))
    elif mask_path.exists():
        # A mask left by an earlier run of an edited report would contradict the new JSON.
        mask_path.unlink()
    atomic_write(out_dir / f"{case}.json",
                 lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8"))
    return result


def format_explanation(result: dict[str, Any]) -> str:
    """Human-readable lines for one result of :func:`report_to_mask_files`: each site with its side
    and the text spans that produced them, then the matched labels."""
    lines = [f"{result['case']} ({result['report']}): {len(result['sites'])} site(s)"]
    for s in result["sites"]:
        side = s["side"]
        if s.get("side_span"):
            a, b = s["side_span"]
            side += f" from {s['side_text']!r} [{a}:{b}]"
        else:
            side += f" ({s['side_source']})"
        a, b = s["span"]
        lines.append(f"  {s['term']:<28} {side:<40} site text [{a}:{b}] {s['text']!r} role {s['role']}")
    if result.get("drawn") is not None:
        lines.append(f"  drawn ({result['extent']}): {', '.join(result['drawn']) or 'nothing'}")
    if result["matched_labels"]:
        names = ", ".join(f"{m['id']} {m['name']}" for m in result["matched_labels"])
        lines.append(f"  labels: {names}")
    for e in result["excluded"]:
        lines.append(f"  not used: {e['term']} [{e['span'][0]}:{e['span'][1]}] {e['text']!r} ({e['reason']})")
    return "\n".join(lines)
