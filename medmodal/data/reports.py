"""Split a free-text radiology report into the contract's sections.

A manifest may give a single ``report`` column instead of ``indication`` /
``findings`` / ``impression``; :func:`split_report_sections` recovers the
sections from the report's headers.

Headers (case-insensitive, followed by ``:``; anywhere in the text, so one-line
reports such as ``"INDICATION: cough. FINDINGS: clear. IMPRESSION: normal."`` work):

==================  ==========================================================
section             headers
==================  ==========================================================
``indication``      INDICATION(S), CLINICAL INDICATION, HISTORY, CLINICAL
                    HISTORY, REASON FOR EXAM / STUDY / EXAMINATION
``findings``        FINDING(S)
``impression``      IMPRESSION(S), CONCLUSION(S)
(dropped)           COMPARISON(S), TECHNIQUE, EXAM, EXAMINATION, PROCEDURE
==================  ==========================================================

Text under a dropped header is discarded rather than glued onto the previous
section (``COMPARISON: 2 views from 2019`` is not part of the indication). Text
before the first header is treated as findings: a report without any header is
a findings-only report. A header that appears twice has its texts joined.
"""

from __future__ import annotations

import re

from medmodal.config import SECTION_FIELDS

HEADER_SECTIONS: dict[str, str | None] = {
    "clinical indication": "indication",
    "indications": "indication",
    "indication": "indication",
    "clinical history": "indication",
    "history": "indication",
    "reason for examination": "indication",
    "reason for exam": "indication",
    "reason for study": "indication",
    "findings": "findings",
    "finding": "findings",
    "impressions": "impression",
    "impression": "impression",
    "conclusions": "impression",
    "conclusion": "impression",
    "comparisons": None,
    "comparison": None,
    "technique": None,
    "examination": None,
    "exam": None,
    "procedure": None,
}
"""Header (lower case) -> section it starts, or ``None`` for a section that is dropped."""

_HEADER_PATTERN = re.compile(
    r"\b("
    + "|".join(re.escape(h).replace(r"\ ", r"\s+") for h in sorted(HEADER_SECTIONS, key=len, reverse=True))
    + r")\s*:",
    re.IGNORECASE,
)


def normalize_whitespace(text: str | None) -> str:
    """Collapse every run of whitespace (newlines, tabs, non-breaking spaces) to one space; strip."""
    if not text:
        return ""
    return " ".join(text.split())  # str.split() splits on all Unicode whitespace


def split_report_sections(text: str | None) -> dict[str, str]:
    """Split a report into ``{"indication": ..., "findings": ..., "impression": ...}``.

    Every key is present; a section the report lacks is ``""``. Whitespace is
    normalised. See the module docstring for the recognised headers.

    >>> split_report_sections("HISTORY: cough.\\nFINDINGS: No effusion.\\nIMPRESSION: Normal.")
    {'indication': 'cough.', 'findings': 'No effusion.', 'impression': 'Normal.'}
    """
    parts: dict[str, list[str]] = {name: [] for name in SECTION_FIELDS}
    text = text or ""
    current: str | None = "findings"  # text before any header
    start = 0
    for match in _HEADER_PATTERN.finditer(text):
        _append(parts, current, text[start : match.start()])
        current = HEADER_SECTIONS[normalize_whitespace(match.group(1)).lower()]
        start = match.end()
    _append(parts, current, text[start:])
    return {name: " ".join(chunks) for name, chunks in parts.items()}


def _append(parts: dict[str, list[str]], section: str | None, chunk: str) -> None:
    chunk = normalize_whitespace(chunk)
    if section is not None and chunk:
        parts[section].append(chunk)
