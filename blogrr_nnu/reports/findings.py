"""The parser's result types: lesion sites with side and role, findings, the parsed report.

Produced by :func:`blogrr_nnu.reports.parse_report`; every site and finding keeps the character span of
the words it came from.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from blogrr_nnu.reports import roles

SIDE_VALUES = ("left", "right", "bilateral", "midline", "unspecified")


@dataclass(frozen=True)
class Site:
    """One lesion site.

    Attributes:
        term: vocabulary term key, e.g. ``"frontal"``.
        side: ``left``, ``right``, ``bilateral``, ``midline`` or ``unspecified``.
        span: ``(start, end)`` character offsets of the site phrase in the report.
        text: the site phrase as written.
        side_source: how the side was found: ``explicit`` (side word before), ``list`` (side word
            before a list of sites), ``post`` (after the site), ``plural``, ``sentence``,
            ``anaphora``, ``report``, ``default``.
        side_span: offsets of the side phrase, when one was written.
        role: ``lesion``, ``oedema`` or ``necrosis`` (:mod:`blogrr_nnu.reports.roles`).
    """

    term: str
    side: str
    span: tuple[int, int]
    text: str
    side_source: str = "default"
    side_span: tuple[int, int] | None = None
    role: str = "lesion"


@dataclass(frozen=True)
class ExcludedSite:
    """A site mention that did not become a lesion site, and why (``negated``, ``normal``,
    ``mass_effect``, ``hedged``, ``proximity``, ``non_tumour``, ``non_brain``, ``parent``)."""

    term: str
    span: tuple[int, int]
    text: str
    reason: str


@dataclass
class Finding:
    """The lesion sites of one sentence, with the size and count stated with them.

    Attributes:
        sites: positive sites, in text order.
        size_mm: dimensions in mm as written (1 to 3 values) or ``None``.
        count: ``solitary``, ``multiple``, ``multifocal`` or ``None``.
        span: offsets of the sentence.
        text: the sentence.
        crosses_midline: the sentence (or a following one about the same lesion) says it crosses.
        size_span: offsets of the size phrase.
        role: what the sentence is about: ``lesion``, ``oedema``, ``necrosis`` or ``mass_effect``
            (:func:`blogrr_nnu.reports.roles.sentence_role`); each site has its own role too.
    """

    sites: list[Site]
    size_mm: tuple[float, ...] | None
    count: str | None
    span: tuple[int, int]
    text: str
    crosses_midline: bool = False
    size_span: tuple[int, int] | None = None
    role: str = "lesion"


@dataclass
class ParsedReport:
    """Result of :func:`parse_report`.

    Attributes:
        findings: one per sentence with at least one positive site.
        warnings: human-readable notes (no site found, side not stated, history used, ...).
        excluded: site mentions that were not used, with the reason.
        text: the report text.
    """

    findings: list[Finding]
    warnings: list[str] = field(default_factory=list)
    excluded: list[ExcludedSite] = field(default_factory=list)
    text: str = ""

    @property
    def sites(self) -> list[Site]:
        """All positive sites of all findings (every role: lesion, oedema, necrosis)."""
        return [s for f in self.findings for s in f.sites]

    def sites_for(self, extent: str) -> list[Site]:
        """The sites an extent draws: ``lesion`` (lesion sites) or ``whole_tumour`` (+ oedema, necrosis).

        Raises:
            ValueError: unknown extent.
        """
        wanted = roles.check_extent(extent)
        return [s for s in self.sites if s.role in wanted]

    def site_sides(self, extent: str = "whole_tumour") -> dict[str, str]:
        """Each site term of ``extent`` with one side: left + right (or bilateral anywhere) -> ``bilateral``.

        Unpaired terms mentioned once with a side and once without keep the stated side.
        """
        seen: dict[str, set[str]] = {}
        for site in self.sites_for(extent):
            seen.setdefault(site.term, set()).add(site.side)
        out = {}
        for term, sides in seen.items():
            if "bilateral" in sides or {"left", "right"} <= sides:
                out[term] = "bilateral"
            elif len(sides) == 1:
                out[term] = next(iter(sides))
            else:  # e.g. {"left", "midline"} for "left peduncle and midbrain": the stated side
                specific = sides & {"left", "right"}
                out[term] = next(iter(specific)) if specific else "unspecified"
        return out

    @property
    def size_mm(self) -> tuple[float, ...] | None:
        """Size of the largest lesion stated (largest maximum dimension)."""
        sizes = [f.size_mm for f in self.findings if f.size_mm]
        return max(sizes, key=max) if sizes else None

    @property
    def count(self) -> str | None:
        """``multifocal`` > ``multiple`` > ``solitary`` over all findings, or ``None``."""
        counts = {f.count for f in self.findings}
        return next((c for c in ("multifocal", "multiple", "solitary") if c in counts), None)

    @property
    def crosses_midline(self) -> bool:
        """Whether any finding crosses the midline."""
        return any(f.crosses_midline for f in self.findings)
