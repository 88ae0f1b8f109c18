"""Free-text radiology reports -> findings -> Hammers atlas regions -> pseudo-label masks.

Public API::

    from blogrr_nnu.reports import parse_report, findings_to_mask, matched_labels, explain
    parsed = parse_report(text)            # ParsedReport(findings, warnings, excluded); sites carry a role
    mask, geometry = findings_to_mask(parsed, extent="whole_tumour")   # uint8 (X, Y, Z), template space
    drawn_sites(parsed, "lesion")          # [(term, side), ...] the lesion extent would draw
"""
from blogrr_nnu.reports.masks import drawn_sites, explain, findings_to_mask, matched_labels, site_mask
from blogrr_nnu.reports.parser import ExcludedSite, Finding, ParsedReport, Site, parse_report
from blogrr_nnu.reports.vocabulary import Term, Vocabulary, VocabularyError, load_vocabulary

__all__ = [
    "ExcludedSite", "Finding", "ParsedReport", "Site", "Term", "Vocabulary", "VocabularyError",
    "drawn_sites", "explain", "findings_to_mask", "load_vocabulary", "matched_labels", "parse_report", "site_mask",
]
