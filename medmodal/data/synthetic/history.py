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

from medmodal.data.synthetic.data_files import read_catalogue


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


HISTORY_ITEMS: dict[str, HistoryItem] = read_catalogue("history_items.yaml", dict[str, HistoryItem])


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
