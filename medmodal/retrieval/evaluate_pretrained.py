"""``medmodal retrieval-eval`` / ``medmodal zero-shot``: score a pretraining run on a split.

Both write their section (``retrieval`` / ``zero_shot``) into ``RUN/metrics.json``, keeping the
other sections.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from medmodal.data.pipeline import label_matrix, read_split
from medmodal.data.types import Study
from medmodal.evaluation.evaluate import predict_split
from medmodal.evaluation.metrics import classification_metrics
from medmodal.retrieval.embed import embed_studies
from medmodal.retrieval.metrics import DEFAULT_KS, cross_modal_retrieval_metrics, hub_penalty
from medmodal.retrieval.zero_shot import build_prompts, prompt_embeddings, zero_shot_probabilities
from medmodal.runs import RunDir, write_json_atomic
from medmodal.training.loading import load_trained
from medmodal.training.pretrain import PretrainedRun, load_pretrained_run


def update_metrics_file(run: RunDir, section: str, values: dict[str, Any]) -> dict[str, Any]:
    """Set ``section`` of ``RUN/metrics.json`` (other sections kept); returns the whole file."""
    metrics = json.loads(run.metrics.read_text()) if run.metrics.exists() else {}
    metrics[section] = values
    write_json_atomic(run.metrics, metrics)
    return metrics


def split_studies(run: PretrainedRun, data: str | Path | None, split: str) -> tuple[list[Study], str]:
    """(studies of ``split`` of ``data`` or of the run's own dataset, the dataset path)."""
    data = str(data) if data is not None else run.data
    return read_split(data, run.config, run.labels, split), data


def evaluate_retrieval(run_dir: str | Path, data: str | Path | None = None, *, split: str = "test",
                       ks: tuple[int, ...] = DEFAULT_KS, hubness: str = "none", bank_split: str = "train",
                       csls_k: int = 10) -> dict[str, Any]:  # fmt: skip
    """Image->report and report->image Recall@K / median rank over the studies of ``split``
    that have both an image and a report; written to ``metrics.json["retrieval"]`` (with
    ``hubness="csls"``: to ``metrics.json["retrieval_csls"]``, scores re-ranked by CSLS with
    the hub penalties measured against the ``bank_split`` studies' embeddings)."""
    if hubness not in ("none", "csls"):
        raise ValueError(f"hubness must be 'none' or 'csls', not {hubness!r}")
    run = load_pretrained_run(run_dir)
    studies, data = split_studies(run, data, split)
    start = time.perf_counter()
    emb = embed_studies(run, studies)
    both = emb.has_image & emb.has_text
    if both.sum() < 2:
        raise ValueError(f"{data}: fewer than 2 studies of split '{split}' have both an image and a report")
    reports = [r for r, keep in zip(emb.reports, both) if keep]
    labels = label_matrix(studies, run.labels).numpy()[both]
    penalties = None
    if hubness == "csls":
        bank_studies, _ = split_studies(run, data, bank_split)
        bank = embed_studies(run, bank_studies)
        penalties = (hub_penalty(emb.image[both], bank.text[bank.has_text], csls_k),
                     hub_penalty(emb.text[both], bank.image[bank.has_image], csls_k))  # fmt: skip
    scores = cross_modal_retrieval_metrics(emb.image[both], emb.text[both], reports, ks, labels=labels,
                                           penalties=penalties)  # fmt: skip
    result = {"data": str(Path(data).resolve()), "split": split, "n_studies": int(both.sum()),
              "relevance": "a report with the same text as the paired report counts (strict_pair: only the pair)",
              "scores": "cosine" if penalties is None else f"CSLS, k={csls_k}, bank: split '{bank_split}'",
              **scores, "seconds": round(time.perf_counter() - start, 2)}  # fmt: skip
    update_metrics_file(run.run, "retrieval" if hubness == "none" else "retrieval_csls", result)
    return result


def supervised_probabilities(
    supervised_run: str | Path, studies: list[Study], labels: list[str]
) -> np.ndarray:
    """[N, C] probabilities of a supervised run (``medmodal train``) on ``studies``, columns in ``labels`` order."""
    trained = load_trained(supervised_run)
    missing = [name for name in labels if name not in trained.labels]
    if missing:
        raise ValueError(f"{supervised_run}: the supervised run has no label(s) {missing}")
    preds = predict_split(trained, studies, beam_size=1, max_tokens=4, batch_size=trained.config.evaluate.batch_size,
                          generate=False, progress=False)  # fmt: skip
    return preds.probs[:, [trained.labels.index(name) for name in labels]]


def evaluate_zero_shot(
    run_dir: str | Path,
    data: str | Path | None = None,
    *,
    split: str = "test",
    supervised: list[str | Path] | None = None,
    vocabulary: str | None = None,
) -> dict[str, Any]:
    """Zero-shot AUROC per finding on ``split``, next to each ``supervised`` run's AUROC on the
    same studies; written to ``metrics.json["zero_shot"]``."""
    run = load_pretrained_run(run_dir)
    studies, data = split_studies(run, data, split)
    emb = embed_studies(run, studies)
    keep = emb.has_image
    if keep.sum() < 2:
        raise ValueError(f"{data}: fewer than 2 studies of split '{split}' have an image")
    studies = [s for s, k in zip(studies, keep) if k]
    prompt_sets = build_prompts(run.labels, vocabulary)
    positive, negative = prompt_embeddings(run, prompt_sets)
    scale = float(run.model.logit_scale.detach().cpu())
    probs = zero_shot_probabilities(emb.image[keep], positive, negative, scale)
    targets = label_matrix(studies, run.labels).numpy()
    zero_shot = classification_metrics(probs, targets, run.labels)
    result: dict[str, Any] = {
        "data": str(Path(data).resolve()), "split": split, "n_studies": len(studies),
        "auroc_macro": zero_shot["auroc_macro"],
        "per_label": {name: v["auroc"] for name, v in zero_shot["per_label"].items()},
        "prompts": {s.label: {"positive": s.positive, "negative": s.negative} for s in prompt_sets},
        "supervised": {},
    }  # fmt: skip
    for path in supervised or []:
        sup = classification_metrics(supervised_probabilities(path, studies, run.labels), targets, run.labels)
        result["supervised"][str(Path(path).resolve())] = {
            "auroc_macro": sup["auroc_macro"],
            "per_label": {name: v["auroc"] for name, v in sup["per_label"].items()},
        }
    update_metrics_file(run.run, "zero_shot", result)
    return result
