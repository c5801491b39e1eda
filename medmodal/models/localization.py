"""The dense localization head: a CenterNet-style detector (Zhou et al., "Objects as Points", 2019).

Per-finding centre heatmaps, box size (one map for all findings, or one per finding with
``model.localization.size_maps: per_finding``) and sub-cell offset are regressed at every cell of a
stride-``s`` feature map (``model.localization.stride``, 8 by default) and decoded into several
scored boxes per finding (3 x 3 peak extraction, then class-wise IoU NMS from MONAI). A box's
score is its heatmap peak, or (``model.localization.score: heatmap_x_probability``) that peak
times the classifier's probability of the finding, so a box of a finding the classifier rejects
ranks low. The training targets and loss (penalty-reduced focal loss on the heatmaps, L1 + GIoU
on the boxes at the true centres) live in :mod:`medmodal.training.losses`; docs/localization.md
has the measured figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medmodal.models.types import Detections, LocalizationOutput

# Heatmap bias at initialisation: sigmoid(bias) = 0.01, RetinaNet's prior (stable focal loss start).
HEATMAP_PRIOR = 0.01
# log-size clamp (cells): exp(-6) ~ 0.0025 to exp(4) ~ 55 cells, finite for any input.
LOG_SIZE_RANGE = (-6.0, 4.0)
# How a detected box is scored (model.localization.score).
BoxScore = Literal["heatmap", "heatmap_x_probability"]
BOX_SCORES: tuple[str, ...] = ("heatmap", "heatmap_x_probability")
# How many size maps the head regresses (model.localization.size_maps): one for all findings
# (CenterNet's class-agnostic size), or one per finding, read at that finding's own peaks.
SizeMaps = Literal["shared", "per_finding"]
SIZE_MAPS: tuple[str, ...] = ("shared", "per_finding")


def conv_gn_relu(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """3x3 conv -> GroupNorm -> ReLU (GroupNorm: independent of the batch, which may mix missing images).
    Spatial size kept at stride 1 for any ``dilation`` (padding = dilation)."""
    groups = math.gcd(8, out_channels)
    return nn.Sequential(
        nn.Conv2d(
            in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
        ),
        nn.GroupNorm(groups, out_channels),
        nn.ReLU(inplace=True),
    )


def coordinate_channels(batch: int, height: int, width: int, like: Tensor) -> Tensor:
    """[B, 2, h, w]: normalised x and y of each cell centre (CoordConv), so position is explicit."""
    xs = (torch.arange(width, device=like.device, dtype=like.dtype) + 0.5) / width
    ys = (torch.arange(height, device=like.device, dtype=like.dtype) + 0.5) / height
    grid = torch.stack([xs.expand(height, width), ys[:, None].expand(height, width)])
    return grid.expand(batch, 2, height, width)


def decode_boxes(offsets: Tensor, log_sizes: Tensor) -> Tensor:
    """Dense box at every cell: offsets [B, 2, h, w] in cell units, log sizes [B, 2, h, w] (log cells)
    -> boxes [B, h, w, 4] normalised (x0, y0, x1, y1) clipped to [0, 1]."""
    _, _, h, w = offsets.shape
    cols = torch.arange(w, device=offsets.device, dtype=offsets.dtype)
    rows = torch.arange(h, device=offsets.device, dtype=offsets.dtype)
    cx = (cols[None, None, :] + offsets[:, 0]) / w
    cy = (rows[None, :, None] + offsets[:, 1]) / h
    size = log_sizes.clamp(*LOG_SIZE_RANGE).exp()
    half_w, half_h = size[:, 0] / (2 * w), size[:, 1] / (2 * h)
    return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1).clamp(0.0, 1.0)


def decode_class_boxes(offsets: Tensor, log_sizes: Tensor) -> Tensor:
    """Dense box of each size map at every cell: offsets [B, 2, h, w], log sizes [B, 2K, h, w]
    (K = 1 shared map or one per finding, channels (w, h) of map 0, then of map 1, ...)
    -> boxes [B, K, h, w, 4] (:func:`decode_boxes` per map, all with the same offsets)."""
    b, _, h, w = offsets.shape
    k = log_sizes.shape[1] // 2
    if k == 1:
        return decode_boxes(offsets, log_sizes)[:, None]
    per_map = offsets[:, None].expand(b, k, 2, h, w).reshape(b * k, 2, h, w)
    return decode_boxes(per_map, log_sizes.reshape(b * k, 2, h, w)).reshape(b, k, h, w, 4)


def heatmap_peaks(heatmaps: Tensor) -> Tensor:
    """Centre probabilities kept only at 3 x 3 local maxima (CenterNet's max-pool NMS), zero elsewhere:
    logits [B, C, h, w] -> [B, C, h, w] in [0, 1]."""
    heat = torch.sigmoid(heatmaps)
    return heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)


class LocalizationHead(nn.Module):
    """Dense per-finding detection (CenterNet) on a stride-``stride`` map, steered by the fused vector.

    1. grid branch: ``ReLU(FiLM(conv1x1(grid), context))`` (text evidence scales and shifts the
       image features), upsampled (bilinear) to the stride-``stride`` map;
    2. image branch: log2(stride) strided 3x3 convs on the image itself, the high-resolution
       detail the encoder's coarse grid (stride 16 for ``small_cnn``) lacks;
    3. both + two coordinate channels -> two 3x3 convs (then one dilated 3x3 conv per entry of
       ``dilations``: context for boxes larger than the convs' 5 x 5 cells, e.g. a pneumothorax or a
       large effusion, at the map's resolution) -> three 1x1 outputs per cell:
       ``heatmaps`` [B, C, h, w] (centre logits per finding), ``log_sizes`` [B, 2, h, w]
       (box width / height in log cells), ``offsets`` [B, 2, h, w] (centre within the cell, sigmoid).
       With ``size_maps="per_finding"`` ``log_sizes`` is [B, 2C, h, w], one (w, h) pair per finding
       (finding c at channels 2c, 2c + 1), and a finding's boxes read its own pair; the offsets
       stay shared (a centre's position in its cell does not depend on the finding).

    :attr:`LocalizationOutput.boxes` [B, C, 4] is the box at each finding's highest heatmap
    cell (the one-box-per-finding view that serving and explanations read); :meth:`detect`
    gives several scored boxes per finding.

    Args:
        grid_dim: channels G of the encoder's grid.
        context_dim: width of the fused vector.
        num_labels: finding classes C.
        hidden_dim: channels of the head's feature map.
        dropout: unused by the convolutions; kept for the factory's common signature.
        in_channels: image channels of the image branch.
        stride: output stride of the head's maps (a power of two >= 2).
        max_detections: boxes kept per study by :meth:`detect`.
        nms_iou: IoU above which a lower-scored box of the same finding is suppressed.
        min_score: boxes scored below this are dropped by :meth:`detect`.
        score: ``heatmap`` (a box's score is its heatmap peak) or ``heatmap_x_probability``
            (the peak times the finding's classifier probability, when :meth:`forward` is given
            the classification logits).
        size_maps: ``shared`` (one size map for all findings, CenterNet's class-agnostic size)
            or ``per_finding`` (one per finding: findings that share centres get their own sizes).
        dilations: dilation of each extra 3x3 conv of the trunk (none by default; ``(2, 4)`` widens
            the receptive field from 5 x 5 to 17 x 17 cells).
    """

    def __init__(
        self,
        grid_dim: int,
        context_dim: int,
        num_labels: int,
        hidden_dim: int = 64,
        dropout: float = 0.1,
        *,
        in_channels: int = 1,
        stride: int = 8,
        max_detections: int = 50,
        nms_iou: float = 0.5,
        min_score: float = 0.01,
        score: BoxScore = "heatmap",
        size_maps: SizeMaps = "shared",
        dilations: Sequence[int] = (),
    ) -> None:
        super().__init__()
        steps = round(math.log2(stride))
        if stride < 2 or 2**steps != stride:
            raise ValueError(f"stride must be a power of two >= 2, got {stride}")
        if score not in BOX_SCORES:
            raise ValueError(f"score must be one of {BOX_SCORES}, got {score!r}")
        if size_maps not in SIZE_MAPS:
            raise ValueError(f"size_maps must be one of {SIZE_MAPS}, got {size_maps!r}")
        self.num_labels = num_labels
        self.stride = stride
        self.max_detections = max_detections
        self.nms_iou = nms_iou
        self.min_score = min_score
        self.score = score
        self.size_maps = size_maps
        self.grid_proj = nn.Conv2d(grid_dim, hidden_dim, 1)
        self.film = nn.Linear(context_dim, 2 * hidden_dim)  # starts as the identity (_init_outputs)
        widths = [min(hidden_dim, 16 * 2**i) for i in range(steps - 1)] + [hidden_dim]
        stem, channels = [], in_channels
        for width in widths:
            stem.append(conv_gn_relu(channels, width, stride=2))
            channels = width
        self.image_branch = nn.Sequential(*stem)
        self.trunk = nn.Sequential(
            conv_gn_relu(2 * hidden_dim + 2, hidden_dim),
            conv_gn_relu(hidden_dim, hidden_dim),
            *(conv_gn_relu(hidden_dim, hidden_dim, dilation=d) for d in dilations),
        )
        self.heatmap = nn.Conv2d(hidden_dim, num_labels, 1)
        self.size = nn.Conv2d(hidden_dim, 2 * (num_labels if size_maps == "per_finding" else 1), 1)
        self.offset = nn.Conv2d(hidden_dim, 2, 1)
        self._init_outputs()

    def _init_outputs(self) -> None:
        """FiLM as the identity, the heatmap bias at the prior, the size bias at one cell."""
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        nn.init.constant_(cast(Tensor, self.heatmap.bias), -math.log((1 - HEATMAP_PRIOR) / HEATMAP_PRIOR))
        nn.init.zeros_(cast(Tensor, self.size.bias))

    def reset_parameters(self) -> None:
        """Draw every weight afresh (PyTorch's default initialisation of each layer, then the head's
        own), from the global random generator: the head as built, e.g. before a refit."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear, nn.GroupNorm)):
                module.reset_parameters()
        self._init_outputs()

    def features(self, grid: Tensor, context: Tensor, image: Tensor) -> Tensor:
        """grid [B, G, h', w'], context [B, Dc], image [B, 1, H, W] -> features [B, hidden, H/s, W/s]."""
        gamma, beta = self.film(context)[:, :, None, None].chunk(2, dim=1)
        semantic = torch.relu(self.grid_proj(grid) * (1 + gamma) + beta)
        detail = self.image_branch(image)
        b, _, h, w = detail.shape
        semantic = F.interpolate(semantic, size=(h, w), mode="bilinear", align_corners=False)
        return self.trunk(torch.cat([semantic, detail, coordinate_channels(b, h, w, detail)], dim=1))

    def forward(
        self, grid: Tensor, context: Tensor, image: Tensor, class_logits: Tensor | None = None
    ) -> LocalizationOutput:
        """grid [B, G, h', w'], context [B, Dc], image [B, 1, H, W], optional classification logits
        [B, C] (read only with ``score="heatmap_x_probability"``, never differentiated through)
        -> :class:`LocalizationOutput` (dense maps at H/stride x W/stride and the top box of each finding)."""
        features = self.features(grid, context, image)
        heatmaps = self.heatmap(features)
        log_sizes = self.size(features)
        offsets = torch.sigmoid(self.offset(features))
        dense = decode_class_boxes(offsets, log_sizes)  # [B, K, h, w, 4], K = 1 or C
        b, c, h, w = heatmaps.shape
        top_logit, top_cell = heatmaps.flatten(2).max(dim=-1)  # [B, C]
        boxes = torch.gather(dense.reshape(b, -1, h * w, 4).expand(b, c, h * w, 4), 2,
                             top_cell[..., None, None].expand(b, c, 1, 4)).squeeze(2)  # fmt: skip
        gate = None
        if self.score == "heatmap_x_probability" and class_logits is not None:
            gate = torch.sigmoid(class_logits.detach())
        scores = torch.sigmoid(top_logit) * (gate if gate is not None else 1.0)
        return LocalizationOutput(
            boxes=boxes,
            scores=scores,
            heatmaps=heatmaps,
            log_sizes=log_sizes,
            offsets=offsets,
            score_gate=gate,
            peaks=top_logit,
        )

    @torch.no_grad()
    def detect(self, output: LocalizationOutput) -> Detections:
        """Several scored boxes per finding: peaks of each heatmap (3 x 3 local maxima), times
        ``output.score_gate`` [B, C] when set, the ``max_detections`` best per study, those below
        ``min_score`` dropped, then class-wise IoU NMS (``monai.data.box_utils.batched_nms``).
        Padded to ``max_detections`` with label -1."""
        from monai.data.box_utils import batched_nms

        peaks = heatmap_peaks(output.heatmaps)
        if output.score_gate is not None:
            peaks = peaks * output.score_gate[:, :, None, None]
        b, c, h, w = peaks.shape
        k = min(self.max_detections, c * h * w)
        scores, index = peaks.flatten(1).topk(k, dim=1)  # [B, K] over classes x cells
        labels, cells = index // (h * w), index % (h * w)
        dense = decode_class_boxes(output.offsets, output.log_sizes)  # [B, K, h, w, 4], K = 1 or C
        maps = dense.shape[1]
        cells = cells if maps == 1 else index  # a finding's own size map: index = label * h * w + cell
        boxes = torch.gather(dense.reshape(b, maps * h * w, 4), 1, cells[..., None].expand(b, k, 4))
        out_boxes = boxes.new_zeros(b, self.max_detections, 4)
        out_scores = scores.new_zeros(b, self.max_detections)
        out_labels = labels.new_full((b, self.max_detections), -1)
        for i in range(b):
            keep = torch.nonzero(scores[i] >= self.min_score).flatten()
            if len(keep):
                keep = keep[batched_nms(boxes[i, keep], scores[i, keep], labels[i, keep], self.nms_iou)]
            n = len(keep)  # batched_nms returns them by decreasing score
            out_boxes[i, :n], out_scores[i, :n], out_labels[i, :n] = (
                boxes[i, keep],
                scores[i, keep],
                labels[i, keep],
            )
        return Detections(boxes=out_boxes, scores=out_scores, labels=out_labels)
