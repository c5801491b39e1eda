"""Task heads on top of the fused representation.

- :class:`ClassificationHead`: multi-label disease logits.

The localization head is :class:`medmodal.models.localization.LocalizationHead`.
"""

from __future__ import annotations

from torch import Tensor, nn

from medmodal.models.layers import mlp


class ClassificationHead(nn.Module):
    """Dropout + linear (or a small MLP when ``hidden_dim`` is given): [B, in_dim] -> [B, num_labels]."""

    def __init__(
        self, in_dim: int, num_labels: int, hidden_dim: int | None = None, dropout: float = 0.1
    ) -> None:
        super().__init__()
        layers = 2 if hidden_dim else 1
        self.net = nn.Sequential(
            nn.Dropout(dropout), mlp(in_dim, hidden_dim or in_dim, num_labels, dropout, layers)
        )

    def forward(self, x: Tensor) -> Tensor:
        """x [B, in_dim] -> logits [B, num_labels]."""
        return self.net(x)
