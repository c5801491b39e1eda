"""Defaults that follow the data: no target text -> no decoder, no boxes -> no localization head,
and evaluate works after such a training run."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest

from medmodal.config import Config, apply_overrides, load_config
from medmodal.data.types import Box, Study
from medmodal.training.data_defaults import heads_for_data


def _study(i: int, findings: str = "", boxes=()) -> Study:
    return Study(id=f"s{i}", row=i + 2, image=Path(f"/data/s{i}.png"),
                 sections={"indication": "Cough.", "findings": findings}, boxes=list(boxes))  # fmt: skip


def test_heads_stay_when_the_data_has_target_text_and_boxes(caplog):
    studies = [_study(0, "Small effusion.", [Box("effusion", (1, 2, 5, 6))]), _study(1)]
    with caplog.at_level(logging.INFO, logger="medmodal.training.data_defaults"):
        config = heads_for_data(Config(), studies)
    assert config.model.heads.generation and config.model.heads.localization
    assert not caplog.records


def test_no_target_text_and_no_boxes_switch_those_heads_off_and_say_so_once(caplog):
    with caplog.at_level(logging.INFO, logger="medmodal.training.data_defaults"):
        config = heads_for_data(Config(), [_study(0), _study(1)])
    assert not config.model.heads.generation and not config.model.heads.localization
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert any("report decoder" in m for m in messages) and any("localization head" in m for m in messages)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="medmodal.training.data_defaults"):
        assert heads_for_data(config, [_study(0)]) == config  # already off: nothing more to say
    assert not caplog.records


def test_target_fields_decide_and_boxes_without_an_image_do_not_count():
    impression_only = apply_overrides(Config(), {"data.target_fields": ["impression"]})
    study = _study(0, "Small effusion.")  # findings, but the target is the impression
    study.boxes = [Box("effusion", (1, 2, 5, 6))]
    study.image = None
    config = heads_for_data(impression_only, [study])
    assert not config.model.heads.generation and not config.model.heads.localization


@pytest.mark.slow
def test_train_then_evaluate_on_data_without_reports_or_boxes(tiny_data, tmp_path):
    """Today's failure: a manifest without findings / impression trained, then evaluate exited
    with 'references [...] have no tokens'."""
    from conftest import tiny_config

    from medmodal.evaluation.evaluate import evaluate_run
    from medmodal.runs import RunDir
    from medmodal.training.trainer import train

    data = tmp_path / "data"
    shutil.copytree(tiny_data / "images", data / "images")
    manifest = pd.read_csv(tiny_data / "manifest.csv", dtype=str, keep_default_na=False)
    manifest["findings"] = manifest["impression"] = manifest["boxes"] = ""
    manifest.drop(columns=["mask"], errors="ignore").to_csv(data / "manifest.csv", index=False)

    run = tmp_path / "run"
    train(data, tiny_config(**{"train.epochs": 1}), run)
    saved = load_config(RunDir.at(run).config)
    assert not saved.model.heads.generation and not saved.model.heads.localization
    metrics = evaluate_run(run, data, split="test", progress=False)
    assert 0.0 <= metrics["classification"]["auroc_macro"] <= 1.0
    assert "generation" not in metrics and "localization" not in metrics
