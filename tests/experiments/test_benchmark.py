"""The benchmark runner end to end on a miniature grid, including resume after an interruption."""

import json

import numpy as np
import pandas as pd
import pytest

from medmodal.config import ConfigError
from medmodal.experiments import benchmark
from medmodal.experiments.benchmark import (
    EvaluationSettings,
    grid_from_dict,
    hide_masks,
    run_benchmark,
)
from medmodal.experiments.benchmark_results import load_cell_predictions

from .helpers import mini_grid

MINI = mini_grid(
    "mini",
    evaluation={"bootstrap_resamples": 50, "drop_fractions": [0, 0.5, 1]},
    leave_one_site_out={"enabled": True, "models": ["gated"], "sites": ["icu"]},
)
CELLS = ["image_only__seed0", "gated__seed0", "loso-icu__gated__seed0"]


class Killed(RuntimeError):
    pass


@pytest.fixture(scope="module")
def interrupted_then_resumed(data, tmp_path_factory):
    """Run the grid, "killed" while evaluating the second cell; then run it again."""
    out = tmp_path_factory.mktemp("bench_out")
    grid = grid_from_dict(MINI)
    real = benchmark.evaluate_cell
    patch = pytest.MonkeyPatch()

    def dies_on_gated(cell, *args, **kwargs):
        if cell.id == "gated__seed0":
            raise Killed("simulated kill")
        return real(cell, *args, **kwargs)

    patch.setattr(benchmark, "evaluate_cell", dies_on_gated)
    with pytest.raises(Killed):
        run_benchmark(data, grid, out, report=False)
    patch.undo()
    first_marker = (out / "cells" / CELLS[0] / "done.json").stat().st_mtime_ns
    gated_checkpoint = (out / "cells" / CELLS[1] / "run" / "training_done.json").stat().st_mtime_ns
    result = run_benchmark(data, grid, out)
    return out, result, first_marker, gated_checkpoint


@pytest.mark.slow  # the module's grid fixture trains and scores several models
def test_resume_redoes_only_the_unfinished_cells(interrupted_then_resumed):
    out, result, first_marker, gated_trained = interrupted_then_resumed
    assert result.cells_run == CELLS[1:]  # the finished image-only cell was not touched
    assert (out / "cells" / CELLS[0] / "done.json").stat().st_mtime_ns == first_marker
    # the killed cell had finished training: it was evaluated, not retrained
    assert (out / "cells" / CELLS[1] / "run" / "training_done.json").stat().st_mtime_ns == gated_trained
    for cell in CELLS:
        assert (out / "cells" / cell / "done.json").exists()


@pytest.mark.slow
def test_a_deleted_cell_is_redone_alone(interrupted_then_resumed, data):
    out, *_ = interrupted_then_resumed
    (out / "cells" / CELLS[0] / "done.json").unlink()
    (out / "cells" / CELLS[0] / "predictions.npz").unlink()
    again = run_benchmark(data, grid_from_dict(MINI), out, report=False)
    assert again.cells_run == [CELLS[0]]
    assert (out / "cells" / CELLS[0] / "predictions.npz").exists()


@pytest.mark.slow  # the module's grid fixture trains and scores several models
def test_results_have_one_row_per_model_seed_condition(interrupted_then_resumed):
    out, *_ = interrupted_then_resumed
    table = pd.read_csv(out / "results.csv")
    conditions = ["full", "no_image", "no_text", "drop_image_0.5", "drop_text_0.5"]
    main = table[table.group == "main"]
    assert sorted(main.condition.unique()) == sorted(conditions)
    assert len(main) == 2 * len(conditions)
    loso = table[table.group == "loso"]
    assert set(loso.subset) == {"in_site", "out_of_site"} and set(loso.held_out_site) == {"icu"}
    full = main[main.condition == "full"].iloc[0]
    assert full.auroc_macro_ci_low <= full.auroc_macro <= full.auroc_macro_ci_high
    assert {"auroc__effusion", "prevalence__effusion", "ece"} <= set(table.columns)
    assert json.loads((out / "results.json").read_text())["rows"][0]["model"] == "image_only"


@pytest.mark.slow  # the module's grid fixture trains and scores several models
def test_missing_modality_conditions(interrupted_then_resumed):
    out, *_ = interrupted_then_resumed
    image_only = load_cell_predictions(out / "cells" / CELLS[0])
    # an image-only model ignores the text, and hiding its image changes its output
    np.testing.assert_array_equal(image_only["probs__no_text"], image_only["probs__full"])
    assert not np.allclose(image_only["probs__no_image"], image_only["probs__full"])
    gated = load_cell_predictions(out / "cells" / CELLS[1])
    hidden = hide_masks("drop_image_0.5", len(gated["ids"]), seed=0)["image"]
    assert 0 < hidden.sum() < len(hidden)
    # only the studies whose image was hidden change; the others are predicted exactly as in "full"
    np.testing.assert_allclose(
        gated["probs__drop_image_0.5"][~hidden], gated["probs__full"][~hidden], atol=1e-6
    )
    np.testing.assert_allclose(
        gated["probs__drop_image_0.5"][hidden], gated["probs__no_image"][hidden], atol=1e-6
    )


@pytest.mark.slow  # the module's grid fixture trains and scores several models
def test_leave_one_site_out_manifest(interrupted_then_resumed):
    out, *_ = interrupted_then_resumed
    derived = pd.read_csv(out / "loso" / "icu" / "manifest.csv", keep_default_na=False)
    assert (derived[derived.site == "icu"].split == "test").all()
    assert set(derived[derived.site != "icu"].split) <= {"train", "val", "test"}
    loso = load_cell_predictions(out / "cells" / CELLS[2])
    assert "icu" in set(loso["sites"]) and len(set(loso["sites"])) > 1  # in-site and out-of-site studies


@pytest.mark.slow  # the module's grid fixture trains and scores several models
def test_summary_and_report(interrupted_then_resumed):
    out, result, *_ = interrupted_then_resumed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_unimodal"] == "image_only"
    (comparison,) = summary["comparisons"]
    assert (comparison["fusion"], comparison["baseline"]) == ("gated", "image_only")
    assert 0 <= comparison["delong_p_max"] <= 1
    assert set(summary["robustness"]) == {"image", "text"}
    html = result.report.read_text()
    assert html.count("data:image/png;base64,") == 4 and '<img src="http' not in html
    assert "Δ AUROC vs" in html or "&Delta; AUROC vs image_only" in html
    for plot in ("roc", "robustness", "per_site", "reliability"):
        assert (out / "plots" / f"{plot}.png").stat().st_size > 1000


@pytest.mark.slow  # the module's grid fixture trains and scores several models
def test_a_changed_grid_does_not_reuse_a_finished_cell(interrupted_then_resumed, data):
    out, *_ = interrupted_then_resumed
    changed = json.loads(json.dumps(MINI))
    changed["models"]["image_only"]["model.dropout"] = 0.3
    with pytest.raises(ConfigError, match="different configuration"):
        run_benchmark(data, grid_from_dict(changed), out, report=False)


@pytest.mark.slow
def test_a_setting_added_since_does_not_invalidate_finished_cells(interrupted_then_resumed, data):
    """A cell finished before medmodal grew a new setting (stored config lacks it, fingerprint
    stale) is still reused: the stored config is re-read through the current schema."""
    out, *_ = interrupted_then_resumed
    folder = out / "cells" / CELLS[0]
    cell_file, done_file = folder / "cell.json", folder / "done.json"
    saved = cell_file.read_text(), done_file.read_text()
    try:
        old_cell = json.loads(saved[0])
        del old_cell["config"]["model"]["representation"]
        cell_file.write_text(json.dumps(old_cell))
        done_file.write_text(json.dumps({**json.loads(saved[1]), "fingerprint": "stale"}))
        before = done_file.stat().st_mtime_ns
        result = run_benchmark(data, grid_from_dict(MINI), out, report=False)
        assert done_file.stat().st_mtime_ns == before and result.cells_run == []
        # but a finished cell for other data is not reused
        old_cell["data"] = "/somewhere/else"
        cell_file.write_text(json.dumps(old_cell))
        with pytest.raises(ConfigError, match="different configuration"):
            run_benchmark(data, grid_from_dict(MINI), out, report=False)
    finally:
        cell_file.write_text(saved[0])
        done_file.write_text(saved[1])


# ------------------------------------------------------------------ grid checks
def test_grid_errors_name_the_problem():
    with pytest.raises(ConfigError, match="seeds"):
        grid_from_dict({**MINI, "seeds": [0, 0]})
    with pytest.raises(ConfigError, match="unknown key"):
        grid_from_dict({**MINI, "evaluaton": {}})
    with pytest.raises(ConfigError, match=r"model 'bad'(.|\n)*unknown fusion 'gatd'"):
        grid_from_dict({**MINI, "models": {"bad": {"model.fusion.name": "gatd"}}, "leave_one_site_out": {}})
    with pytest.raises(ConfigError, match="leave_one_site_out"):
        grid_from_dict({**MINI, "leave_one_site_out": {"enabled": True, "models": ["nope"]}})


def test_the_default_grid_validates():
    grid, _ = benchmark.load_grid(None)
    assert {"image_only", "text_only", "concat", "late", "gated", "bilinear", "cross_attention"} <= set(
        grid.models
    )


def test_hide_masks_are_nested_and_reproducible():
    quarter = hide_masks("drop_text_0.25", 400, seed=3)["text"]
    half = hide_masks("drop_text_0.5", 400, seed=3)["text"]
    assert np.all(half[quarter]) and 0.15 < quarter.mean() < 0.35 and 0.4 < half.mean() < 0.6
    np.testing.assert_array_equal(half, hide_masks("drop_text_0.5", 400, seed=3)["text"])
    assert hide_masks("full", 5, 0) == {} and hide_masks("no_image", 3, 0)["image"].all()
    names = benchmark.condition_names(EvaluationSettings(drop_fractions=[0, 0.5, 1]))
    assert names == ["full", "no_image", "no_text", "drop_image_0.5", "drop_text_0.5"]
