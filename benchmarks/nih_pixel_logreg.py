"""Pixel logistic regression on an imported NIH set: the floor the deep models of benchmarks/grids/nih64.yaml must beat.

Same manifest, label set and splits as the grid (read with ``read_manifest``, default split
fractions and seed, so the test studies are the benchmark's). Each image is decoded with
``load_image``, resized to ``--size`` x ``--size`` (antialiased bilinear), flattened and
standardised on the training images (scikit-learn ``StandardScaler``); one
``LogisticRegression`` per label (balanced class weights), its C chosen on the validation
split (macro AUROC), then scored once on the test split with a 95% bootstrap interval over
test studies (``medmodal.evaluation.stats.bootstrap_ci``, 1,000 resamples, as the benchmark).

    python benchmarks/nih_pixel_logreg.py --data D --labels abnormal,effusion,... [--size 32] [--out F.json]
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
from medmodal.evaluation.stats import bootstrap_ci

C_GRID = (0.0001, 0.001, 0.01, 0.1, 1.0)


def pixels(studies, size: int) -> np.ndarray:
    """float32 [N, size * size] of the studies' images."""
    images = [torch.from_numpy(load_image(s.image))[None, None] for s in studies]
    small = [F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False) for x in images]
    return torch.cat(small).flatten(1).numpy()


def targets(studies, labels: list[str]) -> np.ndarray:
    return np.array([[label in s.labels for label in labels] for s in studies], dtype=np.int64)


def fit_per_label(x_train, y_train, x_val, y_val) -> tuple[list[LogisticRegression], list[float]]:
    """One regression per label, C chosen by validation AUROC."""
    models, chosen = [], []
    for k in range(y_train.shape[1]):
        best = None
        for c in C_GRID:
            model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000).fit(x_train, y_train[:, k])
            score = roc_auc_score(y_val[:, k], model.predict_proba(x_val)[:, 1])
            if best is None or score > best[0]:
                best = (score, c, model)
        models.append(best[2])
        chosen.append(best[1])
    return models, chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--labels", required=True, help="comma-separated, as data.labels of the grid")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--out", help="write the figures here as JSON")
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
        result["per_label"][label] = {"auroc": [ci.estimate, ci.low, ci.high], "test_positives": int(y["test"][:, k].sum())}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
