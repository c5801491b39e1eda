"""The data as a config describes it: training share and label matrix."""

from __future__ import annotations

import torch

from medmodal.config import Config
from medmodal.data.pipeline import label_matrix, training_subset, vocabulary_texts
from medmodal.data.types import Study


def _studies(n):
    return [Study(id=f"s{i}", patient_id=f"p{i}", row=i) for i in range(n)]


def test_training_subset_is_seeded_nested_and_sized():
    studies = _studies(50)
    ten, quarter = training_subset(studies, 0.1, seed=3), training_subset(studies, 0.25, seed=3)
    assert len(ten) == 5 and len(quarter) == 13  # ceil
    assert {s.id for s in ten} <= {s.id for s in quarter}
    assert [s.id for s in ten] == [s.id for s in training_subset(studies, 0.1, seed=3)]
    assert [s.id for s in ten] != [s.id for s in training_subset(studies, 0.1, seed=4)]
    assert training_subset(studies, 1.0, seed=3) == studies
    assert len(training_subset(studies[:3], 0.01, seed=0)) == 1


def test_label_matrix_is_multi_hot_in_label_order_and_ignores_unknown_labels():
    studies = [Study(id="a", row=0, labels=["effusion", "other"]), Study(id="b", row=1, labels=[])]
    matrix = label_matrix(studies, ["cardiomegaly", "effusion"])
    assert torch.equal(matrix, torch.tensor([[0.0, 1.0], [0.0, 0.0]]))


def test_vocabulary_texts_take_input_and_target_fields_once_each():
    config = Config.model_validate({"data": {"text_fields": ["indication", "findings"], "target_fields": ["findings"]}})
    study = Study(id="a", row=0, sections={"indication": "cough", "findings": "clear", "impression": "normal"})
    assert vocabulary_texts([study], config) == ["cough", "clear"]
