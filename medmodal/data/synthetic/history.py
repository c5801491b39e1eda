"""Clinical history (the ``indication`` field): a catalogue of history items and their wording.

Each :class:`HistoryItem` is a short piece of clinical history that is
*related* to some findings (a history of heart failure makes cardiomegaly,
edema and effusion more likely; chest trauma makes a pneumothorax more likely)
or to none (neutral reasons for the study). The cohort sampler
(:mod:`.cohort`) decides which items a study's indication contains, which is a
latent variable recorded in the ground truth; this module only words them.

Most items describe history, symptoms or procedures rather than naming a
finding; the few that do name one (``names_finding``, e.g. "Follow-up of known
pulmonary nodule.") have small weights, as in real requisitions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class HistoryItem:
    """One kind of clinical history, the findings it relates to, and ways to word it."""

    labels: tuple[str, ...]  # findings this history makes more likely (empty: neutral)
    texts: tuple[str, ...]  # wordings; "{side}" is replaced by "right" / "left"
    weight: float = 1.0  # relative chance of being the chosen hint for one of its labels
    names_finding: bool = False  # the wording names the finding itself
    implies_line: bool = False  # a central line is present on the image

    @property
    def needs_side(self) -> bool:
        """Some wording names a side, so the history entry carries one (``"key:side"``)."""
        return any("{side}" in text for text in self.texts)


HISTORY_ITEMS: dict[str, HistoryItem] = {
    "chf": HistoryItem(
        ("cardiomegaly", "edema", "effusion"),
        (
            "History of congestive heart failure.",
            "Known CHF with increasing dyspnea.",
            "Heart failure exacerbation.",
            "CHF, worsening shortness of breath.",
        ),
        weight=2.0,
    ),
    "cardiomyopathy": HistoryItem(
        ("cardiomegaly",),
        (
            "Known dilated cardiomyopathy.",
            "History of cardiomyopathy.",
            "New systolic murmur.",
            "Long-standing hypertension with dyspnea on exertion.",
        ),
        weight=1.5,
    ),
    "orthopnea": HistoryItem(
        ("cardiomegaly", "edema"),
        ("Orthopnea and bilateral leg swelling.", "Weight gain and worsening orthopnea."),
    ),
    "volume_overload": HistoryItem(
        ("edema", "effusion"),
        (
            "Fluid overload, on dialysis.",
            "Renal failure with volume overload.",
            "Positive fluid balance, increasing oxygen requirement.",
        ),
        weight=1.5,
    ),
    "crackles": HistoryItem(
        ("edema",),
        ("Acute dyspnea and hypoxia with bilateral crackles.", "Bibasilar crackles and hypoxia."),
    ),
    "base_dullness": HistoryItem(
        ("effusion",),
        (
            "Decreased breath sounds at the {side} base.",
            "Dullness to percussion at the {side} base.",
            "Pleuritic chest pain on the {side}.",
        ),
        weight=2.0,
    ),
    "known_effusion": HistoryItem(
        ("effusion",),
        ("Follow-up of pleural effusion.", "Known pleural effusion, reassess."),
        weight=0.4,
        names_finding=True,
    ),
    "malignancy": HistoryItem(
        ("effusion", "nodule"),
        ("History of lung cancer with new dyspnea.", "Metastatic breast cancer, shortness of breath."),
        weight=0.8,
    ),
    "smoker": HistoryItem(
        ("nodule",),
        ("Former heavy smoker, lung cancer screening.", "Sixty pack-year smoking history.", "Hemoptysis in a smoker."),
        weight=1.5,
    ),
    "outside_ct": HistoryItem(
        ("nodule",),
        (
            "Abnormal finding on outside CT.",
            "Incidental lung finding on CT of the abdomen.",
            "History of melanoma, staging.",
        ),
        weight=1.5,
    ),
    "known_nodule": HistoryItem(
        ("nodule",),
        ("Follow-up of known pulmonary nodule.", "Pulmonary nodule follow-up."),
        weight=0.4,
        names_finding=True,
    ),
    "trauma": HistoryItem(
        ("pneumothorax",),
        ("Chest trauma.", "Motor vehicle collision with chest wall pain.", "Fall with {side} rib pain."),
        weight=1.5,
    ),
    "line_placement": HistoryItem(
        ("pneumothorax",),
        ("Status post {side} central line placement.", "Status post {side} internal jugular line placement."),
        implies_line=True,
    ),
    "biopsy": HistoryItem(
        ("pneumothorax",),
        ("Status post CT-guided lung biopsy.", "Status post {side} thoracentesis."),
        weight=0.8,
    ),
    "sudden_pain": HistoryItem(
        ("pneumothorax",),
        ("Sudden onset {side} pleuritic chest pain.", "Acute dyspnea after a coughing fit."),
        weight=1.2,
    ),
    "rule_out_ptx": HistoryItem(
        ("pneumothorax",),
        ("Evaluate for pneumothorax.", "Rule out pneumothorax."),
        weight=0.4,
        names_finding=True,
    ),
    "fever_cough": HistoryItem(
        ("consolidation",),
        ("Fever and productive cough.", "Cough and fever.", "Fever, elevated white count and hypoxia."),
        weight=2.0,
    ),
    "aspiration": HistoryItem(
        ("consolidation",),
        ("Witnessed aspiration event.", "Crackles at the {side} base with fever."),
    ),
    "rule_out_pneumonia": HistoryItem(
        ("consolidation",),
        ("Rule out pneumonia.", "Evaluate for pneumonia."),
    ),
    # Neutral reasons for the study, worded per kind of site.
    "neutral_outpatient": HistoryItem(
        (),
        (
            "Preoperative evaluation.",
            "Routine examination.",
            "Chronic cough.",
            "Annual physical examination.",
            "Pre-employment screening.",
            "Hypertension.",
            "Chest pain.",
        ),
    ),
    "neutral_emergency": HistoryItem(
        (),
        ("Chest pain.", "Shortness of breath.", "Syncope.", "Dizziness.", "Weakness.", "Abdominal pain."),
    ),
    "neutral_icu": HistoryItem(
        (),
        ("Intubated patient, daily film.", "Sepsis.", "Post-operative day one.", "Altered mental status."),
    ),
}


def neutral_item(site: str) -> str:
    """The key of the neutral history item worded for ``site`` (outpatient wording for unknown sites)."""
    key = f"neutral_{site}"
    return key if key in HISTORY_ITEMS else "neutral_outpatient"


def items_for(label: str) -> tuple[tuple[str, ...], np.ndarray]:
    """Keys of the items related to ``label`` and their normalised choice weights."""
    keys = tuple(k for k, item in HISTORY_ITEMS.items() if label in item.labels)
    weights = np.array([HISTORY_ITEMS[k].weight for k in keys], dtype=float)
    return keys, weights / weights.sum()


def split_key(entry: str) -> tuple[str, str | None]:
    """``"base_dullness:left"`` -> ``("base_dullness", "left")``; entries without a side give None."""
    key, _, side = entry.partition(":")
    return key, side or None


def related_labels(history: tuple[str, ...]) -> set[str]:
    """All findings that some item of ``history`` relates to (what the indication hints at)."""
    return {label for entry in history for label in HISTORY_ITEMS[split_key(entry)[0]].labels}


def write_indication(history: tuple[str, ...], age: int, sex: str, rng: np.random.Generator) -> str:
    """The indication text for a list of history entries, optionally opened with age and sex.

    Example: ``"67-year-old female with fever and productive cough."``
    """
    sentences = [_word_item(entry, rng) for entry in history]
    if sentences and rng.random() < 0.5:
        first = sentences[0].rstrip(".")
        sentences[0] = f"{age}-year-old {sex} with {_lower_first(first)}."
    return " ".join(sentences)


def _word_item(entry: str, rng: np.random.Generator) -> str:
    key, side = split_key(entry)
    texts = HISTORY_ITEMS[key].texts
    text = texts[int(rng.integers(len(texts)))]
    return text.format(side=side) if "{side}" in text else text


def _lower_first(text: str) -> str:
    first_word = text.split(" ", 1)[0].rstrip(",")
    if first_word.isupper():  # an acronym such as CHF
        return text
    return text[0].lower() + text[1:]
