"""Report reading on real report texts: ../shared/real_reports (issue 15).

The texts are public reports (TextBraTS, MedPix, a translated clinical report, RadGenome-Brain sentences)
kept beside the checkout, never copied into it; their README says how the expected sites were made and how
they are scored (:mod:`blogrr_nnu.reports.corpus_quality` implements that scoring). Bounds:

* ``expected.json`` (lesion sites), lesion extent: mean atlas Dice >= 0.90 and no side error;
* ``expected_with_edema.json`` (lesion + oedema / necrosis extent), whole-tumour extent: Dice >= 0.93;
* the report that describes no tumour (the empty control) gives no mask.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from blogrr_nnu.commands import report_quality

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "real_reports"
log = logging.getLogger(__name__)

pytestmark = pytest.mark.skipif(not (CORPUS / "expected.json").is_file(),
                                reason=f"real report corpus not found at {CORPUS} (CI has ../shared beside the checkout)")


@pytest.fixture(scope="module")
def scored():
    from blogrr_nnu.reports.corpus_quality import score_corpus

    result = score_corpus(CORPUS, [CORPUS / "expected.json", CORPUS / "expected_with_edema.json"])
    return {(r["labels"], r["extent"]): r for r in result["rows"]}


def test_lesion_sites_dice_and_no_side_error(scored):
    row = scored[("expected.json", "lesion")]
    log.info("expected.json, lesion extent: Dice %.3f over %d, side errors %s", row["mean_dice"], row["n_scored"],
             row["side_errors"])
    assert row["n_reports"] >= 100 and not row["errors"]
    assert row["mean_dice"] >= 0.90
    assert row["side_errors"] == []


def test_whole_tumour_extent_dice(scored):
    row = scored[("expected_with_edema.json", "whole_tumour")]
    log.info("expected_with_edema.json, whole-tumour extent: Dice %.3f, side errors %s", row["mean_dice"],
             row["side_errors"])
    assert row["n_reports"] >= 110 and not row["errors"]
    assert row["mean_dice"] >= 0.93


def test_empty_control_gives_no_mask(scored):
    for extent in ("lesion", "whole_tumour"):
        row = scored[("expected_with_edema.json", extent)]
        assert row["controls"], "the corpus should hold a report that expects no site"
        assert row["controls_with_mask"] == [], extent


def test_command_prints_the_table(capsys):
    assert report_quality.main(["--corpus", str(CORPUS), "--expected", str(CORPUS / "expected.json"),
                                "--extent", "lesion"]) == 0
    out = capsys.readouterr().out
    assert "| expected.json | lesion | " in out and "mean atlas Dice" in out
