"""Image explanations: Grad-CAM per finding and the report decoder's attention per sentence.

Grad-CAM (Selvaraju et al., arXiv 1610.02391) with captum's ``LayerGradCam`` on the image
encoder's trunk (``image_encoder.body``, the feature map ``[B, C, h, w]`` from which both the
encoder's vector and its grid are read), for the fused model's logit of one finding, with
the rest of the batch (text, modality flags) as given. Maps are ReLU'd and upsampled
(bilinear) to the input size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medmodal.models.multimodal import MultimodalModel


def saliency_layer(model: MultimodalModel) -> nn.Module:
    """The layer Grad-CAM reads: the image encoder's convolutional trunk."""
    if model.image_encoder is None:
        raise ValueError("image explanations need a model with an image encoder")
    body = getattr(model.image_encoder, "body", None)
    if body is None:
        raise ValueError(f"{type(model.image_encoder).__name__} has no 'body' feature-map trunk to explain")
    return body


def grad_cam(
    model: MultimodalModel, batch: Mapping[str, Any], classes: Sequence[int], layer: nn.Module | None = None
) -> Tensor:
    """Grad-CAM maps of the fused logits of ``classes`` (K of them).

    Args:
        model: in eval mode.
        batch: batch dict with ``image`` [B, 1, H, W] (and the text / flags the model reads).
        classes: class indices to explain.
        layer: the feature layer; default :func:`saliency_layer`.

    Returns:
        [B, K, H, W] non-negative maps (not normalised; 0 where the model saw no image).
    """
    from captum.attr import LayerAttribution, LayerGradCam

    present = batch["has_image"].bool() if "has_image" in batch else None
    if present is not None and not bool(present.all()):
        # The model encodes only the rows with an image; explain those, zeros elsewhere.
        maps = batch["image"].new_zeros(len(present), len(classes), *batch["image"].shape[-2:])
        if bool(present.any()):
            maps[present] = grad_cam(model, select_rows(batch, present), classes, layer)
        return maps
    layer = layer if layer is not None else saliency_layer(model)
    image = batch["image"]
    rest = {k: v for k, v in batch.items() if k != "image"}

    def logits_of(image: Tensor) -> Tensor:
        return model({**rest, "image": image}).logits

    cam = LayerGradCam(logits_of, layer)
    maps = []
    with torch.enable_grad():
        for c in classes:
            attribution = cam.attribute(image, target=int(c), relu_attributions=True)  # [B, 1, h, w]
            maps.append(LayerAttribution.interpolate(attribution, tuple(image.shape[-2:]), "bilinear"))
    return torch.cat(maps, dim=1).detach().clamp_min(0.0)


def select_rows(batch: Mapping[str, Any], keep: Tensor) -> dict[str, Any]:
    """The rows of ``batch`` where ``keep`` [B] bool is True (tensors and per-row lists)."""
    size = keep.shape[0]
    rows = keep.nonzero().flatten().tolist()
    return {
        k: v[keep]
        if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == size
        else [v[i] for i in rows]
        if isinstance(v, list) and len(v) == size
        else v
        for k, v in batch.items()
    }


def normalise_map(saliency: Tensor) -> Tensor:
    """[..., H, W] -> each map scaled to [0, 1] by its maximum (all-zero maps stay zero)."""
    peak = saliency.flatten(-2).amax(-1)[..., None, None]
    return saliency / peak.clamp_min(1e-12)


# ------------------------------------------------------------ decoder attention
@dataclass
class SentenceAttention:
    """One generated sentence and where the decoder looked while writing it.

    text: the sentence. attention: [H, W] mean attention over its words, upsampled to the image.
    """

    text: str
    attention: Tensor


def sentence_spans(ids: Sequence[int], stop_ids: set[int], end_ids: set[int]) -> list[tuple[int, int]]:
    """[start, end) index spans of sentences in generated ``ids``: a sentence ends after a
    token of ``stop_ids`` ("."); generation ends at a token of ``end_ids`` (EOS / PAD)."""
    spans, start = [], 0
    for i, token in enumerate(ids):
        if token in end_ids:
            break
        if token in stop_ids:
            spans.append((start, i + 1))
            start = i + 1
    else:
        i = len(ids)
    if start < i:
        spans.append((start, i))
    return spans


class NoAttentionMap(ValueError):
    """The model writes its reports without an attention map over the image: retrieved from the
    training split (``report_conditioning.reports: retrieved``), or by a decoder that has none."""


def decoder_attention_by_sentence(
    model: MultimodalModel,
    batch: Mapping[str, Any],
    tokenizer: Any,
    *,
    max_len: int = 80,
    beam_size: int = 1,
    max_sentences: int = 12,
) -> list[list[SentenceAttention]]:
    """Generate each study's report and average the decoder's attention over the image grid
    per sentence. Returns per study a list of :class:`SentenceAttention` (maps [H, W]): at most
    ``max_sentences``, sentences without a word (a lone ".") skipped."""
    if model.decoder is None or model.image_encoder is None:
        raise ValueError(
            "decoder attention over image regions needs a model with a report decoder and an image encoder"
        )
    generation = model.generate(batch, max_len=max_len, beam_size=beam_size)
    if generation.attention is None:
        if model.report_bank is not None and len(model.report_bank) > 0:
            raise NoAttentionMap(
                "the report is retrieved from the training split (report_conditioning.reports: retrieved): "
                "no decoder attention to map"
            )
        raise NoAttentionMap(f"the decoder {model.part_names.get('decoder', '')!r} returns no attention map")
    with torch.no_grad():
        grid_shape = model.image_encoder(model.encoder_input(batch["image"][:1])).grid.shape[-2:]
    height, width = batch["image"].shape[-2:]
    stop = {i for i in (tokenizer.token_to_id("."),) if i is not None}
    end = {tokenizer.eos_id, tokenizer.pad_id}
    results = []
    for ids, attention in zip(generation.ids.tolist(), generation.attention):
        sentences: list[SentenceAttention] = []
        for start, stop_at in sentence_spans(ids, stop, end):
            text = tokenizer.decode(ids[start:stop_at])
            if len(sentences) == max_sentences or not any(ch.isalnum() for ch in text):
                continue
            grid = attention[start:stop_at].mean(0).reshape(1, 1, *grid_shape)
            upsampled = F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)[0, 0]
            sentences.append(SentenceAttention(text=text, attention=upsampled))
        results.append(sentences)
    return results


def occlusion_map(
    model: MultimodalModel, batch: Mapping[str, Any], classes: Sequence[int], window: int | None = None
) -> Tensor:
    """Occlusion sensitivity (captum ``Occlusion``): the drop of each finding's fused logit when
    a ``window`` x ``window`` patch (default H/4, stride half of it) is set to 0 (the mean grey of
    the normalised input). Model-agnostic and perturbation-based, so it does not share
    Grad-CAM's dependence on one layer's gradients. -> [B, K, H, W], clipped at 0."""
    from captum.attr import Occlusion

    image = batch["image"]
    window = window or max(1, image.shape[-1] // 4)
    stride = max(1, window // 2)
    rest = {k: v for k, v in batch.items() if k != "image"}

    def logits_of(image: Tensor) -> Tensor:
        size = image.shape[0]
        expanded = {
            k: (
                v.repeat(size // v.shape[0], *[1] * (v.dim() - 1))
                if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] != size
                else v
            )
            for k, v in rest.items()
        }
        return model({**expanded, "image": image}).logits

    occlusion = Occlusion(logits_of)
    with torch.no_grad():
        maps = [
            occlusion.attribute(
                image,
                target=int(c),
                sliding_window_shapes=(1, window, window),
                strides=(1, stride, stride),
                baselines=0.0,
            )
            for c in classes
        ]
    return torch.cat(maps, dim=1).clamp_min(0.0)


ImageMethod = Callable[[MultimodalModel, Mapping[str, Any], Sequence[int]], Tensor]
IMAGE_METHODS: dict[str, ImageMethod] = {"gradcam": grad_cam, "occlusion": occlusion_map}


def image_saliency(
    model: MultimodalModel, batch: Mapping[str, Any], classes: Sequence[int], method: str = "gradcam"
) -> Tensor:
    """[B, K, H, W] saliency of ``classes`` by ``method`` (``gradcam`` or ``occlusion``)."""
    if method not in IMAGE_METHODS:
        raise ValueError(
            f"unknown image explanation method '{method}'; use one of {', '.join(IMAGE_METHODS)}"
        )
    return IMAGE_METHODS[method](model, batch, classes)
