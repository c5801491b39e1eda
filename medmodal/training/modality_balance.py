"""On-the-fly gradient modulation against modality competition (OGM, Peng et al., CVPR 2022,
arXiv 2203.15332), for two-modality models (``train.modality_balance: ogm``).

A jointly trained fusion model tends to lean on the modality that learns faster and to
under-train the other. OGM measures, per training batch, how well each modality alone explains
the labels and slows the encoder of the dominant one:

    s_m   = balanced probability of the correct label from the auxiliary unimodal head of
            modality m over the batch's seen samples: the mean of (mean sigmoid over the
            positive label entries) and (mean 1 - sigmoid over the negative ones). This is our
            multi-label adaptation of the paper's softmax score; balancing matters because
            with rare findings a plain mean is dominated by easy negatives and sits near 1
            for both modalities (measured: the modulation then hardly acts).
    rho   = s_image / s_text
    k_image = 1 - tanh(alpha * (rho - 1))        if rho > 1, else 1
    k_text  = 1 - tanh(alpha * (1 / rho - 1))    if rho < 1, else 1

and multiplies every gradient of that modality's encoder by its k after the backward pass. The
paper's optional Gaussian "generalisation enhancement" noise is not used. Under DDP the two
scores are averaged over processes first, so every process scales by the same k and the
replicas stay identical.

Written here (no library provides it); the scores come from the auxiliary unimodal heads, which
the model trains anyway (``train.loss_weights.auxiliary``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from medmodal.models.types import ModelOutput


def modality_scores(out: ModelOutput, batch: dict) -> Tensor:
    """[2] = (s_image, s_text): balanced probability the unimodal heads give the true labels
    (mean over positive entries and mean over negative entries, averaged; only the one that
    exists if the batch has no positives or no negatives), each over the samples where the
    model saw that modality (NaN where none was seen)."""
    labels = batch["labels"].float()
    scores = []
    for logits, present, available in (
        (out.image_logits, out.image_present, batch["has_image"]),
        (out.text_logits, out.text_present, batch["has_text"]),
    ):
        seen = available.bool() if present is None else present.bool() & available.bool()
        if not bool(seen.any()):
            scores.append(torch.tensor(float("nan"), device=labels.device))
            continue
        # OGM runs on two-modality models (config check), which have both auxiliary heads
        assert logits is not None
        p = torch.sigmoid(logits.detach().float())[seen]
        y = labels[seen] > 0.5
        parts = [part for part in (p[y], 1 - p[~y]) if part.numel() > 0]
        scores.append(torch.stack([part.mean() for part in parts]).mean())
    return torch.stack(scores)


def ogm_coefficients(s_image: float, s_text: float, alpha: float) -> tuple[float, float]:
    """(k_image, k_text) from the two scores (module docstring); (1, 1) if either is undefined."""
    if not (math.isfinite(s_image) and math.isfinite(s_text)) or s_image <= 0 or s_text <= 0:
        return 1.0, 1.0
    ratio = s_image / s_text
    if ratio > 1:
        return 1.0 - math.tanh(alpha * (ratio - 1.0)), 1.0
    if ratio < 1:
        return 1.0, 1.0 - math.tanh(alpha * (1.0 / ratio - 1.0))
    return 1.0, 1.0


def scale_gradients(module: nn.Module, factor: float) -> None:
    """Multiply the gradients of ``module``'s parameters by ``factor`` in place."""
    if factor == 1.0:
        return
    for parameter in module.parameters():
        if parameter.grad is not None:
            parameter.grad.mul_(factor)
