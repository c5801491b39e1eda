"""Clinical efficacy on hand-written reports with negation, uncertainty and synonyms."""

import json

import pytest

from medmodal.evaluation.metrics import clinical_efficacy
from medmodal.labeling import default_labeler


@pytest.fixture(scope="module")
def labeler():
    return default_labeler()


def test_same_findings_in_other_words_is_perfect(labeler):
    m = clinical_efficacy(
        ["No pneumothorax. Small left effusion."],
        ["Left pleural effusion. No pneumothorax."],
        labeler,
    )
    assert (m["ce_precision"], m["ce_recall"], m["ce_f1"], m["ce_f1_macro"]) == (1.0, 1.0, 1.0, 1.0)
    assert m["ce_labels_used"] == 1  # effusion; the 0/0 findings are left out of the macro mean
    assert m["per_label"]["effusion"] == {
        "precision": 1.0, "recall": 1.0, "f1": 1.0, "n_reference_positive": 1, "n_hypothesis_positive": 1,
    }  # fmt: skip
    assert m["per_label"]["pneumothorax"]["f1"] is None
    json.dumps(m, allow_nan=False)


REFS = ["Cardiomegaly. Small left effusion.", "No pneumothorax."]
HYPS = ["Cardiomegaly. No effusion.", "Small right pneumothorax. Possible pneumonia."]


def test_hand_computed_micro_and_macro(labeler):
    # present in references: r0 {cardiomegaly, effusion}; r1 {}
    # generated: h0 {cardiomegaly}; h1 {pneumothorax, pneumonia (uncertain)}
    m = clinical_efficacy(REFS, HYPS, labeler)
    # TP 1 (cardiomegaly), FP 2 (pneumothorax, pneumonia), FN 1 (effusion)
    assert m["ce_precision"] == pytest.approx(1 / 3)
    assert m["ce_recall"] == pytest.approx(1 / 2)
    assert m["ce_f1"] == pytest.approx(2 * 1 * 1 / (2 * 1 + 2 + 1))
    # per-finding F1: cardiomegaly 1, effusion 0, pneumothorax 0, pneumonia 0
    assert m["ce_f1_macro"] == pytest.approx(1 / 4) and m["ce_labels_used"] == 4


def test_uncertain_as_negative(labeler):
    m = clinical_efficacy(REFS, HYPS, labeler, uncertain_as="negative")
    assert m["ce_precision"] == pytest.approx(1 / 2)  # pneumonia no longer counts
    assert m["ce_f1_macro"] == pytest.approx(1 / 3) and m["ce_labels_used"] == 3


def test_findings_subset_and_empty_hypothesis(labeler):
    m = clinical_efficacy(REFS, ["", ""], labeler, findings=["cardiomegaly", "effusion"])
    assert set(m["per_label"]) == {"cardiomegaly", "effusion"}
    assert m["ce_precision"] is None  # nothing generated: precision undefined
    assert m["ce_recall"] == 0.0
    with pytest.raises(ValueError, match="not in the labeler's vocabulary"):
        clinical_efficacy(REFS, HYPS, labeler, findings=["cardiomegally"])
    with pytest.raises(ValueError, match="2 references for 1 hypotheses"):
        clinical_efficacy(REFS, HYPS[:1], labeler)


def test_report_variety_counts_distinct_reports_per_study_with_a_finding(labeler):
    refs = ["Cardiomegaly.", "Small left effusion.", "No acute abnormality.", "Pneumothorax."]
    hyps = [
        "The heart is enlarged.",
        "the heart  is enlarged .",
        "Lungs are clear.",
        "There is a pneumothorax.",
    ]
    m = clinical_efficacy(refs, hyps, labeler)
    # case and spacing do not make a report distinct: 3 different reports, the commonest twice
    assert (m["n_distinct_reports"], m["most_common_report_count"]) == (3, 2)
    assert m["n_with_finding"] == 3  # the normal reference states no finding
    assert m["distinct_fraction_with_finding"] == pytest.approx(3 / 3)
    none_abnormal = clinical_efficacy(["No acute abnormality."], ["Lungs are clear."], labeler)
    assert none_abnormal["n_with_finding"] == 0 and none_abnormal["distinct_fraction_with_finding"] is None
