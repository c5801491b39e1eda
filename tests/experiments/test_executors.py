"""The benchmark grid on Ray (2 local workers) gives the serial runner's results.csv, resumes, and
reports failed cells together."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from medmodal.config import ConfigError
from medmodal.experiments import benchmark
from medmodal.experiments.benchmark import grid_from_dict, run_benchmark
from medmodal.experiments.executors import CellJob, CellsFailed, ExecutorSettings

from .helpers import mini_grid

GRID = mini_grid("ray-mini", evaluation={"bootstrap_resamples": 50, "drop_fractions": [0, 1]})
CELLS = {"image_only__seed0", "gated__seed0"}


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs (2 workers at a time), no dashboard, no usage statistics."""
    ray = pytest.importorskip("ray")
    mp = pytest.MonkeyPatch()
    mp.setenv("RAY_DISABLE_USAGE_STATS", "1")
    mp.setenv("OMP_NUM_THREADS", "1")
    mp.setenv("TOKENIZERS_PARALLELISM", "false")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=80 * 1024**2,
        log_to_driver=False,
        runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "RAY_DISABLE_USAGE_STATS": "1"}},
    )
    # the stand-in cell functions of this module travel by value (workers need not import the tests)
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray.shutdown()
    mp.undo()


def _results(out) -> pd.DataFrame:
    table = pd.read_csv(out / "results.csv")
    timing = [c for c in table.columns if "second" in c or c.endswith("_s")]
    return table.drop(columns=timing).sort_values(["model", "seed", "condition"]).reset_index(drop=True)


@pytest.mark.slow
def test_ray_grid_gives_the_serial_results_and_resumes(data, tmp_path, local_ray):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the Ray workers run 1 thread each: the same summation order
    try:
        serial = run_benchmark(data, grid_from_dict(GRID), tmp_path / "serial", report=False)
    finally:
        torch.set_num_threads(threads)
    ray_grid = grid_from_dict({**GRID, "executor": {"name": "ray", "cpus_per_cell": 1}})
    distributed = run_benchmark(data, ray_grid, tmp_path / "ray", report=False)

    assert set(serial.cells_run) == set(distributed.cells_run) == CELLS
    assert distributed.cells_run == [c.id for c in distributed.cells]  # plan order
    a, b = _results(tmp_path / "serial"), _results(tmp_path / "ray")
    assert len(a) == len(CELLS) * 3 and list(a.columns) == list(b.columns)  # full, no_image, no_text
    numeric = a.select_dtypes("number").columns
    pd.testing.assert_frame_equal(a.drop(columns=numeric), b.drop(columns=numeric))
    # tolerance 0: the same single-threaded computation in another process (measured: identical)
    np.testing.assert_array_equal(a[numeric].to_numpy(float), b[numeric].to_numpy(float))
    assert a["auroc_macro"].notna().all()

    # resumable like the serial runner: finished cell folders are skipped, a deleted one is redone alone
    import shutil

    shutil.rmtree(tmp_path / "ray" / "cells" / "gated__seed0")
    again = run_benchmark(data, ray_grid, tmp_path / "ray", report=False)
    assert again.cells_run == ["gated__seed0"]
    np.testing.assert_array_equal(
        _results(tmp_path / "ray")[numeric].to_numpy(float), b[numeric].to_numpy(float)
    )


def test_failed_ray_cells_are_named_together_and_the_others_finish(tmp_path, local_ray):
    """Runs a stand-in cell function (no training): one cell fails, the other still runs."""
    from medmodal.experiments.executors import run_cells

    cells = benchmark.plan_cells(grid_from_dict(GRID), tmp_path, tmp_path)
    with pytest.raises(CellsFailed, match=r"1 of 2 cells failed: gated__seed0 \(ValueError: bad cell\)"):
        run_cells(cells, _job_failing_on_gated_seed0(tmp_path), ExecutorSettings(name="ray"))
    written = sorted(p.name for p in tmp_path.glob("*.ran"))
    assert written == sorted(f"{c}.ran" for c in CELLS - {"gated__seed0"})


def _fails_on_gated_seed0(cell, out, conditions, settings, *, progress=False) -> bool:
    if cell.id == "gated__seed0":
        raise ValueError("bad cell")
    (out / f"{cell.id}.ran").write_text("ok")
    return True


def _job_failing_on_gated_seed0(out) -> CellJob:
    return CellJob(_fails_on_gated_seed0, out, ["full"], benchmark.EvaluationSettings())


def test_serial_executor_stops_at_the_first_failure(tmp_path):
    from medmodal.experiments.executors import run_cells

    cells = benchmark.plan_cells(grid_from_dict(GRID), tmp_path, tmp_path)
    with pytest.raises(ValueError, match="bad cell"):
        run_cells(cells, _job_failing_on_gated_seed0(tmp_path), ExecutorSettings())
    assert sorted(p.name for p in tmp_path.glob("*.ran")) == ["image_only__seed0.ran"]  # then gated failed


def test_executor_settings_are_validated():
    with pytest.raises(ConfigError, match="executor.name"):
        grid_from_dict({**GRID, "executor": {"name": "dask"}})
    with pytest.raises(ConfigError, match="executor.cpus_per_cell"):
        grid_from_dict({**GRID, "executor": {"name": "ray", "cpus_per_cell": 0}})
    assert (
        grid_from_dict({**GRID, "executor": {"name": "ray", "gpus_per_cell": 1}}).executor.gpus_per_cell == 1
    )


class _Stop(Exception):
    pass


def test_command_line_flags_choose_the_executor(tmp_path, monkeypatch):
    """``medmodal benchmark --executor ray --address ... --gpus-per-cell`` override the grid's executor keys."""
    import yaml

    from medmodal.cli.main import build_parser

    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump({**GRID, "executor": {"cpus_per_cell": 3}}))
    seen = {}

    def capture(data, grid, out, **kwargs):
        seen["executor"] = grid.executor
        raise _Stop

    monkeypatch.setattr(benchmark, "run_benchmark", capture)
    args = build_parser().parse_args(
        [
            "benchmark",
            "--data",
            str(tmp_path),
            "--out",
            str(tmp_path / "b"),
            "--config",
            str(grid_file),
            "--executor",
            "ray",
            "--address",
            "ray://head:10001",
            "--gpus-per-cell",
            "0.5",
        ]
    )
    with pytest.raises(_Stop):
        args.func(args)
    assert seen["executor"] == ExecutorSettings(
        name="ray", address="ray://head:10001", cpus_per_cell=3, gpus_per_cell=0.5
    )

    args = build_parser().parse_args(
        ["benchmark", "--data", str(tmp_path), "--out", str(tmp_path / "b"), "--config", str(grid_file)]
    )
    with pytest.raises(_Stop):
        args.func(args)
    assert seen["executor"] == ExecutorSettings(cpus_per_cell=3)  # the grid's keys, serial by default
