"""Text-guided segmentation network: a MONAI U-Net whose decoder is FiLM-conditioned on a report vector.

:class:`TextGuidedUNet`: MONAI's ``BasicUNet`` (2-D; encoder of five two-conv levels, decoder of
four up-and-concatenate levels, 1x1 output conv) and, given a text encoder, FiLM layers (Perez et
al. 2018) that modulate the bottleneck and every decoder level: ``x * (1 + gamma(t)) + beta(t)``
per channel. The FiLM layers start at zero, so the text-guided network starts as the image-only
one. Trained by :class:`medmodal.tasks.segmentation.SegmentationModule`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from monai.networks.nets import BasicUNet
from torch import Tensor, nn


class FiLM(nn.Module):
    """Feature-wise linear modulation of a feature map by a condition vector, initialised to the identity.

    ``forward(x [B,C,h,w], condition [B,D]) -> x * (1 + gamma) + beta`` with ``(gamma, beta) = Linear(condition)``.
    """

    def __init__(self, condition_dim: int, channels: int) -> None:
        super().__init__()
        self.project = nn.Linear(condition_dim, 2 * channels)
        nn.init.zeros_(self.project.weight)
        nn.init.zeros_(self.project.bias)

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        gamma, beta = self.project(condition)[:, :, None, None].chunk(2, dim=1)
        return x * (1.0 + gamma) + beta


class TextGuidedUNet(nn.Module):
    """MONAI BasicUNet, optionally FiLM-conditioned on a report vector at the bottleneck and each decoder level.

    Args:
        num_classes: K output channels (background + findings).
        features: BasicUNet widths ``(f0, f1, f2, f3, f4, f_out)``.
        text_encoder: a registry text encoder, or None for the image-only U-Net.
        dropout: BasicUNet dropout.
    """

    def __init__(
        self,
        num_classes: int,
        features: Sequence[int] = (16, 16, 32, 64, 128, 16),
        text_encoder: nn.Module | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.unet = BasicUNet(
            spatial_dims=2, in_channels=1, out_channels=num_classes, features=tuple(features), dropout=dropout
        )
        self.text_encoder = text_encoder
        self.films = None
        if text_encoder is not None:
            f = tuple(features)
            stage_channels = (f[4], f[3], f[2], f[1], f[5])  # bottleneck, then decoder levels 4 -> 1
            self.films = nn.ModuleList(FiLM(cast(int, text_encoder.out_dim), c) for c in stage_channels)

    @property
    def conditioned(self) -> bool:
        return self.text_encoder is not None

    def forward(
        self, image: Tensor, text_ids: Tensor | None = None, text_mask: Tensor | None = None
    ) -> Tensor:
        """image [B,1,H,W] (H, W multiples of 16), text_ids / text_mask [B,L] -> class logits [B,K,H,W]."""
        if self.text_encoder is None or self.films is None:
            return self.unet(image)
        if text_ids is None or text_mask is None:
            raise ValueError("this U-Net is text-conditioned: pass text_ids and text_mask")
        condition = self.text_encoder(text_ids, text_mask).vector
        film = [lambda x, layer=layer: layer(x, condition) for layer in self.films]
        u = self.unet  # BasicUNet.forward, with FiLM after the bottleneck and each decoder level
        x0 = u.conv_0(image)
        x1 = u.down_1(x0)
        x2 = u.down_2(x1)
        x3 = u.down_3(x2)
        x4 = film[0](u.down_4(x3))
        u4 = film[1](u.upcat_4(x4, x3))
        u3 = film[2](u.upcat_3(u4, x2))
        u2 = film[3](u.upcat_2(u3, x1))
        u1 = film[4](u.upcat_1(u2, x0))
        return u.final_conv(u1)
