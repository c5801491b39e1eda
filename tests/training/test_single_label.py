"""A dataset with one finding (a binary task, e.g. normal vs abnormal) trains and evaluates."""

from __future__ import annotations

import math

import pytest
import torch

from medmodal.training.module import DefinedBinaryAUROC, defined_macro_auroc


def test_binary_validation_auroc_matches_ranking_and_is_nan_when_undefined():
    metric = defined_macro_auroc(1)
    assert isinstance(metric, DefinedBinaryAUROC)
    metric.update(torch.tensor([[0.9], [0.2], [0.6], [0.4]]), torch.tensor([[1], [0], [0], [1]]))
    assert math.isclose(float(metric.compute()), 0.75)  # 3 of the 4 positive/negative pairs ordered
    metric.reset()
    metric.update(torch.tensor([[0.9], [0.2]]), torch.tensor([[0], [0]]))
    assert math.isnan(float(metric.compute()))


@pytest.mark.slow
def test_training_and_evaluating_one_label(tiny_data, tmp_path):
    from conftest import tiny_config

    from medmodal.evaluation.evaluate import evaluate_run
    from medmodal.training.trainer import train

    config = tiny_config(**{"data.labels": ["cardiomegaly"], "train.epochs": 1})
    train(tiny_data, config, tmp_path / "run")
    metrics = evaluate_run(tmp_path / "run", tiny_data, split="test", progress=False)
    assert list(metrics["classification"]["per_label"]) == ["cardiomegaly"]
    assert 0.0 <= metrics["classification"]["auroc_macro"] <= 1.0
