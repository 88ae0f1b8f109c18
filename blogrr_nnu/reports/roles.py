"""Roles of report sites (which part of the tumour a site holds) and the extent a pseudo-label draws.

A report says where the tumour is, and often also where its oedema and necrosis are, which structures it
compresses, and where it *may* have spread. Each site mention gets one role:

* ``lesion``: the tumour itself (the default);
* ``oedema`` / ``necrosis``: the site is named for the tumour's oedema or necrosis: the sentence is about it
  ("Oedema involves the left frontal lobe", "The zone of oedema reaches ...", a pronoun sentence right
  after one: "It extends into ..."; a sentence naming no lesion whose finding is read as oedema/necrosis:
  "dark T1 signal within the right occipital lobe, in keeping with necrosis"), or the site
  follows an oedema/necrosis word in a lesion sentence ("mass with oedema extending into the insula");
  "the left frontal *lesion*" in such a sentence is still the lesion;
* ``mass_effect``: compressed or displaced, not involved ("Compression of the ventricles is present near the right
  frontal lobe"; also the mass-effect scopes of :mod:`cues`); the cause named after "due to" / "by" is the
  lesion;
* ``hedged``: spread the report only offers as a possibility ("faint change in the left hemisphere that
  might reflect spread through the callosum"): both the site of that change and the spread.

``mass_effect`` and ``hedged`` sites are never drawn (they are listed under ``excluded`` with that reason).
The **extent** of a pseudo-label says which of the other roles are drawn: ``lesion`` (the lesion sites) or
``whole_tumour`` (lesion + oedema + necrosis, the extent of BraTS-style "whole tumour" labels).

Two report-level rules use the roles:

* a lesion located only by a hemisphere ("in the left cerebral hemisphere", "the left side of the brain")
  or not at all ("somewhere in the brain") is where its oedema / necrosis are: those sites (of that
  side) become lesion sites (:func:`promote_unlocated_lesion`);
* a hemisphere is only drawn where no part of it is named: "right hemisphere, including the frontal and
  parietal lobes" draws two lobes, not the hemisphere; a hemisphere without any side is not drawn (it would
  be the whole brain) (:func:`refine_hemispheres`).
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from blogrr_nnu.reports import cues
from blogrr_nnu.reports.vocabulary import Term, Vocabulary

if TYPE_CHECKING:  # findings.py and parser.py import this module
    from blogrr_nnu.reports.findings import ExcludedSite, Finding
    from blogrr_nnu.reports.mentions import Mention

ROLES = ("lesion", "oedema", "necrosis", "mass_effect", "hedged")
EXTENT_ROLES = {"lesion": ("lesion",), "whole_tumour": ("lesion", "oedema", "necrosis")}
EXTENTS = tuple(EXTENT_ROLES)
# Measured with `blogrr_report_quality -d 501 --extent ...` on the demo's training labels (labelsTrTumor,
# whole-tumour phantoms): both extents give the same masks there (its reports place no oedema elsewhere), so
# the default follows what the pseudo-label is trained against: BraTS-style whole-tumour labels include the
# oedema. docs/reports.md has the numbers.
DEFAULT_EXTENT = "whole_tumour"
HEMISPHERE = "hemisphere"


def check_extent(extent: str) -> tuple[str, ...]:
    """Roles drawn by ``extent``.

    Raises:
        ValueError: ``extent`` is not one of :data:`EXTENTS`.
    """
    if extent not in EXTENT_ROLES:
        raise ValueError(f"extent must be one of {EXTENTS}, got {extent!r}")
    return EXTENT_ROLES[extent]


# ------------------------------------------------------------------------------ sentence roles
def sentence_role(text: str, start: int, end: int, previous: str | None) -> str:
    """Role of the sentence ``text[start:end]`` as a whole (``lesion`` unless it is about a component).

    Args:
        text: the report.
        start, end: the sentence span.
        previous: role of the previous sentence (a pronoun subject continues it).

    Returns:
        ``lesion``, ``oedema``, ``necrosis`` or ``mass_effect``.
    """
    subject = cues.ROLE_SUBJECT.match(text, start, end)
    if subject:
        return subject.lastgroup
    if previous in ("oedema", "necrosis") and cues.PRONOUN_SUBJECT.match(text, start, end):
        return previous
    sentence = text[start:end]
    word = cues.ROLE_INTERPRETATION.search(sentence)
    if word and not (cues.LESION_WORD.search(sentence) or cues.FOCUS_WORD.search(sentence)
                     or cues.TUMOUR_WORD.search(sentence)):
        return word.lastgroup  # "Dark T1 signal within the right occipital lobe, in keeping with necrosis."
    return "lesion"


def hedge_scopes(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Spans of hedged spread in a sentence: the clause before the hedge cue and the text after it."""
    out = []
    for m in cues.HEDGE.finditer(text, start, end):
        begin = start
        for b in cues.HEDGE_BOUNDARY.finditer(text, start, m.start()):
            begin = b.end()
        stop = cues.HEDGE_END.search(text, m.end(), end)
        out.append((begin, stop.start() if stop else end))
    return out


def _component_scopes(text: str, start: int, end: int) -> list[tuple[int, int, str]]:
    """Oedema / necrosis words inside a lesion sentence: each covers the text after it up to a terminator."""
    out = []
    for m in cues.ROLE_WORD.finditer(text, start, end):
        stop = cues.ROLE_TERMINATOR.search(text, m.end(), end)
        out.append((m.end(), stop.start() if stop else end, m.lastgroup))
    return out


def assign_roles(text: str, sites: list[Mention], start: int, end: int, role: str) -> None:
    """Set the role of every site of one sentence (in place); mass-effect and hedged sites are excluded.

    Args:
        text: the report.
        sites: the sentence's site mentions (already excluded ones are left alone).
        start, end: the sentence span.
        role: :func:`sentence_role` of the sentence.
    """
    hedged = hedge_scopes(text, start, end)
    components = _component_scopes(text, start, end) if role == "lesion" else []
    cause = cues.HARD_TERMINATOR.search(text, start, end)  # "compression ... due to lesions in X"
    for m in sites:
        if m.excluded:
            continue
        if any(a <= m.start and m.end <= b for a, b in hedged):
            m.excluded = "hedged"
            continue
        lesion_reference = bool(cues.LESION_NOUN.match(text, m.end, end))  # "the right frontal lesion"
        if role == "mass_effect":
            if lesion_reference or (cause is not None and m.start >= cause.end()):
                m.role = "lesion"
            else:
                m.excluded = "mass_effect"
        elif role != "lesion":
            m.role = "lesion" if lesion_reference else role
        else:
            inside = [r for a, b, r in components if a <= m.start and m.end <= b]
            m.role = inside[-1] if inside and not lesion_reference else "lesion"


# ------------------------------------------------------------------------------ report-level rules
def is_hemisphere_part(term: Term, vocabulary: Vocabulary) -> bool:
    """Whether ``term`` is a part of a cerebral hemisphere (a lobe, gyrus, deep nucleus, white-matter region)."""
    if term.key == HEMISPHERE or not term.paired or HEMISPHERE not in vocabulary.terms:
        return False
    if term.derived:
        return term.derived["kind"] in ("wm_near_ventricles", "wm_above_ventricles")
    hemisphere = vocabulary[HEMISPHERE]
    return all(set(term.labels_for(s)) <= set(hemisphere.labels_for(s)) for s in ("left", "right"))


def _covered(side: str) -> set[str]:
    """Hemispheres a drawn paired site covers (``bilateral``/``unspecified``/``midline`` draw both)."""
    return {side} if side in ("left", "right") else {"left", "right"}


def refine_hemispheres(pairs: list[tuple[str, str]], vocabulary: Vocabulary) -> list[tuple[str, str]]:
    """Drop the hemisphere sides that other drawn sites already locate, and hemispheres without a side.

    Args:
        pairs: ``(term, side)`` pairs to draw.
        vocabulary: the site table.

    Returns:
        The pairs, hemispheres replaced by the hemisphere sides no part of which is drawn.
    """
    covered: set[str] = set()
    for term, side in pairs:
        if is_hemisphere_part(vocabulary[term], vocabulary):
            covered |= _covered(side)
    out = []
    for term, side in pairs:
        if term != HEMISPHERE:
            out.append((term, side))
        elif side in ("left", "right", "bilateral"):
            out += [(HEMISPHERE, s) for s in sorted(_covered(side) - covered)]
    return list(dict.fromkeys(out))


def promote_unlocated_lesion(findings: list[Finding], vocabulary: Vocabulary) -> list[str]:
    """Oedema / necrosis sites become lesion sites where the lesion itself is located no better than a hemisphere.

    Args:
        findings: the report's findings (sites replaced in place).
        vocabulary: the site table.

    Returns:
        Warnings, one per promotion.
    """
    lesion = [s for f in findings for s in f.sites if s.role == "lesion"]
    if not lesion:
        wanted = {"left", "right", "bilateral", "unspecified", "midline"}
        why = "no lesion site is named"
    else:
        located = set()
        for s in lesion:
            if is_hemisphere_part(vocabulary[s.term], vocabulary):
                located |= _covered(s.side)
        wanted = {side for s in lesion if s.term == HEMISPHERE and s.side in ("left", "right", "bilateral")
                  for side in _covered(s.side)} - located
        why = "the lesion is located only by its hemisphere"
    warnings = []
    for f in findings:
        for i, s in enumerate(f.sites):
            if s.role in ("oedema", "necrosis") and s.side in wanted and s.term != HEMISPHERE:
                f.sites[i] = dataclasses.replace(s, role="lesion")
                warnings.append(f"{why}: {s.role} site {s.side} {s.term} ({s.text!r} at {s.span}) is used as a "
                                f"lesion site")
    return warnings


def role_summary(findings: list[Finding], excluded: list[ExcludedSite]) -> dict[str, list[str]]:
    """``{role: ["<side> <term> 'text'", ...]}`` for all five roles (mass effect and hedged from exclusions)."""
    out: dict[str, list[str]] = {r: [] for r in ROLES}
    for f in findings:
        for s in f.sites:
            out[s.role].append(f"{s.side} {s.term} {s.text!r}")
    for e in excluded:
        if e.reason in ("mass_effect", "hedged"):
            out[e.reason].append(f"{e.term} {e.text!r}")
    return out

