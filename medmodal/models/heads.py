"""Task heads on top of the fused representation.

- :class:`ClassificationHead`: multi-label disease logits.
- :class:`LocalizationHead`: one box per finding class from a class heatmap over the image
  grid (centre = soft-argmax, size regressed). Its loss is applied only where the finding
  has a box (``box_mask``); that masking belongs to the training loss.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medmodal.models.layers import cell_centres, mlp


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


def spatial_softmax(heatmap: Tensor) -> Tensor:
    """heatmap logits [B, C, h, w] -> probabilities over the h * w cells, same shape."""
    b, c, h, w = heatmap.shape
    return torch.softmax(heatmap.reshape(b, c, h * w), dim=-1).reshape(b, c, h, w)


def soft_argmax_2d(heatmap: Tensor) -> Tensor:
    """Spatial expectation of softmax(``heatmap`` [B, C, h, w]) -> centres [B, C, 2], (x, y) in [0, 1]."""
    probs = spatial_softmax(heatmap)
    xs, ys = cell_centres(heatmap.shape[-2], heatmap.shape[-1], heatmap.device, heatmap.dtype)
    x = (probs.sum(dim=-2) * xs).sum(dim=-1)
    y = (probs.sum(dim=-1) * ys).sum(dim=-1)
    return torch.stack([x, y], dim=-1)


def centre_size_to_xyxy(centre: Tensor, size: Tensor) -> Tensor:
    """centre [.., 2] (x, y) and size [.., 2] (w, h) -> boxes [.., 4] (x0, y0, x1, y1) clipped to [0, 1]."""
    half = size / 2
    return torch.cat([centre - half, centre + half], dim=-1).clamp(0.0, 1.0)


class LocalizationHead(nn.Module):
    """Per-class box from the image grid, modulated by the fused vector.

    1. ``features = ReLU(FiLM(conv1x1(grid), context))``: the fused vector scales and
       shifts the grid features (gamma, beta), so text evidence can steer where to look.
    2. ``heatmaps = conv1x1(features)``: one spatial logit map per class [B, C, h, w].
    3. centre = soft-argmax of each heatmap (differentiable spatial expectation).
    4. width/height = sigmoid(MLP([class-attended features + class embedding; context])),
       the class-attended features being the heatmap-softmax-weighted mean of ``features``.

    Args:
        grid_dim: channels G of the image grid.
        context_dim: width of the fused vector.
        num_labels: classes C.
        hidden_dim: width of the head's features.
        dropout: in the size MLP.
    """

    def __init__(
        self, grid_dim: int, context_dim: int, num_labels: int, hidden_dim: int = 128, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.num_labels = num_labels
        self.grid_proj = nn.Conv2d(grid_dim, hidden_dim, 1)
        self.film = nn.Linear(context_dim, 2 * hidden_dim)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)  # start as identity modulation
        self.heatmap = nn.Conv2d(hidden_dim, num_labels, 1)
        self.class_embedding = nn.Parameter(torch.zeros(num_labels, hidden_dim))
        self.size_mlp = mlp(2 * hidden_dim, hidden_dim, 2, dropout)
        self.context_proj = nn.Linear(context_dim, hidden_dim)

    def modulated_features(self, grid: Tensor, context: Tensor) -> Tensor:
        """grid [B, G, h, w], context [B, Dc] -> FiLM-modulated features [B, hidden, h, w]."""
        gamma, beta = self.film(context)[:, :, None, None].chunk(2, dim=1)
        return torch.relu(self.grid_proj(grid) * (1 + gamma) + beta)

    def forward(self, grid: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        """grid [B, G, h, w], context [B, Dc] -> (boxes [B, C, 4] xyxy in [0, 1], heatmaps [B, C, h, w])."""
        features = self.modulated_features(grid, context)
        heatmaps = self.heatmap(features)
        centre = soft_argmax_2d(heatmaps)
        probs = spatial_softmax(heatmaps).flatten(2)  # [B, C, h*w]
        attended = torch.bmm(probs, features.flatten(2).transpose(1, 2))  # [B, C, hidden]
        attended = attended + self.class_embedding
        context_part = self.context_proj(context).unsqueeze(1).expand_as(attended)
        size = torch.sigmoid(self.size_mlp(torch.cat([attended, context_part], dim=-1)))
        return centre_size_to_xyxy(centre, size), heatmaps
