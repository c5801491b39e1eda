"""Text explanations: which words of the input drove the prediction.

- ``attention``: the text encoder's word-level attention pooling weights (``bilstm_attention``,
  the report encoder of arXiv 2405.17459). Class-agnostic: where the encoder read.
- ``integrated_gradients``: captum's ``LayerIntegratedGradients`` over the encoder's word
  embedding layer for one finding's fused logit, baseline = the padding token at every real
  position (its embedding is zero), 32 steps; attributions summed over the embedding
  dimension. Class-specific and for any text encoder with an ``embedding`` layer.
- ``auto``: attention for ``bilstm_attention``, integrated gradients for other encoders
  (their pooling attention is one stage after self-attention has mixed the words, so it says
  less about the words themselves).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from medmodal.models.multimodal import MultimodalModel

METHODS = ("auto", "attention", "integrated_gradients")


def resolve_method(model: MultimodalModel, method: str) -> str:
    """``attention`` or ``integrated_gradients`` for a requested ``method`` (see module docstring)."""
    if method not in METHODS:
        raise ValueError(f"unknown text explanation method '{method}'; use one of {', '.join(METHODS)}")
    if model.text_encoder is None:
        raise ValueError("text explanations need a model with a text encoder")
    if method == "auto":
        return (
            "attention"
            if model.part_names.get("text_encoder") == "bilstm_attention"
            else "integrated_gradients"
        )
    return method


@torch.no_grad()
def word_attention(model: MultimodalModel, batch: Mapping[str, Any]) -> Tensor:
    """[B, L] word attention (sums to 1 over real tokens; zeros for rows without text)."""
    attention = model(batch).word_attention
    if attention is None:
        raise ValueError("this text encoder has no word attention; use integrated_gradients")
    return attention


def integrated_gradients(
    model: MultimodalModel, batch: Mapping[str, Any], class_index: int, n_steps: int = 32
) -> Tensor:
    """[B, L] integrated-gradients attribution of each token to the logit of ``class_index``
    (signed; zeros at padding). Completeness: the row sums approximate
    ``logit(text) - logit(all-padding text)``."""
    from captum.attr import LayerIntegratedGradients

    embedding = getattr(model.text_encoder, "embedding", None)
    if embedding is None:
        raise ValueError(f"{type(model.text_encoder).__name__} has no 'embedding' layer to attribute over")
    ids, mask = batch["text_ids"], batch["text_mask"].bool()
    baseline = torch.where(mask, torch.full_like(ids, embedding.padding_idx or 0), ids)
    rest_keys = ("image", "has_image", "has_text")

    def logits_of(
        text_ids: Tensor, text_mask: Tensor, image: Tensor, has_image: Tensor, has_text: Tensor
    ) -> Tensor:
        return model(
            {
                "text_ids": text_ids,
                "text_mask": text_mask,
                "image": image,
                "has_image": has_image,
                "has_text": has_text,
            }
        ).logits

    lig = LayerIntegratedGradients(logits_of, embedding)
    with torch.enable_grad():
        attribution = lig.attribute(
            ids,
            baselines=baseline,
            target=int(class_index),
            additional_forward_args=(mask, *(batch[k] for k in rest_keys)),
            n_steps=n_steps,
        )
    return (attribution.sum(-1) * mask.to(attribution.dtype)).detach()


@dataclass
class WordWeights:
    """Tokens of one study's input text and a weight per token (attention, or attribution)."""

    tokens: list[str]
    weights: list[float]
    method: str
    label: str | None = None  # the finding explained (None: class-agnostic attention)


def tokens_of(batch: Mapping[str, Any], tokenizer: Any, row: int = 0) -> list[str]:
    """The real tokens of study ``row``, as words."""
    ids = batch["text_ids"][row][batch["text_mask"][row].bool()].tolist()
    return [tokenizer.id_to_token(i) or "?" for i in ids]


def explain_text(
    model: MultimodalModel,
    batch: Mapping[str, Any],
    tokenizer: Any,
    labels: Sequence[str],
    classes: Sequence[int],
    method: str = "auto",
    row: int = 0,
) -> list[WordWeights]:
    """Word weights of study ``row``: one class-agnostic entry (attention) or one per class (IG)."""
    method = resolve_method(model, method)
    mask = batch["text_mask"][row].bool()
    tokens = tokens_of(batch, tokenizer, row)
    if method == "attention":
        weights = word_attention(model, batch)[row][mask].tolist()
        return [WordWeights(tokens, weights, method)]
    return [
        WordWeights(tokens, integrated_gradients(model, batch, c)[row][mask].tolist(), method, labels[c])
        for c in classes
    ]
