"""How much each modality moved each prediction, and when the two modalities disagree.

Modality contribution: exact Shapley values over the two "players" image and text. The
value of a coalition S is the model's probability with the modalities outside S replaced
by their learned missing-modality placeholders (``has_image`` / ``has_text`` False, the
same path a study without an image or text takes)::

    phi_image = 1/2 [(p(I) - p(0)) + (p(I,T) - p(T))]
    phi_text  = 1/2 [(p(T) - p(0)) + (p(I,T) - p(I))]
    p(0) + phi_image + phi_text = p(I,T)          (efficiency: exact with two players)

A modality missing from the input contributes exactly 0 (its coalitions coincide).

Conflict flag: the model's image-only view and text-only view of a finding on opposite
sides of the decision threshold and at least ``gap`` apart. The views are, by default,
the **auxiliary unimodal heads** (``ModelOutput.image_logits`` / ``text_logits``): they are
trained on every study with that modality alone (``loss_weights.auxiliary``), so each is a
calibrated-by-training single-modality classifier, and they come free with the forward
pass. The ablation view (fused model with the other modality replaced by its placeholder)
is trained only through genuinely missing studies and ``model.modality_dropout``; with
neither (the default config) the fused head has never seen a placeholder and its
"image-only" output is off-distribution. ``evaluate.conflict_view: auto`` therefore uses the
auxiliary heads when they were trained and the ablation otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from medmodal.models.multimodal import MultimodalModel

COALITIONS = ("none", "image", "text", "both")


def with_modalities(batch: Mapping[str, Any], image: bool, text: bool) -> dict[str, Any]:
    """A copy of ``batch`` with the image and/or the text hidden (placeholder) where False.

    A modality already missing from a row stays missing.
    """
    out = dict(batch)
    for name, keep in (("image", image), ("text", text)):
        present = batch[f"has_{name}"].bool()
        out[f"has_{name}"] = present if keep else torch.zeros_like(present)
    return out


def require_both_modalities(model: MultimodalModel) -> None:
    if model.modalities != "both":
        raise ValueError(
            f"this needs a model of both modalities; the run's model uses {model.modalities} only"
        )


@torch.no_grad()
def coalition_probabilities(model: MultimodalModel, batch: Mapping[str, Any]) -> dict[str, Tensor]:
    """Probabilities [B, C] of the fused model for each coalition in :data:`COALITIONS`."""
    require_both_modalities(model)
    flags = {"none": (False, False), "image": (True, False), "text": (False, True), "both": (True, True)}
    return {name: torch.sigmoid(model(with_modalities(batch, *flags[name])).logits) for name in COALITIONS}


@dataclass
class ModalityContributions:
    """Shapley decomposition of each probability, all [B, C]: ``base + image + text == full``."""

    base: Tensor  # both modalities replaced by placeholders
    image: Tensor
    text: Tensor
    full: Tensor

    def as_rows(self, labels: Sequence[str], row: int = 0) -> list[dict[str, str | float]]:
        """One dict per label for study ``row`` (JSON-able, rounded)."""
        return [
            {
                "label": label,
                "probability": round(float(self.full[row, c]), 6),
                "base": round(float(self.base[row, c]), 6),
                "image": round(float(self.image[row, c]), 6),
                "text": round(float(self.text[row, c]), 6),
            }
            for c, label in enumerate(labels)
        ]


def shapley_from_coalitions(p: Mapping[str, Tensor]) -> ModalityContributions:
    """Exact two-player Shapley values from the four coalition values (see module docstring)."""
    image = 0.5 * ((p["image"] - p["none"]) + (p["both"] - p["text"]))
    text = 0.5 * ((p["text"] - p["none"]) + (p["both"] - p["image"]))
    return ModalityContributions(base=p["none"], image=image, text=text, full=p["both"])


def modality_contributions(model: MultimodalModel, batch: Mapping[str, Any]) -> ModalityContributions:
    """Shapley values of image and text for every probability of ``batch``."""
    return shapley_from_coalitions(coalition_probabilities(model, batch))


# --------------------------------------------------------------------- conflicts
def resolve_view(view: str, model: MultimodalModel, auxiliary_weight: float) -> str:
    """``"auxiliary"`` or ``"ablation"`` for a configured ``evaluate.conflict_view``."""
    has_heads = model.image_aux_head is not None and model.text_aux_head is not None
    if view == "auto":
        return "auxiliary" if has_heads and auxiliary_weight > 0 else "ablation"
    if view == "auxiliary" and not has_heads:
        raise ValueError("evaluate.conflict_view 'auxiliary': this model has no auxiliary unimodal heads")
    return view


@torch.no_grad()
def unimodal_probabilities(
    model: MultimodalModel, batch: Mapping[str, Any], view: str, output: Any | None = None
) -> tuple[Tensor, Tensor]:
    """(image-only probabilities [B, C], text-only probabilities [B, C]) from ``view``.

    ``output``: the model's ``ModelOutput`` on ``batch`` if already computed (auxiliary view).
    """
    require_both_modalities(model)
    if view == "auxiliary":
        out = output if output is not None else model(batch)
        return torch.sigmoid(out.image_logits), torch.sigmoid(out.text_logits)
    if view == "ablation":
        image_only = model(with_modalities(batch, image=True, text=False)).logits
        text_only = model(with_modalities(batch, image=False, text=True)).logits
        return torch.sigmoid(image_only), torch.sigmoid(text_only)
    raise ValueError(f"unknown conflict view '{view}'; use auxiliary or ablation")


def find_conflicts(
    labels: Sequence[str],
    image_probs: Sequence[float],
    text_probs: Sequence[float],
    *,
    threshold: float,
    gap: float,
) -> list[dict[str, Any]]:
    """Findings whose image-only and text-only probabilities lie on opposite sides of
    ``threshold`` and differ by at least ``gap``: ``[{label, image_probability, text_probability}]``."""
    conflicts = []
    for label, p_img, p_txt in zip(labels, image_probs, text_probs):
        opposite = (p_img >= threshold) != (p_txt >= threshold)
        if opposite and abs(p_img - p_txt) >= gap:
            conflicts.append(
                {
                    "label": label,
                    "image_probability": round(float(p_img), 6),
                    "text_probability": round(float(p_txt), 6),
                }
            )
    return conflicts


def conflicts_for_prediction(
    trained: Any, batch: Mapping[str, Any], output: Any, threshold: float
) -> dict[str, Any]:
    """What the predictor adds for a one-study batch with both modalities present:
    ``{"conflicts": [...], "conflict_view": "auxiliary" | "ablation"}``; {} when not applicable."""
    model = trained.model
    if model.modalities != "both" or not (bool(batch["has_image"][0]) and bool(batch["has_text"][0])):
        return {}
    cfg = trained.config
    view = resolve_view(cfg.evaluate.conflict_view, model, cfg.train.loss_weights.auxiliary)
    p_img, p_txt = unimodal_probabilities(model, batch, view, output)
    conflicts = find_conflicts(
        trained.labels,
        p_img[0].tolist(),
        p_txt[0].tolist(),
        threshold=threshold,
        gap=cfg.evaluate.conflict_gap,
    )
    return {"conflicts": conflicts, "conflict_view": view}
