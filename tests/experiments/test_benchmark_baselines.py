"""Baseline cells in a benchmark grid: fitted, evaluated under every condition, compared like any model."""

import json

import numpy as np
import pytest

from medmodal.config import ConfigError
from medmodal.experiments.benchmark import (
    grid_from_dict,
    load_grid,
    model_config,
    model_role,
    run_benchmark,
)
from medmodal.experiments.benchmark_results import load_cell_predictions

GRID = {
    "name": "baselines",
    "base": {"data.image_size": 32, "data.check_images": False, "model.heads.generation": False},
    "seeds": [0],
    "models": {
        "tfidf_logreg": {"baseline.classifier": "tfidf_logreg"},
        "pixel_logreg": {
            "baseline.classifier": "pixel_logreg",
            "baseline.kwargs": {"pixel_logreg": {"size": 8}},
        },
        "logreg_late_fusion": {
            "baseline.classifier": "late_fusion",
            "baseline.kwargs": {"pixel_logreg": {"size": 8}, "tfidf_logreg": {"c_grid": [1.0]}},
        },
    },
    "evaluation": {"bootstrap_resamples": 50, "drop_fractions": [0, 1]},
}


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_bl_out")
    return run_benchmark(data, grid_from_dict(GRID), out, report=False)


@pytest.mark.slow  # fits and scores a 3-model grid (tens of seconds on a loaded 2-core machine)
def test_baseline_cells_are_fitted_and_scored_under_every_condition(finished):
    summary = json.loads((finished.out / "summary.json").read_text())
    roles = {m: e["role"] for m, e in summary["models"].items()}
    assert roles == {"tfidf_logreg": "text", "pixel_logreg": "image", "logreg_late_fusion": "fusion"}
    pairs = {(c["fusion"], c["baseline"]) for c in summary["comparisons"]}
    assert pairs == {("logreg_late_fusion", "tfidf_logreg"), ("logreg_late_fusion", "pixel_logreg")}
    arrays = load_cell_predictions(finished.out / "cells" / "tfidf_logreg__seed0")
    assert not np.allclose(arrays["probs__full"], arrays["probs__full"][0])
    assert np.allclose(arrays["probs__no_text"], arrays["probs__no_text"][0])  # text hidden: the prevalence
    fused = load_cell_predictions(finished.out / "cells" / "logreg_late_fusion__seed0")
    pixel = load_cell_predictions(finished.out / "cells" / "pixel_logreg__seed0")
    assert np.allclose(
        fused["probs__no_text"], pixel["probs__full"], atol=1e-6
    )  # fusion falls back to its image part
    done = json.loads((finished.out / "cells" / "tfidf_logreg__seed0" / "done.json").read_text())
    assert done["train_seconds"] is not None


@pytest.mark.slow  # fits and scores a 3-model grid (tens of seconds on a loaded 2-core machine)
def test_a_finished_baseline_benchmark_is_not_refitted(finished):
    data = json.loads((finished.out / "summary.json").read_text())["data"]
    result = run_benchmark(data, grid_from_dict(GRID), finished.out, report=False)
    assert result.cells_run == []


def test_the_default_grid_has_the_baselines_with_their_roles():
    grid, base_dir = load_grid(None)
    roles = {
        m: model_role(model_config(grid, m, 0, base_dir))
        for m in ("tfidf_logreg", "pixel_logreg", "linear_probe", "logreg_late_fusion")
    }
    assert roles == {
        "tfidf_logreg": "text",
        "pixel_logreg": "image",
        "linear_probe": "image",
        "logreg_late_fusion": "fusion",
    }


def test_a_grid_with_a_broken_baseline_fails_on_load_naming_the_model():
    bad = {
        **GRID,
        "models": {
            "x": {"baseline.classifier": "tfidf_logreg", "baseline.kwargs": {"tfidf_logreg": {"ngram": 3}}}
        },
    }
    with pytest.raises(ConfigError, match="model 'x'.*tfidf_logreg.*ngram"):
        grid_from_dict(bad)
    boxes_only = {**GRID, "models": {"y": {"baseline.boxes": "mean_box"}}}
    with pytest.raises(ConfigError, match="model 'y'.*set baseline.classifier"):
        grid_from_dict(boxes_only)
