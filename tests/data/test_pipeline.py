"""The data as a config describes it: one split, the training share, the label matrix, the vocabulary texts."""

from __future__ import annotations

import pytest
import torch

from medmodal.config import Config
from medmodal.data.pipeline import (
    EmptySplitError,
    label_matrix,
    read_split,
    training_subset,
    vocabulary_texts,
)
from medmodal.data.types import Study
from medmodal.errors import DataError

from .fixtures import row, write_csv


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
    config = Config.model_validate(
        {"data": {"text_fields": ["indication", "findings"], "target_fields": ["findings"]}}
    )
    study = Study(
        id="a", row=0, sections={"indication": "cough", "findings": "clear", "impression": "normal"}
    )
    assert vocabulary_texts([study], config) == ["cough", "clear"]


def test_read_split_returns_the_split_and_refuses_an_empty_one(tmp_path):
    write_csv(tmp_path, [row("a", split="train"), row("b", split="test"), row("c", split="train")])
    config = Config()
    assert [s.id for s in read_split(tmp_path, config, config.data.labels, "train")] == ["a", "c"]
    with pytest.raises(EmptySplitError, match="split 'val' is empty") as err:
        read_split(tmp_path, config, config.data.labels, "val")
    assert isinstance(err.value, DataError) and isinstance(err.value, ValueError)
