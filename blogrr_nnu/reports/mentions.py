"""Stages 1-4 of the report parser: sections, sentences, site / side mentions and cue scopes.

Internal to :mod:`blogrr_nnu.reports.parser`; every function works on character offsets into the
original report so that each finding can point back at the words that produced it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from blogrr_nnu.reports import cues
from blogrr_nnu.reports.vocabulary import Vocabulary


@dataclass
class Mention:
    """A site or side mention (mutable: the parser fills in sides and exclusions)."""

    kind: str  # "site" or "side"
    start: int
    end: int
    value: str  # term key, or side value
    excluded: str | None = None  # reason a site is not a lesion site
    side: str | None = None
    side_source: str = "default"
    side_span: tuple[int, int] | None = None
    role: str = "lesion"  # see blogrr_nnu.reports.roles


@dataclass(frozen=True)
class Scope:
    """Text covered by a cue: sites inside are excluded for ``reason`` (see :mod:`cues`)."""

    start: int
    end: int
    reason: str
    property_negation: bool = False


# ------------------------------------------------------------------------------ sections, sentences
def sections(text: str) -> list[tuple[int, int, bool]]:
    """Split ``text`` at section headers: ``(start, end, skipped)`` for each part.

    History-like sections end at the next header or at a blank line.
    """
    headers = list(cues.SECTION_HEADER.finditer(text))
    bounds = [0] + [m.start() for m in headers] + [len(text)]
    out = []
    for i, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        header = headers[i - 1] if i > 0 else None
        skipped = bool(header and cues.SKIPPED_SECTIONS.search(header.group("name")))
        if skipped:
            blank = re.search(r"\n[ \t]*\n", text[start:end])
            if blank:  # a blank line ends the history paragraph; what follows is read
                out.append((start, start + blank.start(), True))
                start = start + blank.end()
                skipped = False
        if header is not None and not skipped:
            start = max(start, header.end())  # the header word itself is not content
        if end > start:
            out.append((start, end, skipped))
    return out


_BOUNDARY = re.compile(r"[.!?](?=\s|$)|;|\n")


def sentences(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Sentence spans in ``text[start:end]``, stripped of whitespace and bullet marks.

    Breaks at ``. ! ?`` followed by space (not after abbreviations, so decimals and "approx." stay),
    at ``;``, and at line breaks where the previous line ended with punctuation / a colon or the
    next line starts a bullet, a number or a capital letter (wrapped prose lines stay together).
    """
    out, cursor = [], start
    for m in _BOUNDARY.finditer(text, start, end):
        if m.group(0) == "." and cues.ABBREVIATIONS.search(text[max(start, m.start() - 6):m.end()]):
            continue
        if m.group(0) == "\n":
            prev = text[cursor:m.start()].rstrip()
            nxt = text[m.end():end].lstrip(" \t")
            if prev and prev[-1] not in ".:;!?" and not re.match(r"[-*\u2022\d]|[A-Z]", nxt):
                continue
        out.append((cursor, m.end()))
        cursor = m.end()
    out.append((cursor, end))
    spans = []
    for s, e in out:
        chunk = text[s:e]
        lead = len(chunk) - len(chunk.lstrip(" \t\n-*\u2022"))
        lead += len(re.match(r"(?:\d+[.)]\s+)?", chunk[lead:]).group(0))
        s2, e2 = s + lead, s + len(chunk.rstrip())
        if e2 > s2:
            spans.append((s2, e2))
    return spans


# ------------------------------------------------------------------------------ sites and sides
class SiteMatcher:
    """Compiled site patterns of one vocabulary."""

    def __init__(self, vocabulary: Vocabulary):
        self.vocabulary = vocabulary
        # Each alias separately: a regex alternation returns the first alternative that matches,
        # not the longest, and "longest wins" is what disambiguates "temporal horn" from "temporal".
        self.term_patterns = [
            (key, re.compile(rf"(?<![\w-]){alias}(?![\w])", re.IGNORECASE))
            for key, term in vocabulary.terms.items() for alias in term.aliases
        ]
        self.non_brain = [re.compile(rf"(?<![\w-]){p}\b", re.IGNORECASE) for p in vocabulary.non_brain]
        self.prefix_re = "|".join(map(re.escape, vocabulary.combined_prefixes))
        self.combined = re.compile(
            rf"""(?<![\w-])(?P<pre>(?:(?:{self.prefix_re})[\s-]?)+)
                 (?P<last>frontal|parietal|temporal|occip(?:it|ti)al|insular?)(?:\s+lobes?)?\b""",
            re.IGNORECASE | re.VERBOSE)

    def sites(self, text: str) -> list[Mention]:
        """Non-overlapping site mentions in ``text``; the longest candidate wins, then the earliest.

        A combined form ("fronto-parietal") yields one mention per lobe, all with the same span.
        """
        candidates: list[tuple[int, int, tuple[str, ...], str | None]] = []
        for key, pattern in self.term_patterns:
            candidates += [(m.start(), m.end(), (key,), None) for m in pattern.finditer(text)]
        for pattern in self.non_brain:
            candidates += [(m.start(), m.end(), ("non_brain",), "non_brain") for m in pattern.finditer(text)]
        lobe_of = {**self.vocabulary.combined_prefixes, "insular": "insula", "insula": "insula",
                   "frontal": "frontal", "parietal": "parietal", "temporal": "temporal", "occipital": "occipital",
                   "occiptial": "occipital"}
        for m in self.combined.finditer(text):
            names = re.findall(self.prefix_re, m.group("pre").lower()) + [m.group("last").lower()]
            terms = tuple(dict.fromkeys(lobe_of[n] for n in names))
            candidates.append((m.start(), m.end(), terms, None))
        taken: list[tuple[int, int]] = []
        out = []
        for start, end, terms, reason in sorted(candidates, key=lambda c: (-(c[1] - c[0]), c[0])):
            if any(start < e and s < end for s, e in taken):
                continue
            taken.append((start, end))
            out += [Mention("site", start, end, t, excluded=reason) for t in terms]
        return sorted(out, key=lambda m: (m.start, m.end))


def sides(text: str, start: int, end: int, blocked: list[tuple[int, int]]) -> list[Mention]:
    """Side mentions in ``text[start:end]``, except inside ``blocked`` spans ("midline shift")."""
    out = []
    for m in cues.SIDE.finditer(text, start, end):
        if any(m.start() < e and s < m.end() for s, e in blocked):
            continue
        out.append(Mention("side", m.start(), m.end(), m.lastgroup))
    return out


def is_filler(gap: str) -> bool:
    """Whether ``gap`` holds only words that may separate a side word from its site (or list items)."""
    return bool(cues.FILLER_GAP.match(gap))


# ------------------------------------------------------------------------------ scopes
_PROXIMITY_STOP = re.compile(r"\b(?:in|within|at|on|into|from|involving)\b|,", re.IGNORECASE)


def _forward_end(text: str, cue_end: int, end: int, extra: re.Pattern | None = None) -> int:
    """End of a forward scope: the first terminator after some content, else the sentence end."""
    stops = sorted(list(cues.TERMINATOR.finditer(text, cue_end, end))
                   + (list(extra.finditer(text, cue_end, end)) if extra else []), key=lambda t: t.start())
    hard = cues.HARD_TERMINATOR.search(text, cue_end, end)
    limit = hard.start() if hard else end
    for t in stops:
        if t.start() >= limit:
            break
        if text[cue_end:t.start()].strip(" ,"):  # a terminator opening the scope is its object
            return t.start()
    return limit


def _clause_start(text: str, start: int, cue_start: int) -> int:
    last = start
    for b in cues.CLAUSE_BOUNDARY.finditer(text, start, cue_start):
        last = b.end()
    return last


def scopes(text: str, start: int, end: int) -> list[Scope]:
    """All cue scopes of the sentence ``text[start:end]``.

    Kinds: ``negated`` (no / without / is spared), ``normal`` (is normal / unremarkable),
    ``mass_effect`` (effacement of / is compressed / midline shift), ``proximity`` (adjacent to).
    """
    out = []
    forward = [(cues.NEGATION_FORWARD, "negated"), (cues.NORMAL_FORWARD, "normal"),
               (cues.MASS_EFFECT_FORWARD, "mass_effect"), (cues.PROXIMITY_FORWARD, "proximity")]
    backward = [(cues.NEGATION_BACKWARD, "negated"), (cues.NORMAL_BACKWARD, "normal"),
                (cues.MASS_EFFECT_BACKWARD, "mass_effect")]
    for pattern, reason in forward:
        for m in pattern.finditer(text, start, end):
            prop = reason == "negated" and bool(cues.PROPERTY.match(text, m.end(), end))
            # "adjacent to X in the left caudate": a proximity scope is only the landmark phrase
            extra = _PROXIMITY_STOP if reason == "proximity" else None
            out.append(Scope(m.start(), _forward_end(text, m.end(), end, extra), reason, prop))
    for pattern, reason in backward:
        for m in pattern.finditer(text, start, end):
            out.append(Scope(_clause_start(text, start, m.start()), m.end(), reason))
    out += [Scope(m.start(), m.end(), "mass_effect") for m in cues.MASS_EFFECT_ABSOLUTE.finditer(text, start, end)]
    return out


_BLOCK_SIDE = re.compile(r"""
    \bmidline\s+(?:shift|structures?|glioma)\b | \bshift\w*\s+(?:to(?:wards)?|of)\s+(?:\d+\s*mm\s+)?(?:the\s+)?(?:left|right)\b
  | \bdisplaced\s+to(?:wards)?\s+the\s+(?:left|right)\b | \b(?:left|right)ward\b
  | \b(?:left|right)\s*(?:-\s*)?handed\b
""", re.IGNORECASE | re.VERBOSE)


def cue_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Spans where a side word belongs to a cue, not to a site ("midline shift to the left")."""
    spans = [(m.start(), m.end()) for m in _BLOCK_SIDE.finditer(text, start, end)]
    spans += [(m.start(), m.end()) for m in cues.NON_BRAIN_SIDE.finditer(text, start, end)]
    spans += [(m.start(), m.end()) for m in cues.CROSSES_MIDLINE.finditer(text, start, end)
              if "midline" in m.group(0).lower()]
    return spans


def apply_scopes(text: str, sites: list[Mention], scope_list: list[Scope], end: int) -> None:
    """Mark each site inside a scope as excluded (in place), with the lesion-reference exception."""
    for site in sites:
        if site.excluded:
            continue
        for scope in scope_list:
            if not (scope.start <= site.start and site.end <= scope.end):
                continue
            if scope.property_negation and cues.LESION_NOUN.match(text, site.end, end):
                continue  # "no enhancement in the left frontal lesion": the lesion is still there
            site.excluded = scope.reason
            break
    # A landmark is only a landmark when something else is the location: "oedema near the left parietal
    # lobe" with no other site still places the oedema there.
    if not any(not s.excluded for s in sites):
        for site in sites:
            if site.excluded == "proximity":
                site.excluded = None


def apply_heading_rule(text: str, sent_sites: list[Mention], scope_list: list[Scope], start: int, end: int) -> None:
    """A site used as a heading ("Ventricles: mild effacement of ...") shares the fate of its body.

    The body's first words decide: a mass-effect / normal / negation cue there excludes the heading
    site too; otherwise the heading is a normal site ("Right temporal lobe: large mass").
    """
    colon = text.find(":", start, end)
    if colon < 0:
        return
    head = [m for m in sent_sites if m.end <= colon]
    if not head or not is_filler(re.sub(r"(?i)\b(?:left|right|lt|rt|L|R|bilateral)\b", "", text[start:head[0].start])):
        return
    body = re.match(r":\s*(?:[\w-]+\s+){0,2}", text[colon:end])
    limit = colon + (body.end() if body else 1)
    cue = next((sc for sc in sorted(scope_list, key=lambda sc: sc.start) if colon <= sc.start <= limit), None)
    if cue is not None and cue.reason in ("mass_effect", "normal", "negated"):
        for m in head:
            m.excluded = m.excluded or cue.reason
