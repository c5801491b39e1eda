"""Where the cells of a benchmark grid run: in this process one after the other (``serial``) or as
Ray tasks on a local machine or a Ray cluster (``ray``), each task holding its own CPUs / GPUs.

Both executors call the same :func:`medmodal.experiments.benchmark.run_cell` on the same cells, so a
grid gives the same ``results.csv`` whichever runs it, and both resume the same way: a cell whose
folder holds ``done.json`` is skipped (the check is inside ``run_cell``, on the worker).

On a cluster (``address`` set) every node needs medmodal installed and must see the data folder and
the benchmark's ``--out`` folder at the same paths (a shared filesystem): cells write their results
there and the driver reads them back. Ray is an optional dependency (``pip install
'medmodal[distributed]'``); it is imported only when the ``ray`` executor is chosen.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from medmodal.training.engine import quiet_lightning

if TYPE_CHECKING:
    from medmodal.experiments.benchmark import Cell, EvaluationSettings

log = logging.getLogger(__name__)

# run_cell(cell, out, conditions, settings, progress=...) -> True if the cell was trained / evaluated now
CellRunner = Callable[..., bool]


class ExecutorSettings(BaseModel):
    """``executor`` section of a grid (``medmodal benchmark --executor / --address`` override it)."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["serial", "ray"] = "serial"
    address: str | None = None  # Ray cluster ("auto", "ray://host:10001", "host:6379"); None: a local Ray
    cpus_per_cell: float = Field(1.0, gt=0)  # Ray resources one cell's task holds
    gpus_per_cell: float = Field(0.0, ge=0)
    local_cpus: int | None = Field(None, ge=1)  # CPUs of a local Ray (None: all of this machine's)


@dataclass(frozen=True)
class CellJob:
    """What every cell of a grid is run with: ``run_cell(cell, out, conditions, settings, progress=...)``."""

    run_cell: CellRunner
    out: Path
    conditions: list[str]
    settings: EvaluationSettings

    def __call__(self, cell: Cell, *, progress: bool = False) -> bool:
        return self.run_cell(cell, self.out, self.conditions, self.settings, progress=progress)


def run_cells(
    cells: list[Cell], job: CellJob, executor: ExecutorSettings, *, progress: bool = False
) -> list[str]:
    """Run every cell with the chosen executor; returns the ids of the cells run now, in plan order."""
    if executor.name == "ray":
        return run_cells_ray(cells, job, executor)
    return run_cells_serial(cells, job, progress=progress)


def run_cells_serial(cells: list[Cell], job: CellJob, *, progress: bool = False) -> list[str]:
    """One cell after the other in this process; the first failing cell stops the grid."""
    done = []
    for i, cell in enumerate(cells, 1):
        if job(cell, progress=progress):
            done.append(cell.id)
            log.info("[%d/%d] %s done", i, len(cells), cell.id)
    return done


class CellsFailed(RuntimeError):
    """Some cells of a distributed grid failed; the others finished (and are kept for a resume)."""


def run_cells_ray(cells: list[Cell], job: CellJob, executor: ExecutorSettings) -> list[str]:
    """Every cell as a Ray task with ``cpus_per_cell`` / ``gpus_per_cell``; Ray schedules as many at a
    time as the resources allow. A failed cell does not stop the others: they finish, then
    :class:`CellsFailed` names every failed cell (re-running the grid redoes only those)."""
    ray = _import_ray()
    started_here = connect_ray(ray, executor)
    try:
        task = ray.remote(num_cpus=executor.cpus_per_cell, num_gpus=executor.gpus_per_cell)(_run_one)
        pending = {task.remote(job, cell): cell for cell in cells}
        ran, failed = set(), {}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(ready[0])
            try:
                if ray.get(ready[0]):
                    ran.add(cell.id)
                    log.info("%s done (%d cells left)", cell.id, len(pending))
            except Exception as err:  # noqa: BLE001 - reported together below
                failed[cell.id] = _cause(err)
                log.error("cell %s failed: %s", cell.id, failed[cell.id])
        if failed:
            first = next(iter(failed.values()))
            raise CellsFailed(
                f"{len(failed)} of {len(cells)} cells failed: "
                + ", ".join(f"{cid} ({type(e).__name__}: {e})" for cid, e in failed.items())
            ) from first
        return [c.id for c in cells if c.id in ran]
    finally:
        if started_here:
            ray.shutdown()


def _run_one(job: CellJob, cell: Cell) -> bool:
    """The body of one Ray task (a worker process): the cell, as the serial runner would run it."""
    quiet_lightning()
    return job(cell, progress=False)


def connect_ray(ray: Any, executor: ExecutorSettings) -> bool:
    """Join the Ray cluster at ``executor.address`` or start a local Ray (no dashboard, no usage
    statistics sent anywhere); an already initialised Ray is used as it is. True if started here."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    if executor.address:
        ray.init(address=executor.address, log_to_driver=True)
    else:
        ray.init(num_cpus=executor.local_cpus, include_dashboard=False, log_to_driver=True)
    return True


def _cause(err: BaseException) -> BaseException:
    """The cell's own exception inside a ``RayTaskError`` (its ``cause``), else ``err``."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else err


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError(
            "the 'ray' executor needs Ray: pip install 'medmodal[distributed]' (or pip install 'ray>=2.9')"
        ) from None
    return ray
