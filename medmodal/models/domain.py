"""Adversarial domain adaptation (DANN, Ganin et al. 2016, arXiv 1505.07818) against the acquisition site.

A site classifier reads the fused representation through a *gradient reversal* layer:
forward it is the identity, backward it multiplies the gradient by ``-lambda``. The
classifier learns to tell the sites apart while the encoders and the fusion receive the
opposite gradient and learn features from which the site cannot be told, i.e. features
that transfer to a site whose look differs (the target site, whose studies may join
training *unlabeled*: they feed only this site loss).

``lambda`` ramps from 0 to its maximum over training with the DANN schedule
``2 / (1 + exp(-10 p)) - 1`` (p = training progress in [0, 1]), so the adversary does not
disturb the features before the task heads have learnt anything.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from medmodal.models.layers import mlp


class GradientReversal(torch.autograd.Function):
    """Identity forward; gradient times ``-coefficient`` backward."""

    @staticmethod
    def forward(ctx, x: Tensor, coefficient: float) -> Tensor:
        ctx.coefficient = float(coefficient)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor, None]:
        return -ctx.coefficient * grad_output, None


def reverse_gradient(x: Tensor, coefficient: float = 1.0) -> Tensor:
    """``x`` unchanged; during backward its gradient is multiplied by ``-coefficient`` (>= 0)."""
    if coefficient < 0:
        raise ValueError(f"gradient reversal coefficient must be >= 0, got {coefficient}")
    return GradientReversal.apply(x, coefficient)


def dann_schedule(progress: float) -> float:
    """DANN ramp ``2 / (1 + exp(-10 p)) - 1`` of training progress p in [0, 1] -> [0, 1)."""
    p = min(max(float(progress), 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0


class SiteClassifier(nn.Module):
    """Gradient reversal, then an MLP: fused vector [B, in_dim] -> site logits [B, num_sites].

    Args:
        in_dim: width of the fused vector.
        num_sites: number of sites (classes of the adversary); at least 2.
        hidden_dim: width of the MLP's hidden layer.
        dropout: in the MLP.

    Set ``coefficient`` (the reversal's lambda) before each training step.
    """

    def __init__(self, in_dim: int, num_sites: int, hidden_dim: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        if num_sites < 2:
            raise ValueError(f"domain adaptation needs at least 2 sites in training, got {num_sites}")
        self.num_sites = num_sites
        self.coefficient = 1.0
        self.net = mlp(in_dim, hidden_dim, num_sites, dropout, 2)

    def forward(self, fused: Tensor) -> Tensor:
        """fused [B, in_dim] -> site logits [B, num_sites] (gradient to ``fused`` reversed)."""
        return self.net(reverse_gradient(fused, self.coefficient))


def site_targets(sites: list[str], site_names: list[str], device: torch.device | None = None) -> Tensor:
    """Site names of a batch -> class indices [B] long; unknown or empty sites -> -1 (ignored)."""
    index = {name: i for i, name in enumerate(site_names)}
    return torch.tensor([index.get(s, -1) for s in sites], dtype=torch.long, device=device)


def site_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy of site logits [B, S] against targets [B] (-1 ignored); 0 when none is known."""
    known = targets >= 0
    if not bool(known.any()):
        return logits.sum() * 0.0
    return nn.functional.cross_entropy(logits[known], targets[known])
