"""Benchmark figures as PNG (matplotlib, Agg backend: no display needed).

- ``roc.png``: micro-averaged ROC curve (every study x label pooled) of each model's first seed;
- ``robustness.png``: AUROC (macro) against the fraction of test studies missing the image /
  the text (mean over seeds, band = +- sd);
- ``per_site.png``: AUROC (macro) per site of the test set, and leave-one-site-out in-site vs
  out-of-site when the grid has it;
- ``reliability.png``: reliability diagram (observed frequency vs mean probability) per model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import roc_curve


def _style(role: str, model: str) -> dict[str, Any]:
    """Unimodal baselines dashed, fusion models solid."""
    return {"linestyle": "--" if role != "fusion" else "-", "linewidth": 1.6, "label": model}


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def roc_plot(path: Path, summary: dict[str, Any], cells_info: list[dict[str, Any]]) -> str:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    seen = set()
    for info in sorted((i for i in cells_info if i["group"] == "main"), key=lambda i: i["seed"]):
        if info["model"] in seen:
            continue
        seen.add(info["model"])
        a = info["arrays"]
        fpr, tpr, _ = roc_curve(a["targets"].ravel(), a["probs__full"].ravel())
        ax.plot(fpr, tpr, **_style(info["role"], info["model"]))
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (micro-average, first seed)")
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def robustness_plot(path: Path, summary: dict[str, Any]) -> str:
    curves = summary["robustness"]
    fig, axes = plt.subplots(1, len(curves), figsize=(5.2 * len(curves), 4.2), squeeze=False)
    for ax, (modality, curve) in zip(axes[0], curves.items()):
        x = np.array(curve["fractions"])
        for model, values in curve["models"].items():
            mean = np.array([np.nan if v is None else v for v in values["mean"]], dtype=float)
            sd = np.array([0.0 if v is None else v for v in values["sd"]], dtype=float)
            line = ax.plot(
                x, mean, marker="o", markersize=3, **_style(summary["models"][model]["role"], model)
            )[0]
            ax.fill_between(x, mean - sd, mean + sd, color=line.get_color(), alpha=0.12)
        ax.axhline(0.5, color="grey", linewidth=0.8)
        ax.set(
            xlabel=f"fraction of test studies without the {modality}",
            ylabel="AUROC (macro)",
            title=f"{modality} removed at random",
        )
    axes[0][-1].legend(fontsize=7)
    return _save(fig, path)


def per_site_plot(path: Path, summary: dict[str, Any]) -> str:
    panels = 2 if summary["loso"] else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.2), squeeze=False)
    _grouped_bars(axes[0][0], {m: v for m, v in summary["per_site"].items()}, "AUROC (macro) per test site")
    if summary["loso"]:
        groups: dict[str, dict[str, float | None]] = {}
        for entry in summary["loso"]:
            key = f"{entry['model']}\nwithout {entry['held_out_site']}"
            groups[key] = {s: entry.get(s, {}).get("auroc_macro") for s in ("in_site", "out_of_site")}
        _grouped_bars(axes[0][1], groups, "leave one site out: in-site vs out-of-site")
    return _save(fig, path)


def _grouped_bars(ax, groups: dict[str, dict[str, float | None]], title: str) -> None:
    """One group of bars per key of ``groups``, one bar per inner key."""
    names = list(groups)
    series = sorted({k for v in groups.values() for k in v})
    width = 0.8 / max(len(series), 1)
    for j, s in enumerate(series):
        values = [groups[n].get(s) for n in names]
        ax.bar(
            np.arange(len(names)) + j * width, [np.nan if v is None else v for v in values], width, label=s
        )
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=45, ha="right", fontsize=7)
    ax.set_ylim(0.4, 1.0)
    ax.set(ylabel="AUROC (macro)", title=title)
    ax.legend(fontsize=7)


def reliability_plot(path: Path, summary: dict[str, Any]) -> str:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for model, curve in summary["reliability"].items():
        conf = [c for c, a in zip(curve["confidence"], curve["accuracy"]) if c is not None and a is not None]
        acc = [a for c, a in zip(curve["confidence"], curve["accuracy"]) if c is not None and a is not None]
        ax.plot(conf, acc, marker="o", markersize=3, **_style(summary["models"][model]["role"], model))
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
    ax.set(xlabel="mean predicted probability", ylabel="observed frequency", title="reliability (first seed)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def write_plots(folder: Path, summary: dict[str, Any], cells_info: list[dict[str, Any]]) -> dict[str, str]:
    """Write every figure into ``folder``; returns {kind: file name}."""
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "roc": roc_plot(folder / "roc.png", summary, cells_info),
        "robustness": robustness_plot(folder / "robustness.png", summary),
        "per_site": per_site_plot(folder / "per_site.png", summary),
        "reliability": reliability_plot(folder / "reliability.png", summary),
    }
