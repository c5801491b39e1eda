"""``medmodal baseline``: fit a scikit-learn baseline into a run folder (:mod:`medmodal.models.baselines`).

The data are read, split and labelled exactly as for deep runs (:func:`read_dataset`,
``data.train_fraction`` via :func:`training_subset`); the baseline is fitted on the training
split, its settings chosen on the validation split. The run folder::

    RUN/
      config.yaml           the resolved config (``baseline`` names the parts)
      labels.json           label order + training-set prevalence (as deep runs)
      data_summary.json     manifest summary, including every skipped bad row
      baseline.json         which baselines, their fitted metadata (vocabulary, reports, ...)
      baseline.npz          their fitted arrays (coefficients, idf, ...), read without pickle
      training_done.json    seconds, what was chosen on the validation split
      metrics.json, predictions/<split>.jsonl   written by ``medmodal evaluate`` (same format as deep runs)

Refitting into a folder that holds a finished baseline run with another config is an error
(``force`` starts over); with the same config the fit is simply redone (seconds).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medmodal.config import Config, ConfigError, load_config, save_config
from medmodal.data.pipeline import fit_splits, read_dataset, training_subset
from medmodal.errors import RunNotFoundError
from medmodal.models.baselines.base import Baseline, BaselineData, ClassifierBaseline
from medmodal.models.baselines.storage import load_arrays, load_json, save_arrays, save_json
from medmodal.models.registry import available, create
from medmodal.runs import RunDir, write_json_atomic

log = logging.getLogger(__name__)

STATE_JSON = "baseline.json"
STATE_ARRAYS = "baseline.npz"
TASKS = {"classifier": "classification", "boxes": "localization", "report": "generation"}


def is_baseline_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a fitted baseline (rather than a deep model)."""
    return (Path(run_dir) / STATE_JSON).is_file()


def is_baseline_config(config: Config) -> bool:
    b = config.baseline
    return any((b.classifier, b.boxes, b.report))


def build_baselines(config: Config) -> dict[str, Baseline]:
    """The configured parts by slot (``classifier`` / ``boxes`` / ``report``), checked; errors name the field."""
    b = config.baseline
    if not is_baseline_config(config):
        raise ConfigError(
            "baseline: name at least one of baseline.classifier, baseline.boxes, baseline.report"
        )
    known = available("baseline")
    parts: dict[str, Baseline] = {}
    for slot, task in TASKS.items():
        name = getattr(b, slot)
        if name is None:
            continue
        if name not in known:
            raise ConfigError(f"baseline.{slot}: unknown baseline '{name}'; available: {', '.join(known)}")
        part = create("baseline", name, seed=config.train.seed, table=b.kwargs, **b.kwargs.get(name, {}))
        if part.task != task:
            raise ConfigError(f"baseline.{slot}: '{name}' is a {part.task} baseline, not {task}")
        parts[slot] = part
    unknown = sorted(set(b.kwargs) - set(known))
    if unknown:
        raise ConfigError(f"baseline.kwargs: unknown baselines {unknown}; available: {', '.join(known)}")
    if b.report == "template_report" and "classifier" not in parts:
        raise ConfigError(
            "baseline.report: template_report writes the findings of baseline.classifier; name one"
        )
    return parts


@dataclass
class BaselineRun:
    """A fitted baseline run loaded for prediction (the counterpart of ``TrainedRun``)."""

    run: RunDir
    config: Config
    labels: list[str]
    parts: dict[str, Baseline]
    calibrated: bool = False  # baselines are not post-hoc calibrated

    def decision_thresholds(self) -> float:
        return self.config.evaluate.threshold

    @property
    def classifier(self) -> ClassifierBaseline | None:
        return self.parts.get("classifier")  # type: ignore[return-value]


@dataclass
class FitResult:
    run: RunDir
    seconds: float
    info: dict[str, Any]


def fit_baseline(data: str | Path, config: Config, out: str | Path, *, force: bool = False) -> FitResult:
    """Fit the baselines of ``config.baseline`` on ``data`` into the run folder ``out``."""
    start = time.time()
    run = RunDir.at(out)
    _check_folder(run, config, force)
    parts = build_baselines(config)
    manifest = read_dataset(data, config)
    labels = manifest.label_names
    train_studies, val_studies = fit_splits(manifest)
    train_studies = training_subset(train_studies, config.data.train_fraction, config.data.split_seed)
    train = BaselineData.from_config(train_studies, labels, config)
    val = BaselineData.from_config(val_studies, labels, config)
    info: dict[str, Any] = {}
    val_probs = None
    for slot, part in parts.items():  # classifier first: the report may use its validation probabilities
        t0 = time.time()
        info[slot] = {
            "name": part.name,
            **part.fit(train, val, val_probs=val_probs),
            "seconds": round(time.time() - t0, 2),
        }
        if slot == "classifier":
            val_probs = part.predict(val)  # type: ignore[attr-defined]
        log.info("fitted %s (%s) in %.1f s", part.name, slot, time.time() - t0)
    _write_run(run, config, parts, labels, train, manifest, data)
    seconds = time.time() - start
    write_json_atomic(run.done, {"baseline": True, "seconds": round(seconds, 2), "fit": info})
    return FitResult(run=run, seconds=seconds, info=info)


def _check_folder(run: RunDir, config: Config, force: bool) -> None:
    if force:
        for path in (
            run.config,
            run.labels,
            run.data_summary,
            run.done,
            run.metrics,
            run.root / STATE_JSON,
            run.root / STATE_ARRAYS,
        ):
            path.unlink(missing_ok=True)
        return
    if run.config.exists():
        if not is_baseline_run(run.root) and run.model_checkpoint().exists():
            raise ConfigError(f"{run.root} holds a deep training run; use another --out")
        if load_config(run.config) != config:
            raise ConfigError(
                f"{run.root} already holds a run with a different configuration; "
                "use another --out, or --force to start over"
            )


def _write_run(
    run: RunDir,
    config: Config,
    parts: dict[str, Baseline],
    labels: list[str],
    train: BaselineData,
    manifest,
    data,
) -> None:
    run.root.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for slot, part in parts.items():
        part_meta, part_arrays = part.state()
        meta[slot] = {"name": part.name, "meta": part_meta}
        arrays.update({f"{slot}/{k}": np.asarray(v) for k, v in part_arrays.items()})
    save_arrays(run.root / STATE_ARRAYS, arrays)
    save_json(run.root / STATE_JSON, {"parts": meta})
    save_config(config, run.config)
    prevalence = train.targets().mean(axis=0) if len(train) else np.zeros(len(labels))
    write_json_atomic(
        run.labels, {"labels": labels, "train_prevalence": dict(zip(labels, prevalence.tolist()))}
    )
    summary = manifest.summary()
    summary["data"] = str(Path(data).resolve())
    summary["problems"] = [str(p) for p in manifest.problems]
    write_json_atomic(run.data_summary, summary)


def load_baseline(run_dir: str | Path) -> BaselineRun:
    """Read a fitted baseline run folder (JSON + arrays, no pickle; shapes checked against the labels)."""
    run = RunDir.at(run_dir)
    if not is_baseline_run(run.root):
        raise RunNotFoundError(f"{run.root} is not a baseline run folder (missing {STATE_JSON})")
    for needed in (run.config, run.labels, run.root / STATE_ARRAYS):
        if not needed.exists():
            raise RunNotFoundError(f"{run.root} is not a complete baseline run (missing {needed.name})")
    config = load_config(run.config)
    labels = run.load_labels()
    parts = build_baselines(config)
    stored = load_json(run.root / STATE_JSON).get("parts", {})
    arrays = load_arrays(run.root / STATE_ARRAYS)
    for slot, part in parts.items():
        entry = stored.get(slot)
        if not isinstance(entry, dict) or entry.get("name") != part.name:
            raise ValueError(
                f"{run.root / STATE_JSON}: no fitted '{part.name}' for baseline.{slot}; refit the run"
            )
        prefix = f"{slot}/"
        try:
            part.load_state(
                entry.get("meta", {}),
                {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)},
                len(labels),
            )
        except (KeyError, TypeError) as err:
            raise ValueError(
                f"{run.root}: the stored state of '{part.name}' is incomplete ({err!r}); refit the run"
            ) from None
    return BaselineRun(run=run, config=config, labels=labels, parts=parts)
