"""Seeded, patient-level train / val / test splits.

Studies of one patient are correlated (same anatomy, often the same finding), so
a patient in both the training and the test split inflates test scores. The
toolkit therefore splits by patient:

* a study whose manifest row gives a ``split`` keeps it;
* a study without one joins its patient's split if another study of that patient
  has one (the first such study in manifest order decides);
* the remaining patients are shuffled with ``numpy.random.default_rng(seed)``
  (patients sorted by key first, so the result does not depend on row order)
  and dealt out so that each split receives about its fraction of these studies:
  a patient goes to the split whose cumulative-fraction interval contains the
  midpoint of the patient's studies. Stratification by label is not attempted.

A study without ``patient_id`` is its own patient. Splits given in the manifest
are never changed, even if they put one patient in two splits; such patients
are reported by :func:`patients_in_several_splits`.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from medmodal.data.types import SPLITS, Study


class SplitRecord(Protocol):
    """What the split rules read of a study (a :class:`Study`, or a slimmer record with these fields)."""

    @property
    def id(self) -> str: ...

    @property
    def patient_id(self) -> str | None: ...

    @property
    def split(self) -> str | None: ...


def patient_key(study: SplitRecord) -> str:
    """The patient a study belongs to: its ``patient_id``, else the study itself."""
    return f"patient:{study.patient_id}" if study.patient_id else f"study:{study.id}"


def assign_patient_splits(
    studies: Sequence[Study],
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    seed: int = 0,
) -> list[Study]:
    """Give every study a split (see the module docstring for the rules).

    Args:
        studies: studies, some or all with ``split`` set.
        fractions: train / val / test shares of the studies still to place; >= 0, sum 1.
        seed: the same studies and seed give the same splits.

    Returns:
        The studies in input order, each with ``split`` set. Studies that needed a
        split are copies; the inputs are not modified.
    """
    splits = patient_splits(studies, fractions, seed)
    return [
        s if s.split == split else dataclasses.replace(s, split=split) for s, split in zip(studies, splits)
    ]


def patient_splits(
    studies: Sequence[SplitRecord],
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    seed: int = 0,
) -> list[str]:
    """The split of each study under the rules of :func:`assign_patient_splits`, in input order."""
    check_fractions(fractions)
    given = [s.split for s in studies if s.split]
    if len(given) == len(studies):
        return given
    keys = [patient_key(s) for s in studies]
    placed: dict[str, str] = {}  # patient -> split of its first study that has one
    for key, study in zip(keys, studies):
        if study.split:
            placed.setdefault(key, study.split)
    unplaced_counts = Counter(key for key in keys if key not in placed)
    placed.update(_deal_patients(unplaced_counts, fractions, seed))
    return [s.split or placed[key] for s, key in zip(studies, keys)]


def patients_in_several_splits(studies: Sequence[Study]) -> dict[str, set[str]]:
    """``{patient_id: splits}`` for each patient (with a ``patient_id``) found in more than one split."""
    seen: dict[str, set[str]] = defaultdict(set)
    for study in studies:
        if study.patient_id and study.split:
            seen[study.patient_id].add(study.split)
    return {patient: splits for patient, splits in seen.items() if len(splits) > 1}


def split_counts(studies: Sequence[Study]) -> dict[str, int]:
    """Number of studies per split, every split named (0 if empty)."""
    counts = Counter(s.split for s in studies)
    return {name: counts.get(name, 0) for name in SPLITS}


def check_fractions(fractions: Sequence[float]) -> None:
    """Raise ``ValueError`` unless ``fractions`` are 3 numbers >= 0 summing to 1."""
    if len(fractions) != len(SPLITS) or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"split fractions must be 3 numbers >= 0 summing to 1, got {tuple(fractions)}")


def _deal_patients(study_counts: Counter[str], fractions: Sequence[float], seed: int) -> dict[str, str]:
    """Patient key -> split, for patients with ``study_counts[key]`` studies each."""
    if not study_counts:
        return {}
    keys = sorted(study_counts)
    order = np.random.default_rng(seed).permutation(len(keys))
    total = sum(study_counts.values())
    bounds = np.cumsum(fractions)
    assigned: dict[str, str] = {}
    done = 0
    for index in order:
        key = keys[index]
        midpoint = (done + study_counts[key] / 2) / total
        split_index = min(int(np.searchsorted(bounds, midpoint, side="right")), len(SPLITS) - 1)
        assigned[key] = SPLITS[split_index]
        done += study_counts[key]
    return assigned
