"""A trained run loaded back: the studies it is evaluated on."""

from __future__ import annotations

from medmodal.data.pipeline import read_dataset
from medmodal.training.loading import load_trained


def test_studies_are_the_split_read_with_the_runs_config_and_labels(tiny_run, tiny_data):
    trained = load_trained(tiny_run)
    expected = read_dataset(tiny_data, trained.config, labels=trained.labels).split("test")
    assert [s.id for s in trained.studies(tiny_data, "test")] == [s.id for s in expected]
    assert trained.read_data(tiny_data).label_names == trained.labels
