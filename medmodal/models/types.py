"""Feature containers passed between encoders, fusion layers and heads.

Shapes use B = batch, L = text length, D = feature width, h x w = image grid,
C = number of finding labels, T = target (generated) length, V = vocabulary size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class ImageFeatures:
    """Output of an image encoder.

    vector: [B, D] global image descriptor.
    grid:   [B, D_grid, h, w] spatial feature map (lesion detail and layout).
    """

    vector: Tensor
    grid: Tensor


@dataclass
class TextFeatures:
    """Output of a text encoder.

    vector:    [B, D] report descriptor.
    sequence:  [B, L, D_seq] per-token features.
    mask:      [B, L] bool, True at real (non-padding) tokens.
    attention: [B, L] word-level attention weights (sum to 1 over real tokens),
               or None for encoders without an attention pooling.
    """

    vector: Tensor
    sequence: Tensor
    mask: Tensor
    attention: Tensor | None = None


@dataclass
class FusionOutput:
    """Output of a fusion layer.

    vector: [B, D_fused] joint representation used by the heads.
    logits: [B, C] decision-level class logits (late fusion only), else None.
    extras: anything worth inspecting (gate values, cross-attention maps, ...).
    """

    vector: Tensor
    logits: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class LocalizationOutput:
    """Dense outputs of the localization head (CenterNet style) on its h x w map.

    boxes:     [B, C, 4] the box at each finding's highest heatmap cell, normalised xyxy.
    scores:    [B, C] sigmoid of that cell's heatmap logit (times ``score_gate`` when set).
    heatmaps:  [B, C, h, w] centre logits per finding.
    log_sizes: [B, 2, h, w] log of the box width and height, in cells, at every cell ([B, 2C, h, w]
               with ``model.localization.size_maps: per_finding``: channels 2c, 2c+1 are finding c's).
    offsets:   [B, 2, h, w] the box centre's position inside the cell, in [0, 1] (x, y).
    score_gate: [B, C] the classifier's probability of each finding when boxes are scored
               ``heatmap_x_probability`` (``scores`` and ``detect`` multiply by it), else None.
    peaks:     [B, C] each finding's highest heatmap logit (classification evidence,
               ``models/peak_evidence.py``).
    """

    boxes: Tensor
    scores: Tensor
    heatmaps: Tensor
    log_sizes: Tensor
    offsets: Tensor
    score_gate: Tensor | None = None
    peaks: Tensor | None = None


@dataclass
class Detections:
    """Several scored boxes per study, best first, padded to K.

    boxes:  [B, K, 4] normalised xyxy; scores: [B, K] in [0, 1]; labels: [B, K] finding index,
    -1 at padding.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor


@dataclass
class ModelOutput:
    """Everything a :class:`~medmodal.models.multimodal.MultimodalModel` forward returns.

    logits:         [B, C] disease classification logits (None only when the model was
                    built without a classification head, ``heads.classification: false``).
    image_logits:   [B, C] logits of the auxiliary image-only head (None if no image branch).
    text_logits:    [B, C] logits of the auxiliary text-only head (None if no text branch).
    boxes:          [B, C, 4] one box per finding class (the best-scored one), normalised
                    (x0, y0, x1, y1) in [0, 1]; None without a localization head.
    box_heatmaps:   [B, C, h, w] per-class centre logits behind the boxes, or None.
    localization:   the localization head's dense outputs (:class:`LocalizationOutput`), or None.
    caption_logits: [B, T-1, V] next-token logits under teacher forcing, or None.
    word_attention: [B, L] word attention of the text encoder, or None.
    fusion:         the fusion layer's output (gates, attention maps in ``extras``).
    image_present:  [B] bool, the model saw the sample's image (present in the batch and not
                    hidden by modality dropout); elsewhere the learned placeholder stood in.
                    Mask per-sample image losses (auxiliary, localization) with it. None
                    without an image branch.
    text_present:   [B] bool, the same for the text. None without a text branch.
    fused:          [B, D_fused] the vector the heads read (fusion output, or the projection
                    of a single-modality model); domain adaptation's site classifier reads it.
    image_embedding / text_embedding:
                    [B, P] unit-norm projections into the shared space of a coordinated model
                    (``representation: coordinated``), else None.
    alignment_scale: scalar 1 / temperature of the alignment logits, or None.
    stacked_logits: [B, C] the stacked wide pathways' share of ``logits`` (``model.wide.fit:
                    stacked``), else None: ``logits`` = deep head * ``deep_weight`` (eval mode) + these.
    """

    logits: Tensor | None
    image_logits: Tensor | None = None
    text_logits: Tensor | None = None
    boxes: Tensor | None = None
    box_heatmaps: Tensor | None = None
    localization: LocalizationOutput | None = None
    caption_logits: Tensor | None = None
    word_attention: Tensor | None = None
    fusion: FusionOutput | None = None
    image_present: Tensor | None = None
    text_present: Tensor | None = None
    fused: Tensor | None = None
    image_embedding: Tensor | None = None
    text_embedding: Tensor | None = None
    alignment_scale: Tensor | None = None
    stacked_logits: Tensor | None = None


@dataclass
class GenerationOutput:
    """Output of report generation (greedy or beam search).

    ids:       [B, T'] generated token ids without BOS, each row ending at its EOS
               (included) and padded with ``pad_id`` after it; a row that reached
               ``max_len`` without EOS has no EOS.
    attention: [B, T', N] attention over the N memory regions for each generated token
               (zeros at padding), or None for decoders without a usable attention map.
    scores:    [B] length-normalised log-probability of each returned sequence,
               ``sum(log p) / length ** length_penalty``.
    """

    ids: Tensor
    attention: Tensor | None = None
    scores: Tensor | None = None
