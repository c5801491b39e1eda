"""Labels / tokenizer / thresholds stored in checkpoints: round trip and hostile contents."""

from __future__ import annotations

import pytest

from medmodal.data.tokenizer import ReportTokenizer
from medmodal.safeio import UnreadableFileError
from medmodal.training.artifacts import ARTIFACTS_KEY, ModelArtifacts


@pytest.fixture
def artifacts() -> ModelArtifacts:
    tokenizer = ReportTokenizer.train(["small left effusion", "no nodule"], min_freq=1)
    return ModelArtifacts(
        labels=["effusion", "nodule"], tokenizer=tokenizer, thresholds=[0.3, 0.6], calibrated=True
    )


def test_round_trip_is_plain_data(artifacts):
    stored = artifacts.to_checkpoint()
    assert all(isinstance(v, (str, int, bool, list)) for v in stored.values())
    again = ModelArtifacts.from_checkpoint({ARTIFACTS_KEY: stored}, "x.ckpt")
    assert again.labels == artifacts.labels and again.thresholds == [0.3, 0.6] and again.calibrated
    assert again.tokenizer.encode("left effusion", 4) == artifacts.tokenizer.encode("left effusion", 4)


def test_an_older_checkpoint_has_none():
    assert ModelArtifacts.from_checkpoint({"state_dict": {}}, "old.ckpt") is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"format": 99}, "format"),
        ({"labels": "effusion"}, "labels"),
        ({"labels": []}, "labels"),
        ({"labels": ["effusion", 3]}, "labels"),
        ({"tokenizer": 5}, "tokenizer"),
        ({"tokenizer": "{not json"}, "tokenizer"),
        ({"tokenizer": "x" * (64 * 1024 * 1024 + 1)}, "tokenizer"),
        ({"thresholds": [0.5]}, "thresholds"),
        ({"thresholds": [0.5, 2.0]}, "thresholds"),
    ],
)
def test_malformed_contents_name_the_field(artifacts, change, field):
    stored = {**artifacts.to_checkpoint(), **change}
    with pytest.raises(UnreadableFileError, match=field):
        ModelArtifacts.from_checkpoint({ARTIFACTS_KEY: stored}, "x.ckpt")


def test_not_a_mapping_is_refused():
    with pytest.raises(UnreadableFileError, match="x.ckpt"):
        ModelArtifacts.from_checkpoint({ARTIFACTS_KEY: ["labels"]}, "x.ckpt")
