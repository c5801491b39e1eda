"""``cross_attention``: co-attention between report tokens and image regions.

Text tokens attend over the image grid regions ("which region does this word describe")
and image regions attend over the text tokens ("which words concern this region"), each
with ``nn.MultiheadAttention`` plus a residual and LayerNorm. Padding tokens are excluded
with key padding masks. Both attended sets are mean-pooled (text over real tokens) and an
MLP combines them with the two modality vectors.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medmodal.models.fusion.base import FusionDims, FusionLayer, register_fusion
from medmodal.models.layers import cell_centres, first_position_if_empty, masked_mean, mlp
from medmodal.models.types import FusionOutput, ImageFeatures, TextFeatures


def grid_coordinates(height: int, width: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """[h * w, 2] (x, y) centres of the grid cells in [0, 1], row-major (as ``grid.flatten(2)``)."""
    xs, ys = cell_centres(height, width, device, dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x.flatten(), grid_y.flatten()], dim=-1)


@register_fusion("cross_attention")
class CrossAttentionFusion(FusionLayer):
    """Bidirectional cross-attention fusion of the grid regions (``dims.grid_dim`` channels) and the
    tokens (``dims.seq_dim``), combined with the modality vectors.

    Args:
        dim: width of the attention space; num_heads: heads (must divide ``dim``).
        dropout: in attention and the MLP.

    ``extras``: ``text_to_image_attention`` [B, L, N] (each real token's weights over the
    N = h * w regions, rows of padding tokens zero) and ``image_to_text_attention`` [B, N, L]
    (each region's weights over the real tokens; zero when the report has no token).
    Both are averaged over heads.
    """

    def __init__(
        self, dims: FusionDims, out_dim: int, dim: int = 128, num_heads: int = 4, dropout: float = 0.1
    ) -> None:
        super().__init__(out_dim)
        self.region_proj = nn.Linear(dims.grid_dim, dim)
        self.region_position = nn.Linear(2, dim)
        self.token_proj = nn.Linear(dims.seq_dim, dim)
        self.text_to_image = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.image_to_text = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.text_norm = nn.LayerNorm(dim)
        self.image_norm = nn.LayerNorm(dim)
        self.combine = mlp(dims.joint_dim + 2 * dim, out_dim, out_dim, dropout)
        self.out_norm = nn.LayerNorm(out_dim)

    def image_regions(self, grid: Tensor) -> Tensor:
        """grid [B, G, h, w] -> region features with position [B, h * w, dim]."""
        _, _, height, width = grid.shape
        regions = self.region_proj(grid.flatten(2).transpose(1, 2))
        return regions + self.region_position(grid_coordinates(height, width, grid.device, regions.dtype))

    def forward(self, image: ImageFeatures, text: TextFeatures) -> FusionOutput:
        """image (vector [B, Di], grid [B, G, h, w]), text (vector, sequence [B, L, S], mask [B, L])
        -> FusionOutput(vector [B, out_dim], extras with both attention maps)."""
        regions = self.image_regions(image.grid)
        tokens = self.token_proj(text.sequence)
        mask = text.mask
        token_weight = mask.unsqueeze(-1).to(tokens.dtype)  # [B, L, 1]
        has_tokens = mask.any(dim=1).to(tokens.dtype)[:, None, None]  # [B, 1, 1]

        attended, text_to_image = self.text_to_image(tokens, regions, regions)
        tokens = self.text_norm(tokens + attended)

        # A report without tokens would make an all-masked row (NaN): attend to position 0, then zero it.
        attended, image_to_text = self.image_to_text(
            regions, tokens, tokens, key_padding_mask=~first_position_if_empty(mask)
        )
        regions = self.image_norm(regions + attended * has_tokens)

        pooled = [image.vector, text.vector, regions.mean(dim=1), masked_mean(tokens, mask)]
        vector = self.out_norm(self.combine(torch.cat(pooled, dim=-1)))
        extras = {
            "text_to_image_attention": text_to_image * token_weight,
            "image_to_text_attention": image_to_text * has_tokens,
        }
        return FusionOutput(vector=vector, extras=extras)
