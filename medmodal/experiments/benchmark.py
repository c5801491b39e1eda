"""``medmodal benchmark``: a grid of models trained and evaluated on the same splits and budget.

A grid (YAML, :class:`GridConfig`, validated on load) names the models as config
overrides (image-only, text-only, each fusion, modality dropout, class-imbalance
losses, ...), the seeds, the missing-modality conditions and the leave-one-site-out
validation. Every (model, seed) is a **cell** with its own folder::

    OUT/
      grid.yaml                    the grid as run
      cells/<model>__seed<k>/      run/ (the training run folder), cell.json,
                                   predictions.npz (test probabilities per condition), done.json
      cells/loso-<site>__<model>__seed<k>/   the same, trained without <site>
      loso/<site>/manifest.csv     derived manifest: <site>'s studies are the test split
      results.csv, results.json    one row per model x seed x condition (x site subset)
      summary.json                 mean / sd over seeds, bootstrap CIs, paired comparisons
      plots/*.png, report.html

Resuming: a cell with ``done.json`` (written last, atomically) is not retrained or
re-evaluated; a cell whose training finished but whose evaluation did not is only
evaluated; a cell killed mid-training resumes from its ``last.ckpt``
(:func:`medmodal.training.trainer.train`). A finished cell whose configuration no
longer matches the grid is an error (use another ``--out`` or delete that cell).

Missing-modality conditions (evaluation only, same trained model): ``full``;
``no_image`` / ``no_text`` (the modality hidden for every test study); and, for a
fraction p, ``drop_image_p`` / ``drop_text_p``: the modality hidden for a random
fraction p of the test studies. The random masks depend only on the evaluation
seed and the study order, so every model sees the same hidden studies, and they
are nested (the studies hidden at p = 0.25 are hidden at p = 0.5 too). p = 0 is
``full`` and p = 1 is ``no_<modality>``.

Leave-one-site-out: for each held-out site a derived manifest puts every study of
that site into ``test``; studies of the other sites keep their train / val split and
their own test studies stay in ``test``, so one evaluation gives **in-site** (other
sites' test studies) and **out-of-site** (the held-out site) metrics of one model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medmodal.config import Config, ConfigError, apply_overrides, load_config, read_yaml, validated
from medmodal.data.pipeline import read_dataset, read_split
from medmodal.data.types import Study
from medmodal.errors import InputNotFoundError
from medmodal.evaluation.evaluate import predict_split
from medmodal.evaluation.evaluate_baseline import predict_baseline_split
from medmodal.evaluation.scoring import SplitPredictions
from medmodal.experiments.benchmark_results import drop_condition, write_results
from medmodal.experiments.executors import CellJob, ExecutorSettings, run_cells
from medmodal.experiments.report_html import write_report
from medmodal.models.registry import check_part_names
from medmodal.runs import write_json_atomic
from medmodal.training.baselines import (
    build_baselines,
    fit_baseline,
    is_baseline_config,
    is_baseline_run,
    load_baseline,
)
from medmodal.training.loading import load_trained
from medmodal.training.trainer import train

log = logging.getLogger(__name__)

CELL_DONE = "done.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ------------------------------------------------------------------------ grid
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EvaluationSettings(_Strict):
    """How each trained cell is evaluated and how the statistics are computed."""

    conditions: list[Literal["full", "no_image", "no_text"]] = ["full", "no_image", "no_text"]
    drop_fractions: list[float] = [0.0, 0.25, 0.5, 0.75, 1.0]
    drop_modalities: list[Literal["image", "text"]] = ["image", "text"]
    bootstrap_resamples: int = Field(1000, ge=50, le=100_000)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    bootstrap_method: Literal["percentile", "BCa"] = "percentile"
    seed: int = 0
    calibration_bins: int = Field(15, ge=2, le=100)

    @field_validator("drop_fractions")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        bad = [p for p in value if not 0 <= p <= 1]
        if bad:
            raise ValueError(f"fractions must be in [0, 1], got {bad}")
        return sorted(set(value))


class SiteSettings(_Strict):
    """Leave-one-site-out external validation."""

    enabled: bool = False
    models: list[str] = []  # model names of the grid; empty = every model
    seeds: list[int] | None = None  # default: the grid's first seed
    sites: list[str] | None = None  # default: every site in the data


class GridConfig(_Strict):
    """A benchmark grid; every model is a set of dotted config overrides (``medmodal config`` keys)."""

    name: str = "benchmark"
    description: str = ""
    base_config: str | None = None  # YAML config the cells start from (relative to the grid file)
    base: dict[str, Any] = {}  # overrides applied to every cell
    seeds: list[int] = [0]
    models: dict[str, dict[str, Any]]
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    leave_one_site_out: SiteSettings = Field(default_factory=SiteSettings)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)  # serial or Ray (executors.py)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int]) -> list[int]:
        if not value or len(set(value)) != len(value):
            raise ValueError(f"give one or more distinct seeds, got {value}")
        return value

    @field_validator("models")
    @classmethod
    def _model_names(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if not value:
            raise ValueError("the grid needs at least one model")
        bad = [name for name in value if not _NAME.match(name) or "__" in name]
        if bad:
            raise ValueError(f"model names must be letters, digits, '_', '-', '.' (no '__'): {bad}")
        return value

    @model_validator(mode="after")
    def _site_models_exist(self) -> GridConfig:
        unknown = [m for m in self.leave_one_site_out.models if m not in self.models]
        if unknown:
            raise ValueError(f"leave_one_site_out.models: not models of this grid: {unknown}")
        return self


def load_grid(path: str | Path | None) -> tuple[GridConfig, Path | None]:
    """Read and validate a grid YAML; ``None`` gives the built-in default grid (``benchmarks/grids/default.yaml``)."""
    path = Path(path) if path is not None else default_grid_path()
    return grid_from_dict(read_yaml(path, "grid"), str(path)), path.parent


def default_grid_path() -> Path:
    return Path(__file__).resolve().parent / "grids" / "default.yaml"


def grid_from_dict(data: Any, source: str = "<dict>", base_dir: Path | None = None) -> GridConfig:
    """Validate a grid and every model's resolved config; errors name the field or the model."""
    grid = validated(GridConfig, data, "grid", source, unknown_key="unknown key")
    for name in grid.models:
        try:
            config = model_config(grid, name, grid.seeds[0], base_dir)
            check_part_names(config.model)
            check_baseline_cell(config)
        except ConfigError as err:
            raise ConfigError(f"{source}: model '{name}': {err}") from None
    return grid


def check_baseline_cell(config: Config) -> None:
    """A baseline model of the grid (``baseline.classifier`` set) must build; the benchmark scores
    classification, so a baseline cell needs a classifier."""
    if not is_baseline_config(config):
        return
    if config.baseline.classifier is None:
        raise ConfigError("baseline: a benchmark cell scores classification; set baseline.classifier")
    build_baselines(config)


def model_config(grid: GridConfig, model: str, seed: int, base_dir: Path | None = None) -> Config:
    """The resolved config of one cell: base config file, grid ``base``, the model's overrides, the seed."""
    base = None
    if grid.base_config:
        base = Path(grid.base_config)
        if not base.is_absolute() and base_dir is not None:
            base = base_dir / base
    config = apply_overrides(load_config(base), grid.base)
    config = apply_overrides(config, grid.models[model])
    return apply_overrides(config, {"train.seed": seed})


def model_role(config: Config) -> Literal["image", "text", "fusion", "none"]:
    """``image`` / ``text`` for a unimodal model, ``fusion`` for a model that uses both (deep or baseline);
    ``none`` only for a classifier baseline that reads neither (none is registered)."""
    modality: Literal["image", "text", "both", "none"] = config.model.modalities
    if is_baseline_config(config) and config.baseline.classifier is not None:
        modality = build_baselines(config)["classifier"].modality
    return "fusion" if modality == "both" else modality


# ----------------------------------------------------------------------- cells
@dataclass
class Cell:
    """One (model, seed[, held-out site]) of the grid: where it lives and what it trains on."""

    id: str
    model: str
    seed: int
    group: Literal["main", "loso"]
    config: Config
    data: Path  # dataset folder or manifest file
    held_out_site: str | None = None

    def folder(self, out: Path) -> Path:
        return out / "cells" / self.id

    def fingerprint(self, config: Config | None = None) -> str:
        """Hash of the resolved config (``config`` instead of the cell's own, if given), data and site."""
        config = self.config if config is None else config
        dump = config.model_dump(mode="json")
        dump["data"].pop("allow_outside_paths", None)  # where images may live, not how the cell is run
        text = json.dumps(dump, sort_keys=True) + str(self.data) + str(self.held_out_site)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def matches_finished(self, folder: Path, done: dict[str, Any]) -> bool:
        """Whether the finished cell in ``folder`` was run with this cell's configuration.

        The stored config is re-read through the current schema first, so a setting added to
        medmodal since (with a default that reproduces the old behaviour) does not invalidate
        finished cells; a changed value, data folder or held-out site does.
        """
        if done.get("fingerprint") == self.fingerprint():
            return True
        try:
            stored = json.loads((folder / "cell.json").read_text())
            config = Config.model_validate(stored["config"])
        except (OSError, KeyError, ValueError, ValidationError):
            return False
        same_place = (
            stored.get("data") == str(self.data) and stored.get("held_out_site") == self.held_out_site
        )
        return same_place and self.fingerprint(config) == self.fingerprint()


def plan_cells(grid: GridConfig, data: Path, out: Path, base_dir: Path | None = None) -> list[Cell]:
    """Every cell of the grid, main cells first; writes the leave-one-site-out manifests."""
    cells = [
        Cell(f"{model}__seed{seed}", model, seed, "main", model_config(grid, model, seed, base_dir), data)
        for model in grid.models
        for seed in grid.seeds
    ]
    loso = grid.leave_one_site_out
    if loso.enabled:
        for site, manifest in write_site_manifests(data, cells[0].config, out / "loso", loso.sites).items():
            for model in loso.models or list(grid.models):
                for seed in loso.seeds or grid.seeds[:1]:
                    # The derived manifest (ours) points at the images of the original data folder,
                    # whose paths were checked when it was read: allow them outside its own folder.
                    config = apply_overrides(
                        model_config(grid, model, seed, base_dir), {"data.allow_outside_paths": True}
                    )
                    cells.append(
                        Cell(
                            f"loso-{_safe(site)}__{model}__seed{seed}",
                            model,
                            seed,
                            "loso",
                            config,
                            manifest,
                            held_out_site=site,
                        )
                    )
    return cells


def _safe(site: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", site) or "site"


def write_site_manifests(
    data: Path, config: Config, folder: Path, sites: list[str] | None
) -> dict[str, Path]:
    """One derived manifest per held-out site (``folder/<site>/manifest.csv``); see the module docstring.

    The split of every study is the one the toolkit assigns with ``config.data`` (so the
    other sites keep exactly their train / val / test); images become absolute paths.
    """
    manifest = read_dataset(data, config)
    present = sorted({s.site for s in manifest.studies if s.site})
    if not present:
        raise ValueError(f"{manifest.path}: leave-one-site-out needs a 'site' column; no study has a site")
    chosen = sites or present
    unknown = [s for s in chosen if s not in present]
    if unknown:
        raise ValueError(f"leave_one_site_out.sites: {unknown} not in the data (sites: {present})")
    if len(present) < 2:
        raise ValueError(f"{manifest.path}: leave-one-site-out needs at least 2 sites, found {present}")
    table = _manifest_table(manifest)
    written = {}
    for site in chosen:
        derived = table.copy()
        derived.loc[derived["site"] == site, "split"] = "test"
        path = folder / _safe(site) / "manifest.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".csv.tmp")
        derived.to_csv(tmp, index=False)
        tmp.replace(path)
        written[site] = path
    return written


def _manifest_table(manifest) -> Any:
    """The studies of a read manifest as a manifest table (absolute image paths, assigned splits)."""
    import pandas as pd

    rows = []
    for s in manifest.studies:
        rows.append(
            {
                "id": s.id,
                "patient_id": s.patient_id or "",
                "image": str(s.image) if s.image else "",
                **{k: v for k, v in s.sections.items()},
                "labels": ";".join(s.labels),
                "boxes": json.dumps([{"label": b.label, "box": list(b.box)} for b in s.boxes])
                if s.boxes
                else "",
                "split": s.split,
                "site": s.site or "",
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------- conditions
def condition_names(settings: EvaluationSettings) -> list[str]:
    """The evaluation conditions of a grid, ``full`` first (p = 0 is ``full``, p = 1 is ``no_<modality>``)."""
    names: list[str] = list(dict.fromkeys(["full", *settings.conditions]))
    for modality in settings.drop_modalities:
        for p in settings.drop_fractions:
            names.append(drop_condition(modality, p))
    return list(dict.fromkeys(names))


def hide_masks(condition: str, n: int, seed: int) -> dict[str, np.ndarray]:
    """Per-study masks (True = hidden) of ``condition`` for ``n`` test studies (module docstring)."""
    if condition == "full":
        return {}
    if condition in ("no_image", "no_text"):
        return {condition[3:]: np.ones(n, dtype=bool)}
    match = re.fullmatch(r"drop_(image|text)_([0-9.]+)", condition)
    if not match:
        raise ValueError(f"unknown evaluation condition {condition!r}")
    modality, p = match.group(1), float(match.group(2))
    u = np.random.default_rng([seed, 0 if modality == "image" else 1]).random(n)
    return {modality: u < p}


# ---------------------------------------------------------------- running
@dataclass
class BenchmarkResult:
    out: Path
    cells: list[Cell]
    cells_run: list[str] = field(default_factory=list)  # cells trained or evaluated by this call
    report: Path | None = None
    seconds: float = 0.0


def run_benchmark(
    data: str | Path,
    grid: GridConfig | str | Path | None,
    out: str | Path,
    *,
    progress: bool = False,
    report: bool = True,
) -> BenchmarkResult:
    """Train and evaluate every cell of ``grid`` on ``data`` into ``out`` (resumable), then
    write ``results.csv`` / ``results.json`` / ``summary.json``, the plots and ``report.html``."""
    start = time.time()
    base_dir = None
    if not isinstance(grid, GridConfig):
        grid, base_dir = load_grid(grid)
    data, out = Path(data).resolve(), Path(out).resolve()
    if not data.exists():
        raise InputNotFoundError(f"dataset not found: {data}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "grid.yaml").write_text(yaml.safe_dump(grid.model_dump(mode="json"), sort_keys=False))
    cells = plan_cells(grid, data, out, base_dir)
    result = BenchmarkResult(out=out, cells=cells)
    conditions = condition_names(grid.evaluation)
    job = CellJob(run_cell, out, conditions, grid.evaluation)
    result.cells_run = run_cells(cells, job, grid.executor, progress=progress)
    write_results(out, grid, cells, conditions, data)
    if report:
        result.report = write_report(out)
    result.seconds = time.time() - start
    return result


def run_cell(
    cell: Cell, out: Path, conditions: list[str], settings: EvaluationSettings, *, progress: bool = False
) -> bool:
    """Train (or resume) and evaluate one cell; False if it was already done."""
    folder = cell.folder(out)
    marker = folder / CELL_DONE
    if marker.exists():
        done = json.loads(marker.read_text())
        if not cell.matches_finished(folder, done):
            raise ConfigError(
                f"{folder} holds a finished cell with a different configuration (grid changed?); "
                "use another --out, or delete that cell folder to redo it"
            )
        if set(conditions) <= set(done.get("conditions", [])):
            return False
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        folder / "cell.json",
        {
            "id": cell.id,
            "model": cell.model,
            "seed": cell.seed,
            "group": cell.group,
            "held_out_site": cell.held_out_site,
            "data": str(cell.data),
            "role": model_role(cell.config),
            "config": cell.config.model_dump(mode="json"),
        },
    )
    run_dir = folder / "run"
    t0 = time.time()
    if not (run_dir / "training_done.json").exists():
        log.info("training %s", cell.id)
        if is_baseline_config(cell.config):
            fit_baseline(cell.data, cell.config, run_dir, force=True)  # seconds: no partial fit to resume
        else:
            train(cell.data, cell.config, run_dir)
    training = json.loads((run_dir / "training_done.json").read_text())
    train_seconds = training.get("seconds", time.time() - t0)
    evaluate_cell(cell, run_dir, folder / "predictions.npz", conditions, settings.seed, progress=progress)
    write_json_atomic(
        marker,
        {
            "fingerprint": cell.fingerprint(),
            "conditions": conditions,
            "train_seconds": train_seconds,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            # a killed and resumed training is marked (it reproduces the uninterrupted one)
            "resumed": bool(training.get("resumed", False)),
            "resumes": int(training.get("resumes", 0)),
        },
    )
    return True


def evaluate_cell(
    cell: Cell, run_dir: Path, path: Path, conditions: list[str], seed: int, *, progress: bool = False
) -> None:
    """Test-split probabilities of the cell's model under every condition -> ``predictions.npz``.

    Arrays: ``ids`` [N], ``sites`` [N], ``labels`` [C], ``targets`` [N, C] and
    ``probs__<condition>`` [N, C] per condition.
    """
    if is_baseline_run(run_dir):
        evaluate_baseline_cell(cell, run_dir, path, conditions, seed)
        return
    trained = load_trained(run_dir)
    cfg = trained.config
    studies = trained.studies(cell.data, "test")

    def predict(hide: dict[str, np.ndarray]) -> SplitPredictions:
        return predict_split(
            trained,
            studies,
            beam_size=1,
            max_tokens=cfg.evaluate.max_generate_tokens,
            batch_size=cfg.evaluate.batch_size,
            generate=False,
            progress=progress,
            hide=hide,
        )

    _save_predictions(path, studies, trained.labels, conditions, seed, predict)


def evaluate_baseline_cell(cell: Cell, run_dir: Path, path: Path, conditions: list[str], seed: int) -> None:
    """:func:`evaluate_cell` for a baseline run: the same arrays, the same hidden studies per condition."""
    fitted = load_baseline(run_dir)
    studies = read_split(cell.data, fitted.config, fitted.labels, "test")

    def predict(hide: dict[str, np.ndarray]) -> SplitPredictions:
        return predict_baseline_split(fitted, studies, generate=False, hide=hide)

    _save_predictions(path, studies, fitted.labels, conditions, seed, predict)


def _save_predictions(
    path: Path,
    studies: list[Study],
    labels: list[str],
    conditions: list[str],
    seed: int,
    predict: Callable[[dict[str, np.ndarray]], SplitPredictions],
) -> None:
    """``predict(hide)`` under every condition (:func:`hide_masks`) -> the arrays of ``predictions.npz``."""
    arrays: dict[str, np.ndarray] = {}
    for condition in conditions:
        preds = predict(hide_masks(condition, len(studies), seed))
        arrays[f"probs__{condition}"] = preds.probs.astype(np.float32)
        arrays["targets"] = preds.targets.astype(np.int8)
    arrays["ids"] = np.array([s.id for s in studies])
    arrays["sites"] = np.array([s.site or "" for s in studies])
    arrays["labels"] = np.array(labels)
    _save_npz(path, arrays)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **cast(dict[str, Any], arrays))  # (numpy's stub: a key could be allow_pickle)
    tmp.replace(path)
