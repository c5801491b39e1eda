"""The fixed label set and the radiology vocabulary the synthetic reports use.

The report grammar (:mod:`.report`) only names a finding with one of the
:data:`SYNONYMS` of its label, and only qualifies it with the cues listed here,
so a rule-based labeler that knows this vocabulary reads the labels back. The
patterns are regular expressions (lower case, matched on word boundaries) so
that inserted laterality words are allowed, e.g. "blunting of the left
costophrenic angle".
"""

from __future__ import annotations

import re

# The label order is fixed: mask value k (1-based) and labels.json use it.
LABELS: tuple[str, ...] = ("cardiomegaly", "effusion", "nodule", "pneumothorax", "consolidation", "edema")

SYNONYMS: dict[str, tuple[str, ...]] = {
    "cardiomegaly": (
        r"cardiomegaly",
        r"enlarged cardiac silhouette",
        r"the heart is (?:mildly |moderately |markedly )?enlarged",
        r"cardiac enlargement",
    ),
    "effusion": (
        r"pleural effusions?",
        r"effusions?",
        r"pleural fluid",
        r"blunting of the (?:left |right |bilateral )?costophrenic angles?",
    ),
    "nodule": (r"pulmonary nodules?", r"nodules?", r"nodular opacity", r"nodular density"),
    "pneumothorax": (r"pneumothorax",),
    "consolidation": (
        r"airspace consolidation",
        r"consolidation",
        r"airspace opacity",
        r"airspace disease",
    ),
    "edema": (r"pulmonary edema", r"interstitial edema", r"edema"),
}

NEGATION_CUES: tuple[str, ...] = ("no", "without", "negative for", "no evidence of")
UNCERTAINTY_CUES: tuple[str, ...] = (
    "possible",
    "may represent",
    "cannot exclude",
    "suspicious for",
    "questionable",
)
NORMAL_HEART: tuple[str, ...] = (
    "Heart size is normal.",
    "Normal heart size.",
    "The cardiac silhouette is within normal limits.",
)


def mention_pattern(label: str) -> re.Pattern[str]:
    """A compiled, case-insensitive pattern matching any synonym of ``label``."""
    alternatives = "|".join(SYNONYMS[label])
    return re.compile(rf"\b(?:{alternatives})\b", re.IGNORECASE)
