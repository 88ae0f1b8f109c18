"""The report vocabulary: site terms, their text aliases and their Hammers atlas labels.

The table itself is data (``vocabulary.yaml`` in this package); this module loads it with
:mod:`importlib.resources`, compiles the alias patterns and validates every label id against
:func:`blogrr_nnu.atlas.hammers_regions`, so a typo in the YAML fails loudly at load time rather than
producing a silently wrong pseudo-label.
"""
from __future__ import annotations

import functools
import importlib.resources
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

logger = logging.getLogger(__name__)

SIDES = ("left", "right", "midline")
DERIVED_KINDS = ("label_part", "wm_near_ventricles", "wm_above_ventricles")


class VocabularyError(ValueError):
    """The vocabulary table is malformed or does not match the atlas."""


@dataclass(frozen=True)
class Term:
    """One site term of the vocabulary.

    Attributes:
        key: the term name used in findings, e.g. ``"frontal"`` or ``"corpus_callosum_genu"``.
        paired: whether the site exists on both sides (``False`` for midline structures).
        aliases: regex fragments naming the site in text (case-insensitive).
        labels: Hammers label ids per side (``"left"``, ``"right"``, ``"midline"``); empty for
            derived regions.
        derived: parameters of an atlas-derived region (``kind`` plus kind-specific keys) or ``None``.
        parent: a broader term this one refines (e.g. genu -> corpus callosum) or ``None``.
    """

    key: str
    paired: bool
    aliases: tuple[str, ...]
    labels: dict[str, tuple[int, ...]] = field(default_factory=dict)
    derived: dict[str, Any] | None = None
    parent: str | None = None

    def labels_for(self, side: str) -> tuple[int, ...]:
        """Label ids for one side (``left``/``right``/``midline``); unpaired terms fall back to midline."""
        if side in self.labels:
            return self.labels[side]
        if side == "midline" and self.paired:
            return tuple(sorted(set(self.labels.get("left", ())) | set(self.labels.get("right", ()))))
        return self.labels.get("midline", ())

    def source_labels(self) -> tuple[int, ...]:
        """Atlas labels a derived region is computed from (empty for label-list terms)."""
        return tuple(self.derived.get("source_labels", ())) if self.derived else ()


@dataclass(frozen=True)
class Vocabulary:
    """The loaded, validated vocabulary.

    Attributes:
        terms: terms keyed by name, in file order.
        combined_prefixes: prefix -> lobe term, for "fronto-parietal" style compounds.
        non_brain: regex fragments for look-alike mentions outside the brain ("frontal sinus").
        version: table version.
    """

    terms: dict[str, Term]
    combined_prefixes: dict[str, str]
    non_brain: tuple[str, ...]
    version: int

    def __getitem__(self, key: str) -> Term:
        try:
            return self.terms[key]
        except KeyError:
            raise KeyError(f"unknown site term {key!r}; known terms: {', '.join(self.terms)}") from None


def _as_ids(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise VocabularyError(f"{where}: expected a list of integer label ids, got {value!r}")
    return tuple(value)


def _parse_term(key: str, raw: dict[str, Any]) -> Term:
    if not isinstance(raw, dict):
        raise VocabularyError(f"term {key!r}: expected a mapping, got {type(raw).__name__}")
    unknown = set(raw) - {"paired", "aliases", "labels", "derived", "parent", "description"}
    if unknown:
        raise VocabularyError(f"term {key!r}: unknown keys {sorted(unknown)}")
    aliases = raw.get("aliases") or []
    if not aliases or not all(isinstance(a, str) for a in aliases):
        raise VocabularyError(f"term {key!r}: needs a non-empty list of alias patterns")
    for alias in aliases:
        try:
            re.compile(alias)
        except re.error as exc:
            raise VocabularyError(f"term {key!r}: alias {alias!r} is not a valid regex ({exc})") from None
    labels_raw = raw.get("labels") or {}
    bad_sides = set(labels_raw) - set(SIDES)
    if bad_sides:
        raise VocabularyError(f"term {key!r}: label sides must be among {SIDES}, got {sorted(bad_sides)}")
    labels = {side: _as_ids(ids, f"term {key!r} side {side!r}") for side, ids in labels_raw.items()}
    derived = raw.get("derived")
    if (not labels) == (derived is None):
        raise VocabularyError(f"term {key!r}: give exactly one of 'labels' or 'derived'")
    if derived is not None and derived.get("kind") not in DERIVED_KINDS:
        raise VocabularyError(f"term {key!r}: derived kind must be one of {DERIVED_KINDS}, got {derived.get('kind')!r}")
    paired = bool(raw.get("paired", False))
    if paired and labels and not {"left", "right"} <= set(labels):
        raise VocabularyError(f"term {key!r}: a paired term needs 'left' and 'right' label lists")
    if not paired and labels and "midline" not in labels:
        raise VocabularyError(f"term {key!r}: an unpaired term needs a 'midline' label list")
    return Term(key=key, paired=paired, aliases=tuple(aliases), labels=labels, derived=derived,
                parent=raw.get("parent"))


def validate(vocabulary: Vocabulary, regions: dict[int, Any] | None = None) -> None:
    """Check every label id of ``vocabulary`` against the Hammers atlas.

    Rules: every id exists; a ``left`` list holds only left or midline labels, a ``right`` list only
    right or midline labels (midline labels are allowed because unpaired structures are split at
    x = 0 by the mask); parents exist; combined prefixes name paired lobe terms.

    Args:
        vocabulary: the loaded table.
        regions: ``hammers_regions()`` (loaded when ``None``).

    Raises:
        VocabularyError: with the term and id at fault.
    """
    if regions is None:
        from blogrr_nnu.atlas import hammers_regions

        regions = hammers_regions()
    opposite = {"left": "right", "right": "left"}
    for term in vocabulary.terms.values():
        ids = [(side, i) for side, lst in term.labels.items() for i in lst]
        ids += [("any", i) for i in term.source_labels()]
        if term.derived:
            for side, lst in (term.derived.get("ventricle_labels") or {}).items():
                ids += [(side, i) for i in _as_ids(lst, f"term {term.key!r} ventricle_labels")]
        for side, label in ids:
            if label not in regions:
                raise VocabularyError(f"term {term.key!r}: label {label} is not a Hammers label (1..{max(regions)})")
            if side in opposite and regions[label].side == opposite[side]:
                raise VocabularyError(
                    f"term {term.key!r}: {side} list holds {label} ({regions[label].name}), a {regions[label].side} label")
        if term.parent is not None and term.parent not in vocabulary.terms:
            raise VocabularyError(f"term {term.key!r}: parent {term.parent!r} is not a term")
    for prefix, lobe in vocabulary.combined_prefixes.items():
        if lobe not in vocabulary.terms or not vocabulary.terms[lobe].paired:
            raise VocabularyError(f"combined prefix {prefix!r}: {lobe!r} is not a paired term")


def parse_vocabulary(data: dict[str, Any]) -> Vocabulary:
    """Build a :class:`Vocabulary` from the YAML structure (without atlas validation)."""
    if not isinstance(data, dict) or not isinstance(data.get("terms"), dict):
        raise VocabularyError("vocabulary: expected a mapping with a 'terms' mapping")
    terms = {key: _parse_term(key, raw) for key, raw in data["terms"].items()}
    prefixes = {str(k): str(v) for k, v in (data.get("combined_prefixes") or {}).items()}
    non_brain = tuple(data.get("non_brain") or ())
    return Vocabulary(terms=terms, combined_prefixes=prefixes, non_brain=non_brain, version=int(data.get("version", 1)))


@functools.lru_cache(maxsize=1)
def load_vocabulary() -> Vocabulary:
    """The package's vocabulary table, loaded once and validated against the Hammers atlas.

    Raises:
        VocabularyError: the table is malformed or names a label the atlas lacks.
    """
    text = importlib.resources.files("blogrr_nnu.reports").joinpath("vocabulary.yaml").read_text(encoding="utf-8")
    vocabulary = parse_vocabulary(yaml.safe_load(text))
    validate(vocabulary)
    logger.debug("loaded report vocabulary v%d with %d terms", vocabulary.version, len(vocabulary.terms))
    return vocabulary
