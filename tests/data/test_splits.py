"""Seeded patient-level splits."""

from __future__ import annotations

import pytest

from medmodal.data.splits import (
    assign_patient_splits,
    patient_splits,
    patients_in_several_splits,
    split_counts,
)
from medmodal.data.types import Study


def cohort(n_patients: int = 300, per_patient: int = 3) -> list[Study]:
    return [
        Study(id=f"s{p}-{k}", row=i, patient_id=f"p{p}")
        for i, (p, k) in enumerate((p, k) for p in range(n_patients) for k in range(per_patient))
    ]


def test_patients_never_straddle_splits_and_fractions_are_met():
    studies = assign_patient_splits(cohort(), (0.7, 0.1, 0.2), seed=0)
    assert patients_in_several_splits(studies) == {}
    counts = split_counts(studies)
    assert sum(counts.values()) == 900
    assert counts["train"] == pytest.approx(630, abs=3 * 3)
    assert counts["val"] == pytest.approx(90, abs=3 * 3)
    assert counts["test"] == pytest.approx(180, abs=3 * 3)


def test_deterministic_for_a_seed_and_independent_of_row_order():
    studies = cohort()
    first = {s.id: s.split for s in assign_patient_splits(studies, seed=5)}
    again = {s.id: s.split for s in assign_patient_splits(list(reversed(studies)), seed=5)}
    other = {s.id: s.split for s in assign_patient_splits(studies, seed=6)}
    assert first == again
    assert first != other


def test_given_splits_are_kept_and_extend_to_the_patient():
    studies = cohort(n_patients=50)
    studies[0].split = "val"  # patient p0
    studies[4].split = "test"  # patient p1
    out = assign_patient_splits(studies, seed=0)
    assert [s.split for s in out[:3]] == ["val"] * 3
    assert [s.split for s in out[3:6]] == ["test"] * 3
    assert studies[1].split is None  # inputs untouched
    assert out[0] is studies[0]  # already placed: not copied


def test_all_given_means_nothing_changes_even_if_the_manifest_leaks():
    studies = [Study("a", 1, patient_id="p", split="train"), Study("b", 2, patient_id="p", split="test")]
    assert patient_splits(studies) == ["train", "test"]
    assert patients_in_several_splits(studies) == {"p": {"train", "test"}}


def test_studies_without_patient_are_their_own_patient_and_zero_fractions_stay_empty():
    studies = [Study(f"s{i}", i) for i in range(100)]
    out = assign_patient_splits(studies, (0.8, 0.0, 0.2), seed=1)
    assert split_counts(out) == {"train": 80, "val": 0, "test": 20}


@pytest.mark.parametrize("fractions", [(0.5, 0.5, 0.5), (1.2, -0.1, -0.1), (1.0, 0.0)])
def test_bad_fractions_are_rejected(fractions):
    with pytest.raises(ValueError, match="fractions"):
        assign_patient_splits(cohort(2), fractions)
