"""Radiology reports keyed by case id: a folder of ``<case>.txt``, a CSV table or a JSON file.

- folder: ``<case>.txt`` (UTF-8) per case, at any depth;
- CSV (``.csv``, ``.tsv``): a header row; the id column is the first named ``case_id``, ``case``, ``id``,
  ``subject``, ``subject_id``, ``patient_id`` or ``brats_id`` (else the first column), the text column the
  first named ``report``, ``text``, ``report_text``, ``findings`` or ``impression`` (else the second);
- JSON: ``{"<case>": "<report>", ...}`` or ``[{"case_id": ..., "report": ...}, ...]`` (same column names).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from blogrr_nnu.importers.files import ConversionError

ID_COLUMNS = ("case_id", "case", "id", "subject", "subject_id", "patient_id", "brats_id")
TEXT_COLUMNS = ("report", "text", "report_text", "findings", "impression")


def _column(header: list[str], wanted: tuple[str, ...], fallback: int) -> int:
    low = [h.strip().lower() for h in header]
    for w in wanted:
        if w in low:
            return low.index(w)
    return fallback


def _add(out: dict[str, str], case: str, text: str, source: Path) -> None:
    case = str(case).strip()
    if not case:
        raise ConversionError(f"{source}: a report without a case id; fill in the id column")
    if case in out:
        raise ConversionError(f"{source}: two reports for case {case!r}; keep one")
    out[case] = str(text)


def _from_table(path: Path) -> dict[str, str]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8-sig").splitlines(), delimiter=delimiter))
    except UnicodeDecodeError as exc:
        raise ConversionError(f"{path}: not UTF-8 (byte {exc.start}); re-save it as UTF-8") from None
    if len(rows) < 2 or len(rows[0]) < 2:
        raise ConversionError(f"{path}: needs a header row and at least two columns (case id, report)")
    header, body = rows[0], rows[1:]
    i, j = _column(header, ID_COLUMNS, 0), _column(header, TEXT_COLUMNS, 1)
    if i == j:
        raise ConversionError(f"{path}: the id and the report column are the same; name them e.g. case_id, report")
    out: dict[str, str] = {}
    for row in body:
        if not any(cell.strip() for cell in row):
            continue
        _add(out, row[i] if i < len(row) else "", row[j] if j < len(row) else "", path)
    return out


def _from_json(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"{path}: not valid UTF-8 JSON ({exc}); fix the syntax") from None
    out: dict[str, str] = {}
    if isinstance(data, dict):
        for case, text in data.items():
            _add(out, case, text, path)
    elif isinstance(data, list) and all(isinstance(r, dict) for r in data):
        for row in data:
            keys = list(row)
            idk, tk = keys[_column(keys, ID_COLUMNS, 0)], keys[_column(keys, TEXT_COLUMNS, 1)] if len(keys) > 1 else None
            if tk is None:
                raise ConversionError(f"{path}: each entry needs a case id and a report, e.g. "
                                      '{"case_id": "...", "report": "..."}')
            _add(out, row[idk], row[tk], path)
    else:
        raise ConversionError(f'{path}: expected {{"<case>": "<report>"}} or a list of {{"case_id", "report"}} objects')
    return out


def load_reports(source: str | Path) -> dict[str, str]:
    """Case id -> report text from a folder, a CSV/TSV or a JSON file.

    Raises:
        ConversionError: missing source, unreadable file, duplicate or empty case ids.
    """
    source = Path(source)
    if source.is_dir():
        out: dict[str, str] = {}
        for f in sorted(source.rglob("*.txt")):
            try:
                _add(out, f.name[:-4], f.read_bytes().decode("utf-8"), f)
            except UnicodeDecodeError as exc:
                raise ConversionError(f"{f}: report is not UTF-8 (byte {exc.start}); re-save it as UTF-8") from None
        if not out:
            raise ConversionError(f"{source}: no <case>.txt report in the folder")
        return out
    if not source.is_file():
        raise ConversionError(f"{source}: reports not found; pass a folder of <case>.txt, a CSV or a JSON file")
    if source.suffix.lower() in (".csv", ".tsv"):
        return _from_table(source)
    if source.suffix.lower() == ".json":
        return _from_json(source)
    raise ConversionError(f"{source}: unknown report file type; use a folder of <case>.txt, .csv, .tsv or .json")
