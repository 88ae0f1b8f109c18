"""Tests of blogrr_nnu.reports: vocabulary vs atlas, parser rules and corpus accuracy, masks."""
from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from blogrr_nnu.atlas import hammers_regions, load_hammers
from blogrr_nnu.reports import explain, findings_to_mask, load_vocabulary, matched_labels, parse_report
from blogrr_nnu.reports.cues import find_sizes, parse_size
from blogrr_nnu.reports.vocabulary import VocabularyError, parse_vocabulary, validate

sys.path.insert(0, str(Path(__file__).parent))
from report_corpus_eval import evaluate  # noqa: E402

log = logging.getLogger(__name__)


def sites(text: str) -> set[tuple[str, str]]:
    return {(s.term, s.side) for s in parse_report(text).sites}


# ------------------------------------------------------------------------------ vocabulary
def test_vocabulary_ids_exist_and_sides_match_atlas():
    regions = hammers_regions()
    vocab = load_vocabulary()
    assert len(vocab.terms) >= 40
    for term in vocab.terms.values():
        for side, ids in term.labels.items():
            for label in ids:
                assert label in regions, (term.key, label)
                if side == "left":
                    assert regions[label].side in ("left", "midline"), (term.key, label)
                if side == "right":
                    assert regions[label].side in ("right", "midline"), (term.key, label)
        if term.paired and term.labels:
            # the left list mirrors the right one: same structures, other side
            left = sorted(regions[i].structure for i in term.labels["left"])
            right = sorted(regions[i].structure for i in term.labels["right"])
            assert left == right, term.key


def test_vocabulary_lobes_cover_all_lobe_labels():
    regions, vocab = hammers_regions(), load_vocabulary()
    for term, lobe in (("frontal", "frontal"), ("parietal", "parietal"), ("temporal", "temporal"),
                       ("occipital", "occipital"), ("insula", "insula")):
        for side in ("left", "right"):
            want = {k for k, r in regions.items() if r.lobe == lobe and r.side == side}
            assert set(vocab[term].labels[side]) == want, (term, side)
    assert set(vocab["ventricles"].labels["midline"]) == {45, 46, 47, 48, 49}
    assert vocab["corpus_callosum"].labels["midline"] == (44,)
    assert vocab["periventricular_white_matter"].derived["kind"] == "wm_near_ventricles"


def test_vocabulary_validation_rejects_bad_tables():
    bad_id = {"terms": {"x": {"paired": True, "aliases": ["x"], "labels": {"left": [999], "right": [1]}}}}
    with pytest.raises(VocabularyError, match="999"):
        validate(parse_vocabulary(bad_id))
    wrong_side = {"terms": {"x": {"paired": True, "aliases": ["x"], "labels": {"left": [1], "right": [1]}}}}
    with pytest.raises(VocabularyError, match="right label"):
        validate(parse_vocabulary(wrong_side))
    with pytest.raises(VocabularyError, match="exactly one"):
        parse_vocabulary({"terms": {"x": {"paired": False, "aliases": ["x"]}}})


# ------------------------------------------------------------------------------ parser rules
@pytest.mark.parametrize("text, want", [
    ("Mass in the right frontal, temporal and insular lobes.",
     {("frontal", "right"), ("temporal", "right"), ("insula", "right")}),
    ("No abnormal signal in the left hemisphere.", set()),
    ("The left lateral ventricle is normal.", set()),
    ("No midline shift.", set()),
    ("The right frontal lesion shows no enhancement.", {("frontal", "right")}),
    ("No enhancing component is seen in the left frontal lesion.", {("frontal", "left")}),
    ("There is no enhancing component in the left parietal lobe.", set()),
    ("Left frontal mass. The right lateral ventricle is compressed.", {("frontal", "left")}),
    ("Right temporal mass with effacement of the adjacent sulci and midline shift to the left.", {("temporal", "right")}),
    ("Lesion adjacent to the left lateral ventricle in the left caudate.", {("caudate", "left")}),
    ("Old lacunar infarct in the right thalamus.", set()),
    ("Right frontal sinus mucosal thickening; left temporal tumour.", {("temporal", "left")}),
    ("Lesion in the frontal lobe on the left.", {("frontal", "left")}),
    ("Tumour in both frontal lobes.", {("frontal", "bilateral")}),
    ("Tumour in the frontal lobes.", {("frontal", "bilateral")}),
    ("Lt temporal and Rt occipital lesions.", {("temporal", "left"), ("occipital", "right")}),
    ("L parieto-occipital mass", {("parietal", "left"), ("occipital", "left")}),
    ("Left frontal tumour. The lesion extends into the insula.", {("frontal", "left"), ("insula", "left")}),
    ("Left frontal glioma extending to the contralateral frontal lobe.", {("frontal", "left"), ("frontal", "right")}),
    ("The right frontal lobe is not involved. Left frontal oedema.", {("frontal", "left")}),
    ("Mass in the temporal horn of the right lateral ventricle.", {("temporal_horn", "right")}),
    ("Glioma of the genu of the corpus callosum.", {("corpus_callosum_genu", "midline")}),
    ("Lesion in the left superior frontal gyrus.", {("superior_frontal_gyrus", "left")}),
    ("Enhancing lesion in the frontal lobe.", {("frontal", "unspecified")}),
    ("TUMOUR OF THE RIGHT TEMPORAL LOBE WITH OEDEMA.", {("temporal", "right")}),
    ("Mass effect upon the left caudate nucleus from a left frontal tumour.", {("frontal", "left")}),
    ("The frontal horn of the left lateral ventricle is compressed by a left caudate mass.", {("caudate", "left")}),
    ("Right haemorrhagic tumour in the occipital lobe; left hemorrhagic tumor in the parietal lobe.",
     {("occipital", "right"), ("parietal", "left")}),
    ("A tumour occupies the frontal lobe of the left hemisphere.", {("frontal", "left")}),
    ("Lesion in the right superior and middle frontal gyri.",
     {("superior_frontal_gyrus", "right"), ("middle_frontal_gyrus", "right")}),
    ("Lesions in both cerebral and cerebellar hemispheres.", {("hemisphere", "bilateral"), ("cerebellum", "bilateral")}),
])
def test_parser_rules(text, want):
    assert sites(text) == want


def test_spans_point_at_text():
    text = "FINDINGS: Enhancing mass in the left occipital lobe, 4.1cm."
    parsed = parse_report(text)
    (site,) = parsed.sites
    assert text[site.span[0]:site.span[1]] == site.text == "occipital lobe"
    assert text[site.side_span[0]:site.side_span[1]] == "left"
    assert text[slice(*parsed.findings[0].size_span)] == "4.1cm"


def test_crossing_midline_and_negated_crossing():
    assert parse_report("Left frontal glioma crossing the midline.").crosses_midline
    assert not parse_report("Left frontal glioma. It does not cross the midline.").crosses_midline


def test_history_section_is_skipped_unless_it_is_all_there_is():
    parsed = parse_report("History: known left temporal glioma.\nFindings: right frontal mass.")
    assert {(s.term, s.side) for s in parsed.sites} == {("frontal", "right")}
    fallback = parse_report("Indication: left temporal glioma.\n\nFindings: post-operative changes only")
    assert {(s.term, s.side) for s in fallback.sites} == {("temporal", "left")}
    assert any("history" in w for w in fallback.warnings)


def test_no_site_gives_warning_and_empty_mask():
    parsed = parse_report("No intracranial abnormality. Normal study.")
    assert parsed.findings == [] and parsed.sites == []
    assert any("no lesion site" in w for w in parsed.warnings)
    mask, geometry = findings_to_mask(parsed)
    assert mask.dtype == np.uint8 and mask.shape == geometry.shape and mask.sum() == 0
    assert matched_labels(parsed) == []


def test_parse_report_rejects_non_text():
    with pytest.raises(TypeError, match="str"):
        parse_report(b"left frontal mass")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ sizes and counts
@pytest.mark.parametrize("text, want", [
    ("41 x 60 x 38 mm", (41.0, 60.0, 38.0)),
    ("41x60x38mm", (41.0, 60.0, 38.0)),
    ("4.1 × 6.0 × 3.8 cm", (41.0, 60.0, 38.0)),
    ("4.1×6.0cm", (41.0, 60.0)),
    ("41 mm x 60 mm x 38 mm", (41.0, 60.0, 38.0)),
    ("4.1cm", (41.0,)),
    ("4.1 cm", (41.0,)),
    ("3-cm", (30.0,)),
    ("4 by 3 cm", (40.0, 30.0)),
    ("12 millimetres", (12.0,)),
    ("2.5 centimeters", (25.0,)),
])
def test_size_formats(text, want):
    assert parse_size(text) == want
    assert [s.size_mm for s in find_sizes(f"mass measuring {text} here")] == [want]


@pytest.mark.parametrize("text, want", [
    ("Right frontal mass approximately 3 cm in diameter.", (30.0,)),
    ("Right frontal mass, 4.1 x 3.2 cm (previously 3.5 x 3.0 cm), with 6 mm midline shift.", (41.0, 32.0)),
    ("Right frontal mass. Midline shift of 6 mm. It measures 28 mm.", (28.0,)),
    ("Technique: 1 mm isotropic T1.\nFindings: right frontal mass.", None),
])
def test_lesion_size_ignores_shift_previous_and_technique(text, want):
    assert parse_report(text).size_mm == want


@pytest.mark.parametrize("text, want", [
    ("Solitary right frontal lesion.", "solitary"),
    ("Multiple lesions in the right frontal lobe.", "multiple"),
    ("Multifocal glioma of the left temporal lobe.", "multifocal"),
    ("Left frontal mass. A second lesion is seen in the right occipital lobe.", "multiple"),
    ("Left frontal mass.", None),
])
def test_counts(text, want):
    assert parse_report(text).count == want


# ------------------------------------------------------------------------------ corpus
def test_corpus_accuracy():
    res = evaluate()
    for line in res["failures"]:
        log.warning("corpus failure: %s", line)
    print("\n".join(res["failures"]))
    site_rate = res["site_exact"] / res["n"]
    print(f"corpus: {res['n']} reports, sites exact {site_rate:.1%}, side errors {res['side_errors']}/"
          f"{res['side_checked']}, sizes {res['size_ok']}/{res['size_n']}, counts {res['count_ok']}/{res['count_n']}")
    assert res["n"] >= 80
    assert res["side_errors"] == 0
    assert site_rate >= 0.95
    assert res["size_ok"] >= 0.9 * res["size_n"]
    assert res["count_ok"] >= 0.9 * res["count_n"]


# ------------------------------------------------------------------------------ masks
def _swap_sides(text: str) -> str:
    table = {"left": "right", "right": "left", "Left": "Right", "Right": "Left", "LEFT": "RIGHT", "RIGHT": "LEFT",
             "Lt": "Rt", "Rt": "Lt", "lt": "rt", "rt": "lt", "L": "R", "R": "L"}
    return re.sub(r"\b(left|right|Left|Right|LEFT|RIGHT|Lt|Rt|lt|rt|L|R)\b", lambda m: table[m.group(0)], text)


def test_hammers_midline_is_the_central_x_plane():
    _, geometry = load_hammers()
    x0 = geometry.affine_lps() @ np.array([(geometry.shape[0] - 1) / 2, 0, 0, 1])
    assert abs(x0[0]) < 1e-6  # mirroring axis 0 (array[::-1]) is mirroring across LPS x = 0


@pytest.mark.parametrize("text", [
    "Right frontal glioblastoma with oedema extending into the right parietal lobe. Left hemisphere normal.",
    "Left temporal tumour involving the hippocampus and insula; compression of the left lateral ventricle.",
    "Multiple lesions in the left frontal lobe, left insula and right cerebellar hemisphere.",
    "Right occipital metastasis and left cerebellar metastasis.",
])
def test_swapping_sides_mirrors_mask(text):
    mask, _ = findings_to_mask(parse_report(text))
    mirrored, _ = findings_to_mask(parse_report(_swap_sides(text)))
    assert mask.sum() > 1000
    expected = mask[::-1]
    dice = 2 * np.logical_and(expected, mirrored).sum() / (expected.sum() + mirrored.sum())
    assert dice >= 0.9, dice
    assert not np.array_equal(mask, mirrored)  # it did change side


def test_swapping_sides_swaps_parsed_sides_on_whole_corpus():
    """The parser part of the mirror property, exactly: every corpus report, sides swapped."""
    import yaml

    corpus = yaml.safe_load((Path(__file__).parent / "data" / "report_corpus.yaml").read_text(encoding="utf-8"))
    flip = {"left": "right", "right": "left"}
    for item in corpus:
        got = parse_report(_swap_sides(item["text"])).site_sides()
        want = {t: flip.get(s, s) for t, s in parse_report(item["text"]).site_sides().items()}
        assert got == want, item["id"]


def test_mirror_dice_of_small_structures_is_the_atlas_own_asymmetry():
    """Below lobe scale the template itself is asymmetric: the mask mirrors as well as the atlas does."""
    from blogrr_nnu.reports import site_mask

    for term in ("thalamus", "caudate", "hippocampus", "periventricular_white_matter"):
        mask, _ = findings_to_mask(parse_report(f"Lesion in the left {term.replace('_', ' ')}."))
        mirrored, _ = findings_to_mask(parse_report(f"Lesion in the right {term.replace('_', ' ')}."))
        left, right = site_mask(term, "left"), site_mask(term, "right")
        assert np.array_equal(mask.astype(bool), left) and np.array_equal(mirrored.astype(bool), right)
        dice = 2 * (left[::-1] & right).sum() / (left.sum() + right.sum())
        assert dice > 0.8, (term, dice)


def test_mask_contents_and_sides():
    atlas, geometry = load_hammers()
    mask, _ = findings_to_mask(parse_report("Right frontal mass."))
    frontal_r = set(load_vocabulary()["frontal"].labels["right"])
    assert set(np.unique(atlas[mask.astype(bool)])) == frontal_r
    x = (geometry.affine_lps() @ np.c_[np.argwhere(mask), np.ones(int(mask.sum()))].T)[0]
    # LPS: the patient's right is x < 0 (atlas labels reach a voxel or two over x = 0)
    assert (x <= 0).mean() > 0.99 and x.max() <= 3
    unspecified, _ = findings_to_mask(parse_report("Frontal mass."))
    assert unspecified.sum() > 1.8 * mask.sum()  # both sides
    crossing, _ = findings_to_mask(parse_report("Right frontal glioma crossing the midline."))
    assert (atlas[crossing.astype(bool)] == 44).any() and crossing.sum() > unspecified.sum()


def test_derived_regions_are_where_they_should_be():
    atlas, geometry = load_hammers()
    aff = geometry.affine_lps()
    def centroid(text):
        mask, _ = findings_to_mask(parse_report(text))
        return (aff @ np.r_[np.argwhere(mask).mean(0), 1])[:3], mask
    genu, genu_mask = centroid("Mass of the genu of the corpus callosum.")
    splenium, _ = centroid("Mass of the splenium of the corpus callosum.")
    assert genu[1] < splenium[1]  # LPS y grows posteriorly: genu is anterior
    assert set(np.unique(atlas[genu_mask.astype(bool)])) == {44}
    pv, pv_mask = centroid("Left periventricular white matter lesion.")
    cso, _ = centroid("Left centrum semiovale lesion.")
    assert pv[0] > 0 and cso[0] > 0 and cso[2] > pv[2]  # left side, centrum semiovale above
    assert not np.isin(atlas[pv_mask.astype(bool)], [45, 46, 47, 48]).any()


def test_dilation_and_explanation_are_consistent():
    parsed = parse_report("Left frontal mass, 41 x 60 x 38 mm. The right lateral ventricle is compressed.")
    mask, _ = findings_to_mask(parsed)
    grown, _ = findings_to_mask(parsed, dilate_mm=3)
    assert grown.sum() > mask.sum() and (grown >= mask).all()
    with pytest.raises(ValueError, match="dilate_mm"):
        findings_to_mask(parsed, dilate_mm=-1)
    info = json.loads(json.dumps(explain(parsed)))
    assert info["size_mm"] == [41.0, 60.0, 38.0]
    assert [s["term"] for f in info["findings"] for s in f["sites"]] == ["frontal"]
    assert {e["reason"] for e in info["excluded"]} == {"mass_effect"}
    assert [m["id"] for m in info["matched_labels"]] == matched_labels(parsed)
    assert all(m["name"].endswith(" L") for m in info["matched_labels"])
