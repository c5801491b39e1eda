"""``medmodal transfer``: does contrastive pretraining help the supervised model with few labels?

For each label fraction (``data.train_fraction``: a seeded subset of the training studies, the
smaller ones nested in the larger), two supervised runs with the same config are trained:

- ``random``: the image and text encoders start from random initialisation;
- ``pretrained``: they start from ``RUN/encoders/*.pt`` of a ``medmodal pretrain`` run.

Both use the pretraining run's tokenizer (``data.tokenizer_path``) and encoder settings
(names, kwargs, ``model.embed_dim``), so the only difference is the initialisation. Each run
is scored on the full test split (classification AUROC); results go to ``OUT/transfer.json``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medmodal.config import Config, apply_overrides
from medmodal.data.pipeline import read_dataset, training_subset
from medmodal.evaluation.evaluate import predict_split
from medmodal.evaluation.metrics import classification_metrics
from medmodal.runs import write_json_atomic
from medmodal.training.loading import load_trained
from medmodal.training.pretrain import encoder_paths, load_pretrained_run
from medmodal.training.trainer import train

ARMS = ("random", "pretrained")


def transfer_config(config: Config, pretrained_run: str | Path, arm: str, fraction: float) -> Config:
    """``config`` with the pretraining run's encoders (initialised from it for ``arm == "pretrained"``),
    its tokenizer, and ``data.train_fraction = fraction``."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm '{arm}'; arms are {ARMS}")
    pre = load_pretrained_run(pretrained_run)
    paths = encoder_paths(pre.run) if arm == "pretrained" else {}
    parts = {}
    for name in ("image_encoder", "text_encoder"):
        part = getattr(pre.config.model, name).model_dump()
        part["pretrained_path"] = str(paths[name]) if name in paths else None
        parts[f"model.{name}"] = part
    return apply_overrides(config, {
        **parts, "model.embed_dim": pre.config.model.embed_dim, "model.modalities": "both",
        "data.tokenizer_path": str(pre.run.tokenizer), "data.train_fraction": fraction,
        "data.image_size": pre.config.data.image_size,
    })  # fmt: skip


def test_auroc(run_dir: Path, data: str | Path) -> dict[str, Any]:
    """Classification metrics of a trained run on the test split (no report generation)."""
    trained = load_trained(run_dir)
    studies = trained.studies(data, "test")
    preds = predict_split(trained, studies, beam_size=1, max_tokens=4, batch_size=trained.config.evaluate.batch_size,
                          generate=False, progress=False)  # fmt: skip
    return classification_metrics(preds.probs, preds.targets, trained.labels)


def run_transfer(
    data: str | Path,
    pretrained_run: str | Path,
    config: Config,
    out: str | Path,
    fractions: Sequence[float] = (0.1, 0.25, 1.0),
) -> dict[str, Any]:
    """Train and score the ``random`` and ``pretrained`` arms at each fraction; write ``OUT/transfer.json``."""
    out = Path(out)
    rows = []
    for fraction in fractions:
        row: dict[str, Any] = {"fraction": fraction}
        for arm in ARMS:
            cfg = transfer_config(config, pretrained_run, arm, fraction)
            run_dir = out / f"{arm}_{fraction:g}"
            start = time.time()
            result = train(data, cfg, run_dir)
            metrics = test_auroc(run_dir, data)
            row[arm] = {"auroc_macro": metrics["auroc_macro"], "f1_macro": metrics["f1_macro"],
                        "epochs_run": result.epochs_run, "seconds": round(time.time() - start, 1), "run": str(run_dir)}  # fmt: skip
            row["n_train"] = _train_count(cfg, data)
        random_auc, pre_auc = row["random"]["auroc_macro"], row["pretrained"]["auroc_macro"]
        row["delta_auroc"] = pre_auc - random_auc if None not in (random_auc, pre_auc) else None
        rows.append(row)
    table = {
        "data": str(Path(data).resolve()),
        "pretrained_run": str(Path(pretrained_run).resolve()),
        "rows": rows,
    }
    write_json_atomic(out / "transfer.json", table)
    return table


def _train_count(config: Config, data: str | Path) -> int:
    """How many training studies ``data.train_fraction`` keeps."""
    studies = read_dataset(data, config).split("train")
    return len(training_subset(studies, config.data.train_fraction, config.data.split_seed))
