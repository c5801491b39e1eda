"""Faithfulness of the explanations, measured on the built-in synthetic data (true boxes and
the words that name or hint at each finding are known).

Image (Grad-CAM, or occlusion with ``image_method="occlusion"``, of the fused logit of a finding
present with a box; by default the model sees the image only, the text replaced by its
placeholder, so the score moves only with the image evidence):

- pointing game (Zhang et al., arXiv 1608.00507): share of maps whose maximum lies inside the
  true box, against chance = the box's share of the image;
- mass in box: share of the map's total inside the box, against the same chance level;
- deletion (Petsiuk et al., RISE, arXiv 1806.07421): pixels replaced, most salient first, by
  a heavily blurred copy of the image (local detail removed, global intensity kept, so the
  perturbed images stay near the training distribution), in ``steps`` equal steps; the
  finding's probability after each step gives the curve and its area (AUC, lower = the map
  found what the model uses). Baseline: the same with the pixels in random order.

Text: the share of the word weights (attention; |integrated gradients| for other encoders)
on the finding's words, against chance = those words' share of the tokens. The finding's
words are, from ``medmodal.data.synthetic``: mentions of the finding (its
:data:`~medmodal.data.synthetic.vocabulary.SYNONYMS`) and the wording of the clinical-history
items related to it (``ground_truth.jsonl`` lists each study's history).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from medmodal.data.dataset import TEXT_SEP, make_dataloader
from medmodal.data.pipeline import build_dataset
from medmodal.data.synthetic.history import HISTORY_ITEMS, split_key
from medmodal.data.synthetic.vocabulary import mention_pattern
from medmodal.errors import InputNotFoundError
from medmodal.explain.image import image_saliency
from medmodal.explain.modality import with_modalities
from medmodal.explain.text import explain_text, resolve_method
from medmodal.training.loading import load_trained


# --------------------------------------------------------------------- image
def box_pixel_mask(box: Sequence[float], height: int, width: int) -> Tensor:
    """Normalised box (x0, y0, x1, y1) -> bool [H, W], True at pixels whose centre is inside."""
    x0, y0, x1, y1 = box
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width
    return ((ys >= y0) & (ys <= y1))[:, None] & ((xs >= x0) & (xs <= x1))[None, :]


def pointing_hit(saliency: Tensor, inside: Tensor) -> bool:
    """The maximum of ``saliency`` [H, W] falls inside ``inside`` [H, W] (ties: any maximum inside)."""
    saliency = saliency.detach()
    if float(saliency.max()) <= 0:
        return False
    return bool(inside[saliency >= saliency.max()].any())


def mass_in_box(saliency: Tensor, inside: Tensor) -> float:
    """Share of ``saliency`` [H, W] (non-negative) inside the box; 0 for an all-zero map."""
    total = float(saliency.sum())
    return float(saliency[inside].sum()) / total if total > 0 else 0.0


def deletion_images(image: Tensor, baseline: Tensor, order: Tensor, steps: int) -> Tensor:
    """image, baseline [1, H, W]; order [H*W] pixel indices, first deleted first ->
    [steps + 1, 1, H, W]: image k has the first ``round(k / steps * H * W)`` pixels replaced."""
    n = order.numel()
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n)
    cutoffs = torch.round(torch.linspace(0, n, steps + 1)).long()
    deleted = (rank[None, :] < cutoffs[:, None]).reshape(steps + 1, 1, *image.shape[-2:])
    return torch.where(deleted, baseline[None], image[None])


def area_under_curve(curve: Sequence[float]) -> float:
    """Trapezoid area of ``curve`` sampled at equal steps over [0, 1]."""
    y = np.asarray(curve, dtype=np.float64)
    return float(np.trapezoid(y, dx=1.0 / (len(y) - 1)))


@torch.no_grad()
def deletion_curve(
    model: Any, row_batch: Mapping[str, Any], class_index: int, order: Tensor, steps: int, baseline: Tensor
) -> list[float]:
    """The finding's probability as pixels of study 0 of ``row_batch`` are deleted in ``order``."""
    images = deletion_images(row_batch["image"][0], baseline, order, steps)
    repeated = {
        k: (v.expand(len(images), *v.shape[1:]) if torch.is_tensor(v) else v) for k, v in row_batch.items()
    }
    logits = model({**repeated, "image": images}).logits[:, class_index]
    return torch.sigmoid(logits).tolist()


def blurred(image: Tensor, sigma: float) -> Tensor:
    """[1, H, W] -> Gaussian-blurred copy (MONAI ``GaussianSmooth``)."""
    from monai.transforms import GaussianSmooth

    return torch.as_tensor(GaussianSmooth(sigma=sigma)(image), dtype=image.dtype)


# ---------------------------------------------------------------------- text
def finding_spans(text: str, label: str, history: Sequence[str]) -> list[tuple[int, int]]:
    """Character spans of ``text`` that name ``label`` (synonym mentions) or word a history
    item related to it (``history``: ground-truth entries such as ``"base_dullness:left"``)."""
    spans = [m.span() for m in mention_pattern(label).finditer(text)]
    lowered = text.lower()
    for entry in history:
        key, side = split_key(entry)
        item = HISTORY_ITEMS.get(key)
        if item is None or label not in item.labels:
            continue
        for wording in item.texts:
            phrase = (wording.format(side=side) if "{side}" in wording else wording).rstrip(".").lower()
            spans += [(m.start(), m.end()) for m in re.finditer(re.escape(phrase), lowered)]
    return spans


def token_mask_for_spans(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[bool]:
    """Tokens (character ``offsets``) overlapping any of ``spans``."""
    return [any(s < end and start < e for s, e in spans) for start, end in offsets]


def weight_share(weights: Sequence[float], mask: Sequence[bool]) -> float:
    """Share of sum(|weights|) on the masked tokens (0 if all weights are 0)."""
    w = np.abs(np.asarray(weights, dtype=np.float64))
    total = w.sum()
    return float(w[np.asarray(mask, dtype=bool)].sum() / total) if total > 0 else 0.0


def read_ground_truth(data: str | Path) -> dict[str, dict]:
    """``ground_truth.jsonl`` of a synthetic dataset: id -> record."""
    path = Path(data) / "ground_truth.jsonl"
    if not path.exists():
        raise InputNotFoundError(
            f"{path}: faithfulness needs the synthetic data's ground truth (medmodal synth)"
        )
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines()) if r}


# ------------------------------------------------------------------- runner
def summarise(values: Sequence[float], seed: int = 0) -> dict[str, Any]:
    """Mean with a bootstrap 95% CI over the cases (scipy.stats.bootstrap, percentile)."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    if len(x) < 2 or np.all(x == x[0]):
        return {"mean": float(x.mean()), "low": float(x.mean()), "high": float(x.mean()), "n": len(x)}
    ci = stats.bootstrap(
        (x,), np.mean, n_resamples=2000, method="percentile", rng=np.random.default_rng(seed)
    ).confidence_interval
    return {"mean": float(x.mean()), "low": float(ci.low), "high": float(ci.high), "n": len(x)}


def measure_faithfulness(
    run: str | Path,
    data: str | Path,
    *,
    split: str = "test",
    max_studies: int = 200,
    steps: int = 20,
    with_text: bool = False,
    seed: int = 0,
    batch_size: int = 16,
    image_method: str = "gradcam",
) -> dict[str, Any]:
    """All the measures of the module docstring for a trained run on a synthetic dataset."""
    trained = load_trained(run)
    model, labels, cfg = trained.model, trained.labels, trained.config
    studies = trained.studies(data, split)[:max_studies]
    truth = read_ground_truth(data)
    loader = make_dataloader(
        build_dataset(studies, trained.tokenizer, labels, cfg, train=False), batch_size=batch_size
    )
    generator = torch.Generator().manual_seed(seed)
    image_cases: list[dict[str, Any]] = []
    text_cases: list[dict[str, Any]] = []
    text_method = resolve_method(model, "auto") if model.text_encoder is not None else None
    offset = 0
    for batch in loader:
        rows = range(len(batch["id"]))
        if model.image_encoder is not None:
            view = (
                batch
                if with_text or model.text_encoder is None
                else with_modalities(batch, image=True, text=False)
            )
            image_cases += _image_cases(model, view, labels, steps, generator, image_method)
        if text_method is not None:
            for row in rows:
                study = studies[offset + row]
                text_cases += _text_cases(
                    model,
                    batch,
                    trained.tokenizer,
                    labels,
                    study,
                    truth.get(study.id, {}),
                    text_method,
                    row,
                    cfg.data,
                    explain_text,
                )
        offset += len(rows)
    report: dict[str, Any] = {
        "run": str(run),
        "data": str(data),
        "split": split,
        "studies": len(studies),
        "image_view": "image and text" if with_text else "image only",
        "steps": steps,
        "image_method": image_method,
    }
    if image_cases:
        report["image"] = {
            "cases": len(image_cases),
            **{
                key: summarise([c[key] for c in image_cases])
                for key in (
                    "pointing",
                    "pointing_chance",
                    "mass_in_box",
                    "deletion_auc",
                    "random_deletion_auc",
                )
            },
            "deletion_minus_random": summarise(
                [c["deletion_auc"] - c["random_deletion_auc"] for c in image_cases]
            ),
            "pointing_by_label": {
                name: summarise([c["pointing"] for c in image_cases if c["label"] == name])
                for name in labels
                if any(c["label"] == name for c in image_cases)
            },
        }
    if text_cases:
        report["text"] = {
            "method": text_method,
            "cases": len(text_cases),
            "share_on_finding_words": summarise([c["share"] for c in text_cases]),
            "chance": summarise([c["chance"] for c in text_cases]),
        }
    return report


def _image_cases(
    model: Any,
    batch: Mapping[str, Any],
    labels: Sequence[str],
    steps: int,
    generator: torch.Generator,
    method: str = "gradcam",
) -> list[dict[str, Any]]:
    """Pointing / mass / deletion for every (study, finding) with a true box in ``batch``."""
    present = (batch["labels"] > 0) & batch["box_mask"] & batch["has_image"][:, None]
    classes = sorted(set(torch.nonzero(present)[:, 1].tolist()))
    if not classes:
        return []
    maps = image_saliency(model, batch, classes, method)  # [B, K, H, W]
    height, width = batch["image"].shape[-2:]
    cases = []
    for row, c in torch.nonzero(present).tolist():
        saliency = maps[row, classes.index(c)]
        inside = box_pixel_mask(batch["boxes"][row, c].tolist(), height, width)
        row_batch = {k: (v[row : row + 1] if torch.is_tensor(v) else [v[row]]) for k, v in batch.items()}
        baseline = blurred(batch["image"][row], sigma=height / 8)
        by_saliency = torch.argsort(saliency.flatten(), descending=True, stable=True)
        random_order = torch.randperm(height * width, generator=generator)
        cases.append(
            {
                "label": labels[c],
                "pointing": float(pointing_hit(saliency, inside)),
                "pointing_chance": float(inside.float().mean()),
                "mass_in_box": mass_in_box(saliency, inside),
                "deletion_auc": area_under_curve(
                    deletion_curve(model, row_batch, c, by_saliency, steps, baseline)
                ),
                "random_deletion_auc": area_under_curve(
                    deletion_curve(model, row_batch, c, random_order, steps, baseline)
                ),
            }
        )
    return cases


def _text_cases(
    model, batch, tokenizer, labels, study, record, method, row, data_cfg, explain_text
) -> list[dict]:
    """Share of word weight on each present finding's words, for findings whose words occur."""
    positives = [c for c, name in enumerate(labels) if batch["labels"][row, c] > 0]
    if not positives or not bool(batch["has_text"][row]):
        return []
    text = study.text(data_cfg.text_fields, sep=TEXT_SEP)
    # Character offsets of the model's tokens: the tokenizer's own encoding (exact alignment).
    offsets = tokenizer._encoding(text).offsets[: int(batch["text_mask"][row].sum())]
    row_batch = {k: (v[row : row + 1] if torch.is_tensor(v) else [v[row]]) for k, v in batch.items()}
    entries = explain_text(model, row_batch, tokenizer, labels, positives, method=method)
    cases = []
    for c in positives:
        mask = token_mask_for_spans(offsets, finding_spans(text, labels[c], record.get("history", [])))
        if not any(mask):
            continue
        weights = entries[0].weights if method == "attention" else entries[positives.index(c)].weights
        cases.append(
            {"label": labels[c], "share": weight_share(weights, mask), "chance": float(np.mean(mask))}
        )
    return cases


def format_faithfulness(report: dict[str, Any]) -> str:
    """A short Markdown summary of :func:`measure_faithfulness`."""

    def ci(s: dict) -> str:
        return "n/a" if s["mean"] is None else f"{s['mean']:.3f} [{s['low']:.3f}, {s['high']:.3f}]"

    lines = [
        f"{report['studies']} {report['split']} studies; image measures ({report['image_method']}) on the {report['image_view']} view",
        "",
        "| measure | value [95% CI] |",
        "|---|---|",
    ]
    if "image" in report:
        im = report["image"]
        method = {"gradcam": "Grad-CAM", "occlusion": "occlusion"}.get(
            report["image_method"], report["image_method"]
        )
        lines += [
            f"| cases (finding with a true box) | {im['cases']} |",
            f"| pointing game, {method} | {ci(im['pointing'])} |",
            f"| pointing chance (box share of image) | {ci(im['pointing_chance'])} |",
            f"| {method} mass in box | {ci(im['mass_in_box'])} |",
            f"| deletion AUC, {method} order | {ci(im['deletion_auc'])} |",
            f"| deletion AUC, random order | {ci(im['random_deletion_auc'])} |",
            f"| deletion AUC, {method} minus random | {ci(im['deletion_minus_random'])} |",
        ]
    if "text" in report:
        tx = report["text"]
        lines += [
            f"| text cases ({tx['method']}) | {tx['cases']} |",
            f"| word weight on the finding's words | {ci(tx['share_on_finding_words'])} |",
            f"| chance (their share of tokens) | {ci(tx['chance'])} |",
        ]
    return "\n".join(lines)
