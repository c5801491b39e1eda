"""``small_cnn``: the default image encoder, a plain VGG-style CNN that trains fast on a CPU.

Layout (widths ``(32, 64, 128, 256)``, input 128 px -> 8 x 8 grid at stride 16)::

    stem    conv3x3/2  in -> stem_width                      H/2
    stage1  conv3x3/2 -> conv3x3   -> widths[0]              H/4
    stage2  conv3x3/2 -> conv3x3   -> widths[1]              H/8
    stage3  conv3x3/2 -> conv3x3   -> widths[2]              H/16
    stage4  conv3x3   -> conv3x3   -> widths[3]              H/16 (no downsampling)

every conv followed by BatchNorm and ReLU. Downsampling is a strided conv at the start of
a stage, so the full-resolution stages (the costly ones) have a single narrow conv; the
last stage keeps the resolution to give a finer grid for localization.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from medmodal.models.image_encoders.base import FeatureMapEncoder
from medmodal.models.layers import AdaptiveAvgPool2d, SafeBatchNorm1d
from medmodal.models.registry import register
from medmodal.models.types import ImageFeatures


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv (padding 1) -> BatchNorm -> ReLU; ``stride`` 2 halves H and W."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def small_cnn_body(in_channels: int, stem_width: int, widths: Sequence[int]) -> nn.Sequential:
    """The stem and the stages: [B, in_channels, H, W] -> [B, widths[-1], H/16, W/16] (for 4 stages)."""
    layers = [conv_bn_relu(in_channels, stem_width, stride=2)]
    channels = stem_width
    for index, width in enumerate(widths):
        downsample = index < len(widths) - 1
        layers.append(
            nn.Sequential(
                conv_bn_relu(channels, width, stride=2 if downsample else 1), conv_bn_relu(width, width)
            )
        )
        channels = width
    return nn.Sequential(*layers)


@register("image_encoder", "small_cnn")
class SmallCNN(FeatureMapEncoder):
    """Fast default encoder, random init (see the module docstring).

    Args:
        in_channels: image channels (1 for radiographs).
        out_dim: width of the image vector.
        widths: channels of the stages; with n stages the grid stride is 2 ** n.
        stem_width: channels of the stem conv.
        grid_dim: channels of the grid (1x1-conv projection); None keeps ``widths[-1]``.
        dropout: before the vector projection.
        channels_last: run the convolutions in channels-last memory format (faster on CPU).
        readout: ``"mean"`` (global average pooling) or ``"flatten"`` (the pooled
            ``readout_grid`` x ``readout_grid`` map, flattened: keeps coarse position).
        readout_grid: side of the pooled map of the ``"flatten"`` read-out.
        coord_channels: append normalised x and y coordinate channels to the input
            (CoordConv, Liu et al. 2018), so the convolutions can tell left from right and apex from base.
        pixel_pathway: side s of a "wide" linear pathway (wide & deep, Cheng et al. 2016): the
            image average-pooled to s x s, standardised per pixel (BatchNorm1d), linearly mapped
            and added to the vector; 0 = off. It holds what logistic regression on
            downsampled pixels sees, so the CNN only has to learn what that misses.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_dim: int = 256,
        widths: Sequence[int] = (32, 64, 128, 256),
        stem_width: int = 16,
        grid_dim: int | None = None,
        dropout: float = 0.0,
        channels_last: bool = True,
        readout: Literal["mean", "flatten"] = "mean",
        readout_grid: int = 4,
        coord_channels: bool = False,
        pixel_pathway: int = 0,
    ) -> None:
        super().__init__()
        if not widths:
            raise ValueError("small_cnn needs at least one stage width")
        if pixel_pathway < 0:
            raise ValueError(f"pixel_pathway must be >= 0, got {pixel_pathway}")
        self.pixel_pathway = pixel_pathway
        self.pixel_proj = None
        if pixel_pathway:
            self.pixel_proj = nn.Sequential(
                AdaptiveAvgPool2d(pixel_pathway),  # exports to ONNX at any image size
                nn.Flatten(1),
                SafeBatchNorm1d(in_channels * pixel_pathway**2),
                nn.Dropout(dropout),
                nn.Linear(in_channels * pixel_pathway**2, out_dim),
            )
        self.coord_channels = coord_channels
        self.body = small_cnn_body(in_channels + (2 if coord_channels else 0), stem_width, widths)
        self.build_readouts(widths[-1], out_dim, grid_dim, dropout, readout, readout_grid)
        self.channels_last = channels_last
        if channels_last:
            # Module.to accepts memory_format at runtime; torch's overloads leave it out.
            self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(self, image: Tensor) -> ImageFeatures:
        """image [B, in_channels, H, W] -> ImageFeatures(vector [B, out_dim], grid [B, grid_dim, h, w])."""
        wide = self.pixel_proj(image) if self.pixel_proj is not None else None
        if self.coord_channels:
            image = with_coordinate_channels(image)
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        features = super().forward(image)
        if wide is not None:
            features.vector = features.vector + wide
        return features


def with_coordinate_channels(image: Tensor) -> Tensor:
    """image [B, C, H, W] -> [B, C + 2, H, W]: x then y coordinates, each in [-1, 1]."""
    b, _, h, w = image.shape
    ys, xs = _unit_range(h, image), _unit_range(w, image)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    coords = torch.stack([grid_x, grid_y]).expand(b, 2, h, w)
    return torch.cat([image, coords], dim=1)


def _unit_range(n: int, like: Tensor) -> Tensor:
    """n evenly spaced values from -1 to 1 (``torch.linspace``'s values) in ``like``'s dtype; written
    with ``arange`` because the ONNX exporter turns ``linspace`` into a float64 tensor."""
    steps = torch.arange(n, device=like.device).to(like.dtype)
    return steps * (2.0 / max(n - 1, 1)) - 1.0


@register("image_encoder", "coord_cnn")
class CoordCNN(SmallCNN):
    """``small_cnn`` that keeps *where* things are: CoordConv input channels, the flatten read-out
    (the pooled ``readout_grid`` x ``readout_grid`` map, flattened) and a wide linear pathway on the
    image pooled to 32 x 32. The default image encoder: on the demo data the global-average
    read-out of ``small_cnn`` loses to logistic regression on 32 x 32 pixels, because position is
    part of a finding (docs/diagnosis.md). Same arguments as :class:`SmallCNN`, other defaults."""

    def __init__(
        self,
        in_channels: int = 1,
        out_dim: int = 256,
        readout: Literal["mean", "flatten"] = "flatten",
        readout_grid: int = 4,
        coord_channels: bool = True,
        pixel_pathway: int = 32,
        **kwargs,
    ) -> None:
        super().__init__(
            in_channels,
            out_dim,
            readout=readout,
            readout_grid=readout_grid,
            coord_channels=coord_channels,
            pixel_pathway=pixel_pathway,
            **kwargs,
        )
