"""QA pairs from the synthetic ground truth, and the qa.jsonl reader."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from medmodal.data.qa import QAFileError, QARecord, normalize_answer, read_qa, write_qa
from medmodal.data.synthetic import default_sites, sample_cohort
from medmodal.data.synthetic.qa import SIDED_LABELS, questions_for_studies, questions_for_study
from medmodal.data.synthetic.vocabulary import LABELS


@pytest.fixture(scope="module")
def cohort():
    return sample_cohort(150, seed=3, sites=default_sites(3))


def _label_in(question: str) -> str:
    """The label a presence question names (each label's phrases are distinct words)."""
    words = {
        "cardio": "cardiomegaly",
        "heart": "cardiomegaly",
        "effusion": "effusion",
        "fluid": "effusion",
        "nodule": "nodule",
        "pneumothorax": "pneumothorax",
        "consolidation": "consolidation",
        "edema": "edema",
    }
    found = {label for key, label in words.items() if key in question.lower()}
    assert len(found) == 1, question
    return found.pop()


def test_presence_answers_match_ground_truth_and_are_balanced(cohort):
    for study in cohort:
        presence = [r for r in questions_for_study(study) if r.question_type == "presence"]
        yes = [r for r in presence if r.answer == "yes"]
        no = [r for r in presence if r.answer == "no"]
        assert {_label_in(r.question) for r in yes} == set(study.labels)
        assert all(study.finding(_label_in(r.question)) is None for r in no)
        assert len(no) == min(len(LABELS) - len(study.labels), max(1, len(study.labels)))


def test_other_questions_match_ground_truth(cohort):
    seen = Counter()
    for study in cohort:
        records = questions_for_study(study)
        by_type = {
            t: [r for r in records if r.question_type == t] for t in {r.question_type for r in records}
        }
        assert [r.answer for r in by_type["normality"]] == ["no" if study.findings else "yes"]
        if len(study.findings) <= 1:
            assert [r.answer for r in by_type["which_finding"]] == [
                study.labels[0] if study.findings else "none"
            ]
        else:
            assert "which_finding" not in by_type
        sided = [f for f in study.findings if f.label in SIDED_LABELS]
        assert sorted(r.answer for r in by_type.get("laterality", [])) == sorted(f.side for f in sided)
        assert sorted(r.answer for r in by_type.get("size", [])) == sorted(f.grade for f in study.findings)
        consolidation = study.finding("consolidation")
        assert [r.answer for r in by_type.get("location", [])] == (
            [consolidation.params["lobe"]] if consolidation else []
        )
        for r in records:
            assert r.study_id == study.id
            assert r.answer_type == ("open" if r.question_type in ("size", "location") else "closed")
            seen[r.question_type] += 1
    assert set(seen) == {"presence", "normality", "which_finding", "laterality", "size", "location"}


def test_questions_are_deterministic_per_study(cohort):
    assert questions_for_studies(cohort[:20]) == questions_for_studies(cohort[:20])
    assert (
        questions_for_study(cohort[5])
        == questions_for_studies(cohort)[
            sum(len(questions_for_study(s)) for s in cohort[:5]) : sum(
                len(questions_for_study(s)) for s in cohort[:6]
            )
        ]
    )


def test_generate_dataset_writes_qa_for_every_study(tiny_data):
    records = read_qa(tiny_data)
    manifest_ids = [line.split(",")[0] for line in (tiny_data / "manifest.csv").read_text().splitlines()[1:]]
    assert {r.study_id for r in records} == set(manifest_ids)
    truth = {
        json.loads(line)["id"]: json.loads(line)
        for line in (tiny_data / "ground_truth.jsonl").read_text().splitlines()
    }
    for r in records:
        if r.question_type == "normality":
            present = any(v["present"] for v in truth[r.study_id]["findings"].values())
            assert r.answer == ("no" if present else "yes")


def test_round_trip_and_normalisation(tmp_path):
    records = [
        QARecord("s1", "Is there a nodule?", "yes", "closed", "presence"),
        QARecord("s2", "How large?", "8 mm", "open", "size", split="test", qid="7"),
    ]
    write_qa(tmp_path / "qa.jsonl", records)
    assert read_qa(tmp_path / "qa.jsonl") == records
    assert normalize_answer("  Yes. ") == "yes"
    assert normalize_answer(2) == "2"
    assert normalize_answer("Right   Lower Lobe") == "right lower lobe"


def test_bad_lines_are_all_reported_with_line_and_field(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text(
        '{"study_id": "s1", "question": "Q?", "answer": "yes", "answer_type": "closed"}\n'
        "\n"
        '{"study_id": "s2", "question": "", "answer": "yes", "answer_type": "closed"}\n'
        '{"study_id": "s3", "question": "Q?", "answer": "yes", "answer_type": "maybe"}\n'
        "not json\n"
        '{"study_id": "s5", "question": "Q?", "answer": "no", "answer_type": "open", "split": "dev"}\n'
    )
    with pytest.raises(QAFileError) as caught:
        read_qa(path)
    problems = {(p.row, p.field) for p in caught.value.problems}
    assert problems == {(3, "question"), (4, "answer_type"), (5, "<json>"), (6, "split")}
    assert "qa.jsonl: row 3 (id s2), field 'question'" in str(caught.value)
