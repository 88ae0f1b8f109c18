"""Scoring of the parser on tests/data/report_corpus.yaml (shared by the test and by hand runs).

Run by hand for a per-report listing: ``python tests/report_corpus_eval.py``.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from blogrr_nnu.reports.parser import parse_report

CORPUS = Path(__file__).parent / "data" / "report_corpus.yaml"


def _normalise(pairs: list[tuple[str, str]]) -> dict[str, str]:
    seen: dict[str, set[str]] = {}
    for site, side in pairs:
        seen.setdefault(site, set()).add(side)
    out = {}
    for site, s in seen.items():
        out[site] = "bilateral" if "bilateral" in s or {"left", "right"} <= s else sorted(s)[0] if len(s) == 1 else "/".join(sorted(s))
    return out


def evaluate(corpus_path: Path = CORPUS) -> dict:
    """Score every corpus report.

    Returns a dict with ``n``, ``site_exact`` (reports whose site set is exactly right),
    ``side_errors`` (sites found with a wrong side), ``size_ok``/``size_n``, ``count_ok``/``count_n``,
    ``cross_ok``/``cross_n`` and ``failures`` (readable lines).
    """
    corpus = yaml.safe_load(corpus_path.read_text(encoding="utf-8"))
    res = {"n": len(corpus), "site_exact": 0, "side_errors": 0, "side_checked": 0, "size_ok": 0, "size_n": 0,
           "count_ok": 0, "count_n": 0, "cross_ok": 0, "cross_n": 0, "failures": []}
    for item in corpus:
        parsed = parse_report(item["text"])
        got = parsed.site_sides()
        want = _normalise([(e["site"], e["side"]) for e in item.get("expected") or []])
        if set(got) == set(want):
            res["site_exact"] += 1
        else:
            res["failures"].append(f"{item['id']} sites: missing {sorted(set(want) - set(got))}, "
                                   f"extra {sorted(set(got) - set(want))}")
        for site in set(got) & set(want):
            res["side_checked"] += 1
            if got[site] != want[site]:
                res["side_errors"] += 1
                res["failures"].append(f"{item['id']} side of {site}: got {got[site]}, expected {want[site]}")
        if "expected_size_mm" in item:
            res["size_n"] += 1
            ok = parsed.size_mm is not None and tuple(map(float, item["expected_size_mm"])) == parsed.size_mm
            res["size_ok"] += ok
            if not ok:
                res["failures"].append(f"{item['id']} size: got {parsed.size_mm}, expected {item['expected_size_mm']}")
        if "expected_count" in item:
            res["count_n"] += 1
            res["count_ok"] += parsed.count == item["expected_count"]
            if parsed.count != item["expected_count"]:
                res["failures"].append(f"{item['id']} count: got {parsed.count}, expected {item['expected_count']}")
        if "expected_crosses_midline" in item:
            res["cross_n"] += 1
            res["cross_ok"] += parsed.crosses_midline == item["expected_crosses_midline"]
            if parsed.crosses_midline != item["expected_crosses_midline"]:
                res["failures"].append(f"{item['id']} crosses_midline: got {parsed.crosses_midline}")
    return res


if __name__ == "__main__":
    r = evaluate()
    print("\n".join(r["failures"]))
    print({k: v for k, v in r.items() if k != "failures"})
