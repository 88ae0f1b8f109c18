"""Report phrasing seen in real reports (issue 15), one property test per pattern, in our own words.

Each sentence below was written for this file; none is taken from a real report. Patterns: sides written
after the sites or in another phrase, hemispheres with and without lobes, posterior-fossa wording, negation
after the site, compressed / displaced structures, hedged spread, misspellings, one-letter sides, compound
lobes, plurals, non-brain findings, and the roles (lesion, oedema, necrosis, mass effect, hedged) that let a
pseudo-label choose its extent.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from blogrr_nnu.atlas import load_hammers
from blogrr_nnu.reports import findings_to_mask, parse_report, site_mask
from blogrr_nnu.reports.masks import drawn_sites, explain
from blogrr_nnu.reports.roles import DEFAULT_EXTENT, EXTENTS, ROLES


def drawn(text: str, extent: str = "whole_tumour") -> set[tuple[str, str]]:
    return set(drawn_sites(parse_report(text), extent))


def reasons(text: str) -> set[tuple[str, str]]:
    return {(e.term, e.reason) for e in parse_report(text).excluded}


def _swap(text: str) -> str:
    table = {"left": "right", "right": "left", "Left": "Right", "Right": "Left", "L": "R", "R": "L"}
    return re.sub(r"\b(left|right|Left|Right|L|R)\b", lambda m: table[m.group(0)], text)


# ------------------------------------------------------------------------------ sides after the sites
@pytest.mark.parametrize("text, want", [
    ("A tumour fills the temporal and occipital areas of the left hemisphere.",
     {("temporal", "left"), ("occipital", "left")}),
    ("Infiltrating glioma in the frontal and parietal areas on the right side.",
     {("frontal", "right"), ("parietal", "right")}),
    ("There is a mass in the occipital lobe of the entire right hemisphere.", {("occipital", "right")}),
    # the side is only in another sentence: every lateralised site of the report is on one side
    ("Tumour within the frontal and temporal lobes. Its oedema reaches the parietal lobe of the left hemisphere.",
     {("frontal", "left"), ("temporal", "left"), ("parietal", "left")}),
])
def test_side_after_the_sites_or_in_another_phrase(text, want):
    assert drawn(text) == want
    assert drawn(_swap(text)) == {(t, {"left": "right", "right": "left"}[s]) for t, s in want}


def test_one_side_of_the_report_is_not_guessed_when_both_sides_are_stated():
    parsed = parse_report("Right temporal glioma. Small left parietal deposit. A further lesion in the occipital lobe.")
    assert parsed.site_sides()["occipital"] == "unspecified"


# ------------------------------------------------------------------------------ hemispheres
def test_hemisphere_beside_its_lobes_draws_the_lobes_only():
    text = "A large tumour occupies the right hemisphere, involving the frontal and temporal lobes."
    assert drawn(text) == {("frontal", "right"), ("temporal", "right")}
    mask, _ = findings_to_mask(parse_report(text))
    assert np.array_equal(mask > 0, site_mask("frontal", "right") | site_mask("temporal", "right"))


def test_hemisphere_alone_is_the_whole_hemisphere_and_no_side_is_no_mask():
    assert drawn("Diffuse infiltrating tumour of the left cerebral hemisphere.") == {("hemisphere", "left")}
    assert drawn("Glioma spreading through the left side of the brain.") == {("hemisphere", "left")}
    # a hemisphere without a side would be the whole cerebrum: not drawn, and said so
    parsed = parse_report("The mass spreads across the callosal body and into the other hemisphere.")
    assert drawn_sites(parsed) == [("corpus_callosum_body", "midline")]
    assert any("hemisphere" in w and "not drawn" in w for w in parsed.warnings)


def test_lesion_located_only_by_its_hemisphere_takes_the_lobes_of_its_oedema():
    text = ("The tumour lies in the left half of the brain. Oedema spreads through the left occipital and "
            "parietal lobes. Necrotic change involves the left parietal lobe.")
    assert drawn(text, "lesion") == {("occipital", "left"), ("parietal", "left")}
    assert any("located only by its hemisphere" in w for w in parse_report(text).warnings)
    # a lobe named for the lesion itself keeps the oedema out of the lesion extent
    text2 = "Glioma in the left hemisphere, mainly the frontal lobe. Oedema extends into the left temporal lobe."
    assert drawn(text2, "lesion") == {("frontal", "left")}
    assert drawn(text2, "whole_tumour") == {("frontal", "left"), ("temporal", "left")}


def test_lesion_with_no_location_takes_its_oedema_and_necrosis_sites():
    text = "A lesion is present in several parts of the brain. Edema is mainly in the right temporal lobe."
    assert drawn(text, "lesion") == {("temporal", "right")}
    assert drawn("Tumour somewhere in the brain. No oedema.", "lesion") == set()


# ------------------------------------------------------------------------------ posterior fossa
@pytest.mark.parametrize("text, want, labels", [
    ("A cystic tumour occupies the posterior fossa in the midline and effaces the fourth ventricle.",
     {("posterior_fossa", "midline")}, {17, 18}),
    ("Solid enhancing tumour in the left part of the posterior fossa.", {("posterior_fossa", "left")}, {18}),
    ("Infratentorial mass on the right.", {("posterior_fossa", "right")}, {17}),
    ("Expansile glioma of the pons without enhancement.", {("brainstem", "midline")}, {19, 74, 75}),
])
def test_posterior_fossa_wording(text, want, labels):
    parsed = parse_report(text)
    assert set(drawn_sites(parsed)) == want
    atlas, _ = load_hammers()
    mask, _ = findings_to_mask(parsed)
    assert set(np.unique(atlas[mask > 0]).tolist()) == labels


# ------------------------------------------------------------------------------ negation after the site
@pytest.mark.parametrize("text, want", [
    ("Left frontal glioma. The right temporal lobe shows no abnormal signal.", {("frontal", "left")}),
    ("Left frontal glioma. The right temporal lobe is unremarkable.", {("frontal", "left")}),
    ("Left frontal glioma. The right occipital lobe appears normal.", {("frontal", "left")}),
    ("Left frontal glioma. Necrosis is not observed in the left temporal lobe.", {("frontal", "left")}),
    # a negated finding that still names the lesion's site keeps it
    ("No appreciable enhancement is seen within the left occipital lesion.", {("occipital", "left")}),
    ("The right parietal tumour shows no restricted diffusion.", {("parietal", "right")}),
])
def test_negation_after_the_site(text, want):
    assert drawn(text) == want


# ------------------------------------------------------------------------------ mass effect and hedges
@pytest.mark.parametrize("text, want, excluded", [
    ("Right cerebellar tumour which displaces the fourth ventricle and compresses the brainstem.",
     {("cerebellum", "right")}, {("fourth_ventricle", "mass_effect"), ("brainstem", "mass_effect")}),
    ("Glioma of the left temporal lobe. Compression of the ventricles is present near the left frontal and "
     "parietal lobes.",
     {("temporal", "left")}, {("frontal", "mass_effect"), ("parietal", "mass_effect")}),
    ("Right frontal mass, with the right lateral ventricle markedly compressed.", {("frontal", "right")},
     {("lateral_ventricle", "mass_effect")}),
    # the cause named after "due to" is the lesion
    ("Compression of the ventricles is marked, due to a tumour in the left parietal lobe.",
     {("parietal", "left")}, {("ventricles", "mass_effect")}),
])
def test_compressed_or_displaced_structures_are_not_sites(text, want, excluded):
    assert drawn(text) == want
    assert excluded <= reasons(text)


def test_hedged_spread_is_not_drawn_and_does_not_cross():
    text = ("Tumour in the left frontal lobe. Faint signal in the right hemisphere that might represent tumour "
            "spread across the corpus colosum.")
    parsed = parse_report(text)
    assert set(drawn_sites(parsed)) == {("frontal", "left")} and not parsed.crosses_midline
    assert {("hemisphere", "hedged"), ("corpus_callosum", "hedged")} <= reasons(text)
    # a hedged diagnosis is not a hedged site
    assert drawn("Right frontal mass, which may represent a high-grade glioma.") == {("frontal", "right")}


# ------------------------------------------------------------------------------ spelling, letters, compounds
@pytest.mark.parametrize("text, want", [
    ("Lymphoma of the corpus collosum.", {("corpus_callosum", "midline")}),
    ("Metastasis in the left occiptial lobe.", {("occipital", "left")}),
    ("Within the R cerebral hemisphere, in the temporoparietal area, there is an infiltrating tumour.",
     {("temporal", "right"), ("parietal", "right")}),
    ("Mass at the left frontal-parietal junction.", {("frontal", "left"), ("parietal", "left")}),
    ("Necrotic tumour of the right parietooccipital region.", {("parietal", "right"), ("occipital", "right")}),
    ("Glioma at the left temporo-occipital junction.", {("temporal", "left"), ("occipital", "left")}),
    ("Deposits in the occipital lobes.", {("occipital", "bilateral")}),
    ("Bilateral frontal tumour.", {("frontal", "bilateral")}),
])
def test_spelling_letters_compounds_plurals(text, want):
    assert drawn(text) == want


# ------------------------------------------------------------------------------ non-brain and non-tumour
def test_non_brain_findings_give_no_site_and_lend_no_side():
    assert drawn("Left optic nerve mass and an enhancing lesion in the frontal lobe.") == {("frontal", "unspecified")}
    assert drawn("Uptake in the left femoral head. Multiple liver lesions.") == set()
    assert drawn("Right frontal metastasis. The left orbit and globe are normal.") == {("frontal", "right")}


def test_punctate_white_matter_foci_are_not_a_tumour_unless_a_lesion_is_named():
    assert drawn("A few punctate bright foci dot the deep and periventricular white matter.") == set()
    assert drawn("The tumour of the left temporal lobe contains punctate high signal.") == {("temporal", "left")}


def test_a_landmark_is_the_location_when_nothing_else_is():
    assert drawn("Vasogenic oedema lies close to the right parietal lobe.") == {("parietal", "right")}
    assert drawn("Lesion adjacent to the left lateral ventricle in the left caudate.") == {("caudate", "left")}


# ------------------------------------------------------------------------------ roles and extents
def test_roles_of_a_report_and_the_two_extents():
    text = ("An enhancing mass occupies the right frontal lobe. Edema involves the right temporal lobe. "
            "It also reaches the right insula. Dark T1 signal within the right parietal lobe, in keeping with "
            "necrosis. Ventricular compression affects the right occipital lobe.")
    parsed = parse_report(text)
    assert {(s.term, s.role) for s in parsed.sites} == {
        ("frontal", "lesion"), ("temporal", "oedema"), ("insula", "oedema"), ("parietal", "necrosis")}
    assert [f.role for f in parsed.findings] == ["lesion", "oedema", "oedema", "necrosis"]
    assert drawn(text, "lesion") == {("frontal", "right")}
    assert drawn(text, "whole_tumour") == {(t, "right") for t in ("frontal", "temporal", "insula", "parietal")}
    info = explain(parsed)
    assert set(info["roles"]) == set(ROLES) and info["roles"]["mass_effect"] and info["extent"] == DEFAULT_EXTENT
    lesion, _ = findings_to_mask(parsed, extent="lesion")
    whole, _ = findings_to_mask(parsed, extent="whole_tumour")
    assert lesion.sum() > 0 and (whole >= lesion).all() and whole.sum() > lesion.sum()
    with pytest.raises(ValueError, match="extent"):
        findings_to_mask(parsed, extent="core")
    assert EXTENTS == ("lesion", "whole_tumour")


def test_oedema_inside_a_lesion_sentence_and_lesion_references():
    parsed = parse_report("Left parietal mass with surrounding oedema tracking into the left occipital lobe.")
    assert {(s.term, s.role) for s in parsed.sites} == {("parietal", "lesion"), ("occipital", "oedema")}
    # an oedema sentence that names the lesion itself: that site is the lesion
    parsed = parse_report("Vasogenic oedema surrounds the right temporal lobe lesion.")
    assert {(s.term, s.role) for s in parsed.sites} == {("temporal", "lesion")}


def test_anaphora_to_a_finding_on_both_sides_does_not_pick_one():
    parsed = parse_report("Tumour in the left parietal and right frontal lobes. The oedema extends into the insula.")
    assert parsed.site_sides()["insula"] == "unspecified"
