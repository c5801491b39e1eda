"""generation_metrics (pycocoevalcap) on strings with known scores."""

import json
import shutil

import pytest

from medmodal.evaluation.metrics import generation as generation_module
from medmodal.evaluation.metrics import generation_metrics, tokenize

REFS = [
    "The heart is normal in size. No pleural effusion.",
    "Small left pleural effusion. No pneumothorax.",
    "Mild cardiomegaly with pulmonary edema.",
]


def test_tokenize():
    assert tokenize("Heart size 1.5 cm, normal.") == ["heart", "size", "1.5", "cm", ",", "normal", "."]
    assert tokenize("L>R effusions; x-ray") == ["l", ">", "r", "effusions", ";", "x", "-", "ray"]
    assert tokenize("No effusion.", keep_punctuation=False) == ["no", "effusion"]
    assert tokenize("") == []


def test_identical_reports_score_one():
    m = generation_metrics(REFS, REFS, meteor=False)
    for key in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l"):
        assert m[key] == pytest.approx(1.0, abs=1e-6), key
    assert m["meteor"] is None and m["n_reports"] == 3
    json.dumps(m, allow_nan=False)


def test_disjoint_reports_score_zero():
    hyps = ["alpha beta gamma delta epsilon"] * 3
    m = generation_metrics(REFS, hyps, meteor=False, keep_punctuation=False)
    for key in ("bleu_1", "bleu_4", "rouge_l", "cider"):
        assert m[key] == pytest.approx(0.0, abs=1e-6), key


def test_hand_computed_bleu_and_rouge():
    # "the heart is normal" vs "the heart is normal .": all 4 unigrams (3 bigrams) match;
    # brevity penalty exp(1 - 5/4) since the hypothesis is 4 tokens against 5
    m = generation_metrics(["The heart is normal."], ["The heart is normal"], meteor=False)
    assert m["bleu_1"] == pytest.approx(0.7788007831, abs=1e-6)
    assert m["bleu_2"] == pytest.approx(0.7788007831, abs=1e-6)
    # ROUGE-L: LCS "no effusion pneumothorax" = 3 of 4 tokens each way -> P = R = F = 0.75
    m = generation_metrics(["no effusion or pneumothorax"], ["no effusion pneumothorax seen"], meteor=False)
    assert m["rouge_l"] == pytest.approx(0.75)


def test_cider_prefers_the_closer_hypothesis():
    close = [
        "The heart is normal in size. No effusion.",
        "Small left pleural effusion. No pneumothorax.",
        "Mild cardiomegaly with edema.",
    ]
    far = [
        "The heart is enlarged.",
        "Small right pneumothorax.",
        "Normal chest.",
    ]
    c_close = generation_metrics(REFS, close, meteor=False)["cider"]
    c_far = generation_metrics(REFS, far, meteor=False)["cider"]
    c_same = generation_metrics(REFS, REFS, meteor=False)["cider"]
    assert c_same > c_close > c_far


def test_empty_hypothesis_is_scored_not_crashed():
    m = generation_metrics(REFS, [REFS[0], "", REFS[2]], meteor=False)
    assert 0 < m["rouge_l"] < 1
    assert m["rouge_l"] == pytest.approx(2 / 3, abs=1e-6)  # ROUGE-L is a per-report mean: 1, 0, 1


def test_several_references_per_study():
    m = generation_metrics(
        [["no effusion .", "no pleural effusion ."]], ["No pleural effusion."], meteor=False
    )
    assert m["bleu_4"] == pytest.approx(1.0, abs=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match="2 references for 3 hypotheses"):
        generation_metrics(REFS[:2], REFS, meteor=False)
    with pytest.raises(ValueError, match=r"references \[1\] have no tokens"):
        generation_metrics(["a", " "], ["a", "b"], meteor=False)
    with pytest.raises(ValueError, match="no reports"):
        generation_metrics([], [], meteor=False)


def test_meteor_without_java_is_none_with_a_warning(monkeypatch):
    monkeypatch.setattr(generation_module.shutil, "which", lambda name: None)
    with pytest.warns(RuntimeWarning, match="METEOR needs Java"):
        m = generation_metrics(REFS, REFS)
    assert m["meteor"] is None
    assert m["bleu_1"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.slow  # starts a JVM that loads METEOR's paraphrase tables (10-25 s)
@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs Java")
def test_meteor_with_java():
    m = generation_metrics(REFS, REFS)
    assert m["meteor"] == pytest.approx(1.0, abs=0.02)  # its fragmentation penalty keeps it just under 1


def test_report_counts_compare_tokens():
    counts = generation_module.report_counts(["No effusion.", "no  effusion .", "Small effusion."])
    assert counts == {"no effusion .": 2, "small effusion .": 1}
