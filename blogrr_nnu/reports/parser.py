"""English radiology report -> structured lesion findings (sites, sides, size, count, spans).

Rule-based, in stages (details and cue lists in ``docs/reports.md``):

1. **Sections**: history / indication / technique / comparison sections are skipped (they say what
   was suspected or how the scan was made, not what it shows); they are used, with a warning,
   only when the rest of the report names no site.
2. **Sentences**: split at ``. ! ? ;`` (not after decimals or abbreviations) and at line breaks
   that start a bullet or follow a colon / full stop.
3. **Mentions**: site terms from ``vocabulary.yaml`` (longest match wins), combined lobes
   ("fronto-parietal"), side words, and scope cues (negation, normal, mass effect, proximity).
4. **Scopes**: forward cues cover text to the next terminator; backward cues cover their clause.
   A site inside a negation / normal / mass-effect / proximity scope is excluded, except a site that
   names a known lesion ("the left frontal lesion") when the negated thing is a lesion property
   ("no enhancement"). Sentences about non-tumour findings (infarcts, sinus disease) are excluded.
   Each remaining site gets a role (:mod:`blogrr_nnu.reports.roles`): lesion, oedema or necrosis;
   mass-effect and hedged-spread mentions are excluded.
5. **Sides**: a side word applies to the site right after it and across a list of sites
   ("right frontal, temporal and insular lobes"); else a side after the site ("on the left",
   "bilaterally"); else a plural noun ("the frontal lobes") means bilateral; else the side of the
   previous positive site of the sentence, or of the previous finding when the sentence refers back
   to it ("The lesion extends into the insula"); else the side that the same site has elsewhere in
   the report, or the one side of the whole report; else ``unspecified`` (paired sites; the mask
   then uses both sides) or ``midline``. Last, a lesion located only by its hemisphere (or not at
   all) takes its oedema / necrosis sites of that side as lesion sites.
"""
from __future__ import annotations

import logging
import re

from blogrr_nnu.reports import cues, roles
# The result types live in findings.py; importing them here keeps `from ...parser import Site` working.
from blogrr_nnu.reports.findings import SIDE_VALUES, ExcludedSite, Finding, ParsedReport, Site  # noqa: F401
from blogrr_nnu.reports.mentions import (Mention, Scope, SiteMatcher, apply_heading_rule, apply_scopes, cue_spans,
                                         is_filler, scopes, sections, sentences, sides)
from blogrr_nnu.reports.vocabulary import Vocabulary, load_vocabulary

logger = logging.getLogger(__name__)

_ANAPHORA = re.compile(r"""\b(?:the|this|that|its?|which|these)\s+(?:[\w-]+\s+){0,2}?
    (?:lesions?|mass|tumou?r|abnormality|neoplasm|glioma|component|enhancement)\b|\bit\b|\b(?:o)?edema\b""",
                       re.IGNORECASE | re.VERBOSE)


# ------------------------------------------------------------------------------------------ parsing
_MATCHERS: dict[int, SiteMatcher] = {}


def _matcher(vocabulary: Vocabulary) -> SiteMatcher:
    key = id(vocabulary)
    if key not in _MATCHERS:
        _MATCHERS[key] = SiteMatcher(vocabulary)
    return _MATCHERS[key]


def _inside(span: tuple[int, int], scope_list: list[Scope], reasons: tuple[str, ...]) -> bool:
    return any(sc.start <= span[0] and span[1] <= sc.end and sc.reason in reasons for sc in scope_list)


class _Parser:
    """One parse: walks the sentences in order, keeping the state sides are inherited from."""

    def __init__(self, text: str, vocabulary: Vocabulary):
        self.text = text
        self.vocabulary = vocabulary
        self.all_sites = _matcher(vocabulary).sites(text)
        self.findings: list[Finding] = []
        self.excluded: list[ExcludedSite] = []
        self.positives: list[Mention] = []  # positive sites so far, report order
        self.previous_role = "lesion"  # role of the last sentence (a pronoun subject continues it)

    # -------------------------------------------------------------- sides
    def _pre_side(self, items: list[Mention], idx: int) -> tuple[Mention | None, bool]:
        """Nearest side word before ``items[idx]`` reachable over filler and other sites.

        Returns the side mention (or None) and whether the path crossed a site of another term.
        """
        site, cur, other_term = items[idx], items[idx], False
        for prev in reversed(items[:idx]):
            gap = self.text[prev.end:cur.start] if prev.end <= cur.start else ""
            if not is_filler(gap):
                return None, other_term
            if prev.kind == "side":
                whole_gap = self.text[prev.end:site.start]
                if "," in whole_gap and re.search(r"\bon\s+the\s*$", self.text[:prev.start], re.IGNORECASE):
                    return None, other_term  # "..., more marked on the right, and the midbrain": a post-side
                return prev, other_term
            other_term |= prev.value != site.value
            cur = prev
        return None, other_term

    def _post_side(self, items: list[Mention], idx: int, end: int) -> tuple[str | None, tuple[int, int] | None]:
        """A side written after the site or after the list it ends ("... lobes on the left")."""
        j = idx
        while j + 1 < len(items) and items[j + 1].kind == "site" and is_filler(
                self.text[items[j].end:items[j + 1].start] if items[j].end <= items[j + 1].start else ""):
            j += 1
        m = cues.POST_SIDE.match(self.text, items[j].end, end)
        if not m:
            return None, None
        following = [it for it in items if it.start >= m.end()]
        if m.lastgroup != "of" and following and following[0].kind == "site" and is_filler(self.text[m.end():following[0].start]):
            return None, None  # "frontal and left parietal": that side word belongs to the next site
        word = m.group(m.lastgroup).lower()
        side = "bilateral" if m.lastgroup == "bil" or word == "bilateral" else {"l": "left", "r": "right", "lt": "left", "rt": "right"}.get(word, word)
        if m.lastgroup == "of" and following and following[0].kind == "site":
            nxt, term = following[0], self.vocabulary[items[idx].value]
            ancestors = {items[idx].value}
            while term.parent:
                ancestors.add(term.parent)
                term = self.vocabulary[term.parent]
            if nxt.value in ancestors | {"hemisphere"} and not nxt.excluded:
                nxt.excluded = "side_reference"  # "frontal lobe of the left hemisphere"
        return side, (m.start(), m.end())

    def _reference_side(self, earlier: list[Mention]) -> str | None:
        for m in reversed(self.positives + earlier):
            if m.side in ("left", "right"):
                return m.side
        return None

    def _assign_sides(self, sent_sites: list[Mention], sent_sides: list[Mention], end: int, anaphoric: bool) -> None:
        items = sorted(sent_sites + sent_sides, key=lambda m: (m.start, m.kind != "side"))
        earlier: list[Mention] = []
        used: set[int] = set()  # side mentions already claimed by a site
        for idx, site in enumerate(items):
            if site.kind != "site" or site.value == "non_brain":
                continue
            term = self.vocabulary[site.value]
            pre, other_term = self._pre_side(items, idx)
            if pre is not None and not (not term.paired and other_term):
                side, source, span = pre.value, ("list" if other_term else "explicit"), (pre.start, pre.end)
                if side in ("contralateral", "ipsilateral"):
                    ref = self._reference_side(earlier)
                    side = "unspecified" if ref is None else ref if side == "ipsilateral" else {"left": "right", "right": "left"}[ref]
            else:
                post, span = self._post_side(items, idx, end)
                if post is not None:
                    side, source = post, "post"
                elif not term.paired:
                    side, source, span = "midline", "default", None
                elif cues.PLURAL.search(self.text[site.start:site.end + 7]) and not self._in_list(items, idx):
                    side, source = "bilateral", "plural"
                else:
                    side, source = self._inherited(earlier, anaphoric)
                    free = [it for it in items[:idx] if it.kind == "side" and id(it) not in used
                            and it.value in ("left", "right", "bilateral")]
                    if source in ("default", "anaphora") and free:
                        # "Right haemorrhagic tumour in the occipital lobe": a side word of the
                        # sentence that no site has claimed
                        side, source, span = free[-1].value, "sentence", (free[-1].start, free[-1].end)
            site.side, site.side_source, site.side_span = side, source, span
            if span is not None:
                used.update(id(it) for it in items if it.kind == "side" and (it.start, it.end) == span)
            if not site.excluded:
                earlier.append(site)

    def _in_list(self, items: list[Mention], idx: int) -> bool:
        prev = [it for it in items[:idx] if it.kind == "site"]
        return bool(prev) and is_filler(self.text[prev[-1].end:items[idx].start] if prev[-1].end <= items[idx].start else "")

    def _inherited(self, earlier: list[Mention], anaphoric: bool) -> tuple[str, str]:
        for m in reversed(earlier):
            if m.side in ("left", "right", "bilateral"):
                return m.side, "sentence"
        if anaphoric and self.findings:
            # "it" / "the oedema" refers to the previous finding: its side, when it has only one
            stated = {s.side for s in self.findings[-1].sites if s.side in ("left", "right", "bilateral")}
            if len(stated) == 1:
                return stated.pop(), "anaphora"
        return "unspecified", "default"

    # -------------------------------------------------------------- sentences
    def sentence(self, start: int, end: int) -> None:
        text = self.text
        sent_sites = [m for m in self.all_sites if start <= m.start and m.end <= end]
        blocked = cue_spans(text, start, end) + [(m.start, m.end) for m in sent_sites]
        sent_sides = sides(text, start, end, blocked)
        scope_list = scopes(text, start, end)
        apply_scopes(text, sent_sites, scope_list, end)
        sentence_text = text[start:end]
        weak = cues.NON_TUMOUR_WEAK.search(sentence_text) and not cues.LESION_WORD.search(sentence_text)
        if (cues.NON_TUMOUR.search(sentence_text) or weak) and not cues.TUMOUR_WORD.search(sentence_text):
            for m in sent_sites:
                m.excluded = m.excluded or "non_tumour"
        apply_heading_rule(text, sent_sites, scope_list, start, end)
        role = roles.sentence_role(text, start, end, self.previous_role)
        roles.assign_roles(text, sent_sites, start, end, role)
        self.previous_role = role
        anaphoric = not sent_sides and bool(_ANAPHORA.search(sentence_text))
        self._assign_sides(sent_sites, sent_sides, end, anaphoric)
        positive = [m for m in sent_sites if not m.excluded]
        for m in positive:  # "genu of the corpus callosum" named with "corpus callosum": keep the part
            parents = {self.vocabulary[o.value].parent for o in positive if o is not m}
            if m.value in parents:
                m.excluded = "parent"
        positive = [m for m in positive if not m.excluded]
        self.excluded += [ExcludedSite(m.value, (m.start, m.end), text[m.start:m.end], m.excluded)
                          for m in sent_sites if m.excluded]
        neg = ("negated", "normal", "mass_effect")
        hedged = roles.hedge_scopes(text, start, end)  # "may represent extension across the callosum"
        crossing = any(not _inside(m.span(), scope_list, ("negated",))
                       and not any(a <= m.start() < b for a, b in hedged)
                       for m in cues.CROSSES_MIDLINE.finditer(text, start, end))
        count = None
        for name, pattern in (("multifocal", cues.COUNT_MULTIFOCAL), ("multiple", cues.COUNT_MULTIPLE),
                              ("solitary", cues.COUNT_SOLITARY)):
            if any(not _inside(m.span(), scope_list, ("negated",)) for m in pattern.finditer(text, start, end)):
                count = name
                break
        size = next((sz for sz in cues.find_sizes(text, start, end) if not _inside(sz.span, scope_list, neg)), None)
        if positive:
            self.positives += positive
            self.findings.append(Finding(
                sites=[Site(m.value, m.side or "unspecified", (m.start, m.end), text[m.start:m.end], m.side_source,
                            m.side_span, m.role) for m in positive],
                size_mm=size.size_mm if size else None, count=count, span=(start, end), text=sentence_text,
                crosses_midline=crossing, size_span=size.span if size else None, role=role))
        elif self.findings:  # "It measures 28 mm." / "The mass crosses the midline." belong to the last finding
            last = self.findings[-1]
            if last.size_mm is None and size is not None:
                last.size_mm, last.size_span = size.size_mm, size.span
            last.crosses_midline |= crossing
            last.count = last.count or count

    def resolve_report_sides(self) -> list[str]:
        """Unstated sides take the side the same site has elsewhere in the report, else the one side every
        lateralised site of the report has ("temporal and occipital lobes ... oedema of the left hemisphere");
        warn on the rest."""
        warnings = []
        stated = {s.side for f in self.findings for s in f.sites if s.side in ("left", "right", "bilateral")}
        for finding in self.findings:
            for i, site in enumerate(finding.sites):
                if site.side != "unspecified":
                    continue
                known = {s.side for f in self.findings for s in f.sites
                         if s.term == site.term and s.side in ("left", "right", "bilateral")}
                if len(known) == 1 or stated in ({"left"}, {"right"}):
                    side = known.pop() if len(known) == 1 else next(iter(stated))
                    finding.sites[i] = Site(site.term, side, site.span, site.text, "report", site.side_span, site.role)
                else:
                    what = "it is not drawn" if site.term == roles.HEMISPHERE else "both sides are used"
                    warnings.append(f"side of {site.term!r} not stated at {site.span} ({site.text!r}): {what}")
        return warnings


def parse_report(text: str, *, vocabulary: Vocabulary | None = None) -> ParsedReport:
    """Parse an English free-text radiology report into lesion findings.

    Args:
        text: the report (any length; sections, bullets and line breaks are understood).
        vocabulary: site table; the package's ``vocabulary.yaml`` when ``None``.

    Returns:
        A :class:`ParsedReport`. A report naming no lesion site has no findings and a warning.

    Raises:
        TypeError: ``text`` is not a string.

    Example:
        >>> r = parse_report("Mass in the right frontal, temporal and insular lobes, 4.1 x 3 cm.")
        >>> [(s.term, s.side) for s in r.sites]
        [('frontal', 'right'), ('temporal', 'right'), ('insula', 'right')]
        >>> r.size_mm
        (41.0, 30.0)
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_report expects the report text as str, got {type(text).__name__}")
    vocabulary = vocabulary or load_vocabulary()
    parser = _Parser(text, vocabulary)
    parts = sections(text)
    for start, end, skipped in parts:
        if not skipped:
            for s, e in sentences(text, start, end):
                parser.sentence(s, e)
    warnings = []
    if not parser.findings and any(skipped for *_, skipped in parts):
        for start, end, skipped in parts:
            if skipped:
                for s, e in sentences(text, start, end):
                    parser.sentence(s, e)
        if parser.findings:
            warnings.append("no lesion site in the findings; sites were taken from the history / indication")
    warnings += parser.resolve_report_sides()
    warnings += roles.promote_unlocated_lesion(parser.findings, vocabulary)
    if not parser.findings:
        warnings.append("no lesion site found in the report: the pseudo-label will be empty")
    for w in warnings:
        logger.info("report: %s", w)
    return ParsedReport(findings=parser.findings, warnings=warnings, excluded=parser.excluded, text=text)
