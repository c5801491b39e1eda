"""The fusion contract, shared by every file of this package.

Constructor ``(image_dim, text_dim, grid_dim, seq_dim, out_dim, num_labels, **kwargs)``;
attribute ``out_dim``; ``forward(image: ImageFeatures, text: TextFeatures) -> FusionOutput``
with ``vector`` [B, out_dim] (the joint representation the heads read), ``logits``
[B, num_labels] for decision-level fusion (else None) and ``extras`` (gates, attention maps).
"""

from __future__ import annotations

from torch import nn


class FusionLayer(nn.Module):
    """Base class of the fusion layers.

    ``produces_logits``: True for decision-level fusion, whose ``FusionOutput.logits``
    are the model's classification logits (no separate classification head is built).
    """

    produces_logits: bool = False
    out_dim: int
