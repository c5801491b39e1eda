"""The ``view`` column and the frontal-only option."""

from __future__ import annotations

import logging

import pytest

from medmodal.config import Config, ConfigError, load_config
from medmodal.data.manifest import read_manifest
from medmodal.data.manifest_contract import normalize_view, view_matcher
from medmodal.data.pipeline import read_dataset

from .fixtures import row, write_csv


def test_views_are_normalised_and_matched_by_class():
    assert normalize_view(" ap_supine ") == "AP SUPINE" and normalize_view("Lateral") == "LATERAL"
    frontal = view_matcher(["frontal"])
    assert [frontal(v) for v in ("PA", "AP", "AP SUPINE", "AP AXIAL", "FRONTAL", "LL", "LATERAL", "L", None, "")] == [
        True, True, True, True, True, False, False, False, False, False]  # fmt: skip
    assert [view_matcher(["lateral", "AP"])(v) for v in ("LL", "RL", "L", "AP", "AP SUPINE", "PA")] == [
        True, True, True, True, False, False]  # fmt: skip


def test_frontal_only_keeps_frontal_rows_and_counts_the_rest(tmp_path, caplog):
    write_csv(tmp_path, [row("a", view="PA"), row("b", view="ap_horizontal"), row("c", view="LL"),
                         row("d", view="Lateral"), row("e", view=""), row("f", view="AP")])  # fmt: skip
    every = read_manifest(tmp_path)
    assert [s.view for s in every.studies] == ["PA", "AP HORIZONTAL", "LL", "LATERAL", None, "AP"]
    assert every.summary()["left_out_by_view"] == 0 and all("view" not in s.extra for s in every.studies)
    with caplog.at_level(logging.INFO, logger="medmodal.data.manifest"):
        frontal = read_manifest(tmp_path, views=["frontal"])
    assert [s.id for s in frontal.studies] == ["a", "b", "f"]
    assert frontal.problems == [] and frontal.summary()["left_out_by_view"] == 3
    assert any("left out 3 row(s) whose view" in r.getMessage() for r in caplog.records)
    assert [s.id for s in read_manifest(tmp_path, views=["PA", "lateral"]).studies] == ["a", "c", "d"]


def test_a_view_with_a_line_break_is_a_bad_row(tmp_path):
    write_csv(tmp_path, [row("a", view="PA\nLL"), row("b", view="PA")])
    manifest = read_manifest(tmp_path)
    assert [s.id for s in manifest.studies] == ["b"]
    assert [(p.row, p.field) for p in manifest.problems] == [(2, "view")]


def test_config_views_reach_the_reader(tmp_path):
    write_csv(tmp_path, [row("a", view="PA"), row("b", view="LL")])
    config = Config.model_validate({"data": {"views": ["frontal"]}})
    assert [s.id for s in read_dataset(tmp_path, config).studies] == ["a"]
    assert [s.id for s in read_dataset(tmp_path, Config()).studies] == ["a", "b"]
    (tmp_path / "bad.yaml").write_text("data:\n  views: []\n")
    with pytest.raises(ConfigError):
        load_config(tmp_path / "bad.yaml")
