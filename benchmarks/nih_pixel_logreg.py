"""Pixel logistic regression on an imported NIH set: the floor the deep models of benchmarks/grids/nih64.yaml must beat.

Same manifest, label set and splits as the grid (read with ``read_manifest``, default split
fractions and seed, so the test studies are the benchmark's). Each image is decoded with
``load_image``, resized to ``--size`` x ``--size`` (antialiased bilinear), flattened and
standardised on the training images (scikit-learn ``StandardScaler``); one
``LogisticRegression`` per label (balanced class weights), its C chosen on the validation
split (macro AUROC), then scored once on the test split with a 95% bootstrap interval over
test studies (``medmodal.evaluation.stats.bootstrap_ci``, 1,000 resamples, as the benchmark).

    python benchmarks/nih_pixel_logreg.py --data D --labels abnormal,effusion,... [--size 32] [--out F.json]
        [--compare BENCHMARK_OUT]

``--compare`` reads the cells' ``predictions.npz`` of a ``medmodal benchmark`` output folder (same
test studies, matched by id) and adds, per grid model, the seed-averaged macro and per-label
AUROC with bootstrap intervals and the paired bootstrap difference model - pixel LR
(``paired_bootstrap``: both resampled on the same studies).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from medmodal.data.images import load_image
from medmodal.data.manifest import read_manifest
from medmodal.evaluation.stats import bootstrap_ci, paired_bootstrap

C_GRID = (0.0001, 0.001, 0.01, 0.1, 1.0)


def pixels(studies, size: int) -> np.ndarray:
    """float32 [N, size * size] of the studies' images."""
    images = [torch.from_numpy(load_image(s.image))[None, None] for s in studies]
    small = [
        F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        for x in images
    ]
    return torch.cat(small).flatten(1).numpy()


def targets(studies, labels: list[str]) -> np.ndarray:
    return np.array([[label in s.labels for label in labels] for s in studies], dtype=np.int64)


def fit_per_label(x_train, y_train, x_val, y_val) -> tuple[list[LogisticRegression], list[float]]:
    """One regression per label, C chosen by validation AUROC."""
    models, chosen = [], []
    for k in range(y_train.shape[1]):
        best = None
        for c in C_GRID:
            model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000).fit(
                x_train, y_train[:, k]
            )
            score = roc_auc_score(y_val[:, k], model.predict_proba(x_val)[:, 1])
            if best is None or score > best[0]:
                best = (score, c, model)
        models.append(best[2])
        chosen.append(best[1])
    return models, chosen


def interval(ci) -> list:
    return [ci.estimate, ci.low, ci.high]


def compare(out: Path, ids: list[str], labels: list[str], baseline: np.ndarray, y: np.ndarray) -> dict:
    """Per benchmark model: seed-averaged AUROC (macro, per label) with CIs, and the paired difference to ``baseline``."""
    by_model: dict[str, list[np.ndarray]] = {}
    for path in sorted(out.glob("cells/*__seed*/predictions.npz")):
        with np.load(path, allow_pickle=False) as z:
            if list(z["labels"]) != labels:
                raise ValueError(f"{path}: labels {list(z['labels'])} are not {labels}")
            order = {study: i for i, study in enumerate(z["ids"])}
            by_model.setdefault(path.parent.name.split("__seed")[0], []).append(
                z["probs__full"][[order[i] for i in ids]]
            )
    figures = {}
    for model, runs in by_model.items():
        stacked = np.stack(runs)  # [S, N, C]
        figures[model] = {
            "seeds": len(runs),
            "auroc_macro": interval(bootstrap_ci(stacked, y, "auroc_macro")),
            "per_label": {
                lb: interval(bootstrap_ci(stacked[:, :, k : k + 1], y[:, k : k + 1], "auroc_macro"))
                for k, lb in enumerate(labels)
            },
            "minus_pixel_lr": {
                "auroc_macro": _paired(paired_bootstrap(stacked, baseline, y, "auroc_macro")),
                **{
                    lb: _paired(
                        paired_bootstrap(stacked[:, :, k : k + 1], baseline[:, k : k + 1], y[:, k : k + 1])
                    )
                    for k, lb in enumerate(labels)
                },
            },
        }
    return figures


def _paired(comparison) -> dict:
    return {"difference": interval(comparison.difference), "p_bootstrap": comparison.p_value}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--labels", required=True, help="comma-separated, as data.labels of the grid")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--out", help="write the figures here as JSON")
    parser.add_argument(
        "--compare", help="a medmodal benchmark output folder to compare with (cells/*/predictions.npz)"
    )
    args = parser.parse_args()
    labels = args.labels.split(",")
    manifest = read_manifest(args.data, labels=labels)
    split = {name: manifest.split(name) for name in ("train", "val", "test")}
    x = {name: pixels(studies, args.size) for name, studies in split.items()}
    y = {name: targets(studies, labels) for name, studies in split.items()}
    scaler = StandardScaler().fit(x["train"])
    x = {name: scaler.transform(v) for name, v in x.items()}
    models, chosen = fit_per_label(x["train"], y["train"], x["val"], y["val"])
    probs = np.stack([m.predict_proba(x["test"])[:, 1] for m in models], axis=1)
    macro = bootstrap_ci(probs, y["test"], "auroc_macro")
    result = {
        "model": f"pixel_logreg_{args.size}px",
        "n": {name: len(s) for name, s in split.items()},
        "auroc_macro": [macro.estimate, macro.low, macro.high],
        "per_label": {},
        "c_chosen_on_val": dict(zip(labels, chosen)),
    }
    for k, label in enumerate(labels):
        ci = bootstrap_ci(probs[:, k : k + 1], y["test"][:, k : k + 1], "auroc_macro")
        result["per_label"][label] = {
            "auroc": [ci.estimate, ci.low, ci.high],
            "test_positives": int(y["test"][:, k].sum()),
        }
    if args.compare:
        ids = [s.id for s in split["test"]]
        result["compare"] = compare(Path(args.compare), ids, labels, probs, y["test"])
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
