"""Tables and statistics of a finished benchmark (:mod:`medmodal.experiments.benchmark`).

Reads every cell's ``predictions.npz`` and writes

- ``results.csv`` / ``results.json``: one row per model x seed x condition (LOSO cells:
  x subset ``in_site`` / ``out_of_site``), with the classification metrics of
  :func:`~medmodal.evaluation.metrics.classification_metrics`, expected calibration
  error, per-label AUROC and prevalence, and bootstrap CIs of the headline metrics
  (condition ``full`` and LOSO rows);
- ``summary.json``: per model mean / sd over seeds, the seed-averaged metric with a
  bootstrap CI over test studies, the paired comparison of every fusion model with
  every unimodal baseline (paired bootstrap of the difference + DeLong p-value),
  robustness curves, per-site and leave-one-site-out results, reliability curves;
- the plots (:mod:`medmodal.experiments.plots`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medmodal.data.pipeline import read_dataset
from medmodal.evaluation import stats
from medmodal.evaluation.metrics import classification_metrics, expected_calibration_error, reliability_curve
from medmodal.experiments import plots
from medmodal.runs import write_json_atomic

CI_METRICS = ("auroc_macro", "f1_macro")  # per-row intervals (each costs a bootstrap)
SUMMARY_CI_METRICS = ("auroc_macro", "auroc_micro", "f1_macro", "accuracy")  # seed-averaged, condition full
HEADLINE = ("auroc_macro", "auroc_micro", "f1_macro", "accuracy", "average_precision_macro", "ece")
COMPARED = ("auroc_macro", "f1_macro")


def bootstrap_options(settings: Any) -> dict[str, Any]:
    """The grid's bootstrap settings as keywords of :func:`stats.bootstrap_ci` / :func:`stats.paired_bootstrap`."""
    return {
        "n_resamples": settings.bootstrap_resamples,
        "confidence": settings.confidence,
        "method": settings.bootstrap_method,
        "seed": settings.seed,
    }


def drop_condition(modality: str, p: float) -> str:
    if p == 0:
        return "full"
    if p == 1:
        return f"no_{modality}"
    return f"drop_{modality}_{p:g}"


def load_cell_predictions(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "predictions.npz") as npz:
        return {k: npz[k] for k in npz.files}


def _cell_info(out: Path, cell) -> dict[str, Any]:
    folder = cell.folder(out)
    info = json.loads((folder / "cell.json").read_text())
    info["train_seconds"] = json.loads((folder / "done.json").read_text()).get("train_seconds")
    info["arrays"] = load_cell_predictions(folder)
    return info


def _row_metrics(
    probs: np.ndarray, targets: np.ndarray, labels: list[str], settings, with_ci: bool
) -> dict[str, Any]:
    m = classification_metrics(probs, targets, labels)
    row: dict[str, Any] = {k: m.get(k) for k in HEADLINE if k in m}
    row["exact_match"] = m["exact_match"]
    row["ece"] = expected_calibration_error(probs, targets, n_bins=settings.calibration_bins)
    for name in CI_METRICS:
        if with_ci:
            ci = stats.bootstrap_ci(
                probs,
                targets,
                name,
                **bootstrap_options(settings),
            )
            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = ci.low, ci.high
        else:
            row[f"{name}_ci_low"] = row[f"{name}_ci_high"] = None
    for name, per in m["per_label"].items():
        row[f"auroc__{name}"] = per["auroc"]
        row[f"prevalence__{name}"] = per["prevalence"]
    return row


def result_rows(cells_info: list[dict[str, Any]], conditions: list[str], settings) -> list[dict[str, Any]]:
    """One row per cell x condition (LOSO: x site subset)."""
    rows = []
    for info in cells_info:
        a = info["arrays"]
        labels, targets = a["labels"].tolist(), a["targets"].astype(np.int64)
        base = {
            "group": info["group"],
            "model": info["model"],
            "role": info["role"],
            "seed": info["seed"],
            "held_out_site": info["held_out_site"] or "",
            "train_seconds": info["train_seconds"],
        }
        if info["group"] == "main":
            for condition in conditions:
                probs = a[f"probs__{condition}"].astype(np.float64)
                rows.append(
                    {
                        **base,
                        "condition": condition,
                        "subset": "all",
                        "n_studies": len(targets),
                        **_row_metrics(probs, targets, labels, settings, with_ci=condition == "full"),
                    }
                )
        else:
            probs = a["probs__full"].astype(np.float64)
            out_of_site = a["sites"] == info["held_out_site"]
            for subset, mask in (("in_site", ~out_of_site), ("out_of_site", out_of_site)):
                if mask.sum() < 2:
                    continue
                rows.append(
                    {
                        **base,
                        "condition": "full",
                        "subset": subset,
                        "n_studies": int(mask.sum()),
                        **_row_metrics(probs[mask], targets[mask], labels, settings, with_ci=True),
                    }
                )
    return rows


# ------------------------------------------------------------------ summary
def _by_model(cells_info: list[dict[str, Any]], group: str = "main") -> dict[str, list[dict[str, Any]]]:
    models: dict[str, list[dict[str, Any]]] = {}
    for info in cells_info:
        if info["group"] == group:
            models.setdefault(info["model"], []).append(info)
    return models


def _stacked(infos: list[dict[str, Any]], condition: str) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Probabilities ``[S, N, C]`` of one model's seeds (same test studies), targets ``[N, C]``, seeds."""
    ids = infos[0]["arrays"]["ids"]
    for info in infos[1:]:
        if not np.array_equal(info["arrays"]["ids"], ids):
            raise ValueError(f"cells of model {info['model']} were tested on different studies")
    probs = np.stack([i["arrays"][f"probs__{condition}"].astype(np.float64) for i in infos])
    return probs, infos[0]["arrays"]["targets"].astype(np.int64), [i["seed"] for i in infos]


def model_summary(rows: list[dict[str, Any]], cells_info, conditions: list[str], settings) -> dict[str, Any]:
    """Per model and condition: mean / sd over seeds; condition full also the seed-averaged CIs."""
    models = _by_model(cells_info)
    table = pd.DataFrame([r for r in rows if r["group"] == "main"])
    summary: dict[str, Any] = {}
    for model, infos in models.items():
        entry: dict[str, Any] = {
            "role": infos[0]["role"],
            "seeds": sorted(i["seed"] for i in infos),
            "conditions": {},
        }
        for condition in conditions:
            sub = table[(table.model == model) & (table.condition == condition)]
            cond: dict[str, Any] = {}
            for metric in HEADLINE:
                mean, sd = stats.mean_and_sd([None if pd.isna(v) else float(v) for v in sub[metric]])
                cond[metric] = {"mean": mean, "sd": sd}
            entry["conditions"][condition] = cond
        probs, targets, _ = _stacked(infos, "full")
        entry["ci"] = {
            name: stats.bootstrap_ci(
                probs,
                targets,
                name,
                **bootstrap_options(settings),
            ).as_dict()
            for name in SUMMARY_CI_METRICS
        }
        entry["train_seconds_mean"] = float(np.mean([i["train_seconds"] or 0 for i in infos]))
        summary[model] = entry
    return summary


def best_unimodal(summary: dict[str, Any]) -> str | None:
    """The unimodal model with the highest seed-mean AUROC (macro) on the full test set."""
    unimodal = {
        m: e["conditions"]["full"]["auroc_macro"]["mean"] for m, e in summary.items() if e["role"] != "fusion"
    }
    unimodal = {m: v for m, v in unimodal.items() if v is not None}
    return max(unimodal, key=lambda m: unimodal[m]) if unimodal else None


def comparisons(cells_info, summary: dict[str, Any], settings) -> list[dict[str, Any]]:
    """Every fusion model against every unimodal model, on the seeds both have (condition full).

    ``paired``: bootstrap of the seed-averaged metric difference (fusion - unimodal) over test
    studies; ``delong``: DeLong's macro-AUROC test per common seed, and the largest p-value.
    """
    models = _by_model(cells_info)
    result = []
    for fusion, f_entry in summary.items():
        if f_entry["role"] != "fusion":
            continue
        for baseline, b_entry in summary.items():
            if b_entry["role"] == "fusion":
                continue
            seeds = sorted(set(f_entry["seeds"]) & set(b_entry["seeds"]))
            if not seeds:
                continue
            f_infos = [i for i in models[fusion] if i["seed"] in seeds]
            b_infos = [i for i in models[baseline] if i["seed"] in seeds]
            pf, targets, _ = _stacked(sorted(f_infos, key=lambda i: i["seed"]), "full")
            pb, _, _ = _stacked(sorted(b_infos, key=lambda i: i["seed"]), "full")
            entry: dict[str, Any] = {"fusion": fusion, "baseline": baseline, "seeds": seeds, "paired": {}}
            for metric in COMPARED:
                entry["paired"][metric] = stats.paired_bootstrap(
                    pf,
                    pb,
                    targets,
                    metric,
                    **bootstrap_options(settings),
                ).as_dict()
            delong = [stats.delong_macro_test(targets, pf[s], pb[s]).as_dict() for s in range(len(seeds))]
            entry["delong_per_seed"] = delong
            entry["delong_p_max"] = max(d["p_value"] for d in delong)
            diff = entry["paired"]["auroc_macro"]["difference"]
            entry["fusion_better"] = diff["low"] is not None and diff["low"] > 0
            result.append(entry)
    return result


def robustness(summary: dict[str, Any], settings) -> dict[str, Any]:
    """Seed-mean / sd AUROC (macro) against the fraction of studies missing each modality, per model."""
    curves: dict[str, Any] = {}
    for modality in settings.drop_modalities:
        fractions = sorted(set(settings.drop_fractions) | {0.0, 1.0})
        curves[modality] = {"fractions": fractions, "models": {}}
        for model, entry in summary.items():
            values = [
                entry["conditions"].get(drop_condition(modality, p), {}).get("auroc_macro", {})
                for p in fractions
            ]
            curves[modality]["models"][model] = {
                "mean": [v.get("mean") for v in values],
                "sd": [v.get("sd") for v in values],
            }
    return curves


def per_site(cells_info) -> dict[str, dict[str, float | None]]:
    """Seed-mean AUROC (macro) of each model on each site's test studies (condition full)."""
    result: dict[str, dict[str, float | None]] = {}
    for model, infos in _by_model(cells_info).items():
        sites = sorted(set(infos[0]["arrays"]["sites"].tolist()))
        result[model] = {}
        for site in sites:
            values = []
            for info in infos:
                a = info["arrays"]
                mask = a["sites"] == site
                values.append(
                    classification_metrics(
                        a["probs__full"][mask].astype(np.float64), a["targets"][mask], a["labels"].tolist()
                    )["auroc_macro"]
                )
            result[model][site or "(none)"] = stats.mean_and_sd(values)[0]
    return result


def loso_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """In-site vs out-of-site AUROC (macro) per model and held-out site (mean over seeds, CI of the first)."""
    table = pd.DataFrame([r for r in rows if r["group"] == "loso"])
    if table.empty:
        return []
    result = []
    for (model, site), sub in table.groupby(["model", "held_out_site"], sort=True):
        entry: dict[str, Any] = {"model": model, "held_out_site": site}
        for subset in ("in_site", "out_of_site"):
            part = sub[sub.subset == subset].sort_values("seed")
            if part.empty:
                continue
            entry[subset] = {
                "auroc_macro": stats.mean_and_sd([float(v) for v in part.auroc_macro.dropna()])[0],
                "ci_low": _nan_none(part.auroc_macro_ci_low.iloc[0]),
                "ci_high": _nan_none(part.auroc_macro_ci_high.iloc[0]),
                "f1_macro": float(part.f1_macro.mean()),
                "n_studies": int(part.n_studies.iloc[0]),
            }
        if (
            "in_site" in entry
            and "out_of_site" in entry
            and None not in (entry["in_site"]["auroc_macro"], entry["out_of_site"]["auroc_macro"])
        ):
            entry["drop"] = entry["in_site"]["auroc_macro"] - entry["out_of_site"]["auroc_macro"]
        result.append(entry)
    return result


def _nan_none(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def per_label(cells_info) -> dict[str, Any]:
    """Per label: test prevalence and each model's seed-mean AUROC (condition full)."""
    models = _by_model(cells_info)
    first = next(iter(models.values()))[0]["arrays"]
    labels = first["labels"].tolist()
    prevalence = first["targets"].mean(axis=0).tolist()
    aurocs = {}
    for model, infos in models.items():
        per = [
            classification_metrics(
                i["arrays"]["probs__full"].astype(np.float64), i["arrays"]["targets"], labels
            )["per_label"]
            for i in infos
        ]
        aurocs[model] = {lb: stats.mean_and_sd([p[lb]["auroc"] for p in per])[0] for lb in labels}
    return {"labels": labels, "prevalence": dict(zip(labels, prevalence)), "auroc": aurocs}


def reliability(cells_info, settings) -> dict[str, Any]:
    """Reliability curve of each model's first seed (condition full)."""
    curves = {}
    for model, infos in _by_model(cells_info).items():
        a = min(infos, key=lambda i: i["seed"])["arrays"]
        curves[model] = reliability_curve(
            a["probs__full"].astype(np.float64), a["targets"], n_bins=settings.calibration_bins
        )
    return curves


# -------------------------------------------------------------------- writing
def write_results(out: Path, grid, cells, conditions: list[str], data: Path) -> dict[str, Any]:
    """Write results.csv / results.json / summary.json and the plots; return the summary."""
    settings = grid.evaluation
    cells_info = [_cell_info(out, c) for c in cells]
    for info, cell in zip(cells_info, cells):
        info["cell"] = cell
    rows = result_rows(cells_info, conditions, settings)
    pd.DataFrame(rows).to_csv(out / "results.csv", index=False)
    write_json_atomic(out / "results.json", {"rows": rows})

    summary_models = model_summary(rows, cells_info, conditions, settings)
    main_cells = [c for c in cells if c.group == "main"]
    data_summary = read_dataset(data, main_cells[0].config).summary()
    summary = {
        "grid": grid.model_dump(mode="json"),
        "data": str(data),
        "data_summary": data_summary,
        "conditions": conditions,
        "models": summary_models,
        "best_unimodal": best_unimodal(summary_models),
        "comparisons": comparisons(cells_info, summary_models, settings),
        "robustness": robustness(summary_models, settings),
        "per_site": per_site(cells_info),
        "loso": loso_summary(rows),
        "per_label": per_label(cells_info),
        "reliability": reliability(cells_info, settings),
        "configs": {c.model: c.config.model_dump(mode="json") for c in main_cells if c.seed == grid.seeds[0]},
    }
    summary["plots"] = plots.write_plots(out / "plots", summary, cells_info)
    write_json_atomic(out / "summary.json", summary)
    return summary
