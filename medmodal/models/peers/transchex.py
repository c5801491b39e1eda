"""MONAI's Transchex (Hatamizadeh et al. 2022) built from MONAI's own layers, with no download.

``monai.networks.nets.Transchex`` always calls ``MultiModal.from_pretrained``, which fetches
BERT weights from the Hugging Face hub. Here the same network is assembled from MONAI's parts
(``MultiModal``, ``BertMixedLayer``, ``Pooler``, transformers' ``BertLayer``) with random
initialisation (MONAI's ``init_bert_weights``), split along the contract of our model parts so
it trains through the same trainer, data, splits and metrics as every other model::

    image [B,1,H,W] --transchex_image: patch conv, LayerNorm, + position, vision BertLayers--> patches [B,P,D]
    text ids [B,L]  --transchex_text: [CLS] + ids, BertEmbeddings, language BertLayers-------> tokens [B,L+1,D]
    --transchex (fusion): BertMixedLayers (language <-> vision cross-attention), Pooler([CLS])--> [B,D]
    --> MultimodalModel's classification head (dropout + linear), as Transchex's ``cls_head``

Differences from ``monai.networks.nets.Transchex``, all stated:

- Text: our word-level tokenizer's ids (``medmodal/data/tokenizer.py``), not BERT's WordPiece.
  The word embedding has our vocabulary plus one extra id, ``vocab_size``, used as the [CLS]
  token put in front of every report (the Pooler reads it, as BERT's). With random weights a
  vocabulary-sized embedding is all BERT's embedding is.
- The language layers mask padding with our text mask (MONAI's Transchex passes an all-ones
  mask); the mixed layers attend without a mask, as in MONAI.
- Missing modalities get our learned placeholders, like every medmodal model.
- BERT weights come only from a LOCAL file (``model.text_encoder.pretrained_path``: a BERT
  ``pytorch_model.bin`` / state dict). As in MONAI's ``from_pretrained``, only the keys under
  ``bert.embeddings`` reach the network (MONAI's layer names do not match BERT's encoder);
  BERT's word embeddings are skipped when our vocabulary has another size (they index WordPiece
  ids, not ours).

Width: every part's ``hidden_size`` defaults to its ``out_dim`` (``model.embed_dim``), so one
setting sizes all three; MONAI's default is BERT-base (768, 12 heads). Needs the ``peers``
extra (``pip install medmodal[peers]``: transformers).
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

from medmodal.errors import InputNotFoundError
from medmodal.models.pretrained import PretrainedWeightsError, extract_state_dict, read_weights_file
from medmodal.models.registry import register
from medmodal.models.types import FusionOutput, ImageFeatures, TextFeatures

log = logging.getLogger(__name__)

_MASKED = -10000.0  # additive attention score of a padding token (as MONAI's Transchex)


def bert_config(
    hidden_size: int, num_attention_heads: int, intermediate_size: int | None = None, dropout: float = 0.1,
    *, vocab_size: int = 2, pad_token_id: int = 0, max_position_embeddings: int = 512,
) -> dict[str, Any]:  # fmt: skip
    """The ``bert_config`` dict MONAI's ``MultiModal`` takes (Transchex's defaults otherwise); ``dropout``
    is both BERT's hidden and attention-probability dropout."""
    _require_transformers()
    if hidden_size % num_attention_heads:
        raise ValueError(
            f"hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}"
        )
    return {
        "hidden_size": hidden_size, "num_attention_heads": num_attention_heads,
        "intermediate_size": intermediate_size or 4 * hidden_size, "vocab_size": vocab_size,
        "pad_token_id": pad_token_id, "max_position_embeddings": max_position_embeddings,
        "hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout,
        "hidden_act": "gelu", "initializer_range": 0.02, "layer_norm_eps": 1e-12, "type_vocab_size": 2,
        "position_embedding_type": "absolute", "classifier_dropout": None, "is_decoder": False,
        "add_cross_attention": False, "chunk_size_feed_forward": 0, "_attn_implementation": "eager",
    }  # fmt: skip


def _require_transformers() -> None:
    try:
        import transformers  # noqa: F401
    except ImportError as err:
        raise ImportError("the Transchex peer needs transformers: pip install 'medmodal[peers]'") from err


def _monai_transchex():
    """MONAI's transchex module, imported on first use: importing ``monai.networks.nets`` imports
    transformers' BERT when it is installed (seconds), which no other model should pay for."""
    from monai.networks.nets import transchex

    return transchex


def _bert_layers(config: dict[str, Any], n: int) -> nn.ModuleList:
    """``n`` transformers ``BertLayer``s of ``config`` (eager attention, as MONAI's MultiModal)."""
    multimodal = _monai_transchex().MultiModal(num_language_layers=n, num_vision_layers=0, num_mixed_layers=0,
                                               bert_config=config)  # fmt: skip
    return multimodal.language_encoder


def _run_layers(layers: nn.ModuleList, hidden: Tensor, additive_mask: Tensor | None) -> Tensor:
    """hidden [B, N, D] through BertLayers (additive mask [B, 1, 1, N] or None) -> [B, N, D]."""
    for layer in layers:
        hidden = _monai_transchex().MultiModal._get_hidden_states(layer(hidden, additive_mask))
    return hidden


@register("image_encoder", "transchex_image")
class TranschexImage(nn.Module):
    """Transchex's vision side: patch convolution, LayerNorm, learned positions, vision BertLayers.

    ``forward(image [B, C, H, W]) -> ImageFeatures(vector [B, D] mean of the patch tokens,
    grid [B, D, H/p, W/p] the patch tokens)``; H = W = ``image_size`` (``data.image_size``).
    """

    def __init__(
        self, in_channels: int = 1, out_dim: int = 256, *, image_size: int = 128, patch_size: int = 32,
        hidden_size: int | None = None, num_attention_heads: int = 4, num_vision_layers: int = 2,
        intermediate_size: int | None = None, dropout: float = 0.1,
    ) -> None:  # fmt: skip
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        hidden = hidden_size or out_dim
        config = bert_config(hidden, num_attention_heads, intermediate_size, dropout)
        self.out_dim = self.grid_dim = hidden
        self.side = image_size // patch_size
        self.vision_proj = nn.Conv2d(in_channels, hidden, kernel_size=patch_size, stride=patch_size)
        self.norm_vision_pos = nn.LayerNorm(hidden)
        self.pos_embed_vis = nn.Parameter(torch.zeros(1, self.side * self.side, hidden))
        self.vision_encoder = _bert_layers(config, num_vision_layers)

    def forward(self, image: Tensor) -> ImageFeatures:
        patches = self.vision_proj(image)  # [B, D, h, w]
        if patches.shape[-2:] != (self.side, self.side):
            raise ValueError(f"transchex_image was built for {self.side} x {self.side} patches "
                             f"(image_size kwarg), got images of {tuple(image.shape[-2:])}")  # fmt: skip
        tokens = self.norm_vision_pos(patches.flatten(2).transpose(1, 2)) + self.pos_embed_vis
        tokens = _run_layers(self.vision_encoder, tokens, None)  # [B, P, D]
        grid = tokens.transpose(1, 2).reshape(patches.shape)
        return ImageFeatures(vector=tokens.mean(dim=1), grid=grid)


@register("text_encoder", "transchex_text")
class TranschexText(nn.Module):
    """Transchex's language side: MONAI's ``MultiModal`` with language layers only (BertEmbeddings +
    BertLayers), over ``[CLS] + ids`` (the [CLS] id is ``vocab_size``, one past our vocabulary).

    ``forward(ids [B, L], mask [B, L]) -> TextFeatures(vector [B, D] the [CLS] token,
    sequence [B, L+1, D], mask [B, L+1])``.
    """

    def __init__(
        self, vocab_size: int, out_dim: int = 256, pad_id: int = 0, *, hidden_size: int | None = None,
        num_attention_heads: int = 4, num_language_layers: int = 2, intermediate_size: int | None = None,
        max_position_embeddings: int = 512, dropout: float = 0.1,
    ) -> None:  # fmt: skip
        super().__init__()
        hidden = hidden_size or out_dim
        self.cls_id = vocab_size
        config = bert_config(hidden, num_attention_heads, intermediate_size, dropout, vocab_size=vocab_size + 1,
                             pad_token_id=pad_id, max_position_embeddings=max_position_embeddings)  # fmt: skip
        self.bert = _monai_transchex().MultiModal(num_language_layers, 0, 0, config)
        self.out_dim = self.seq_dim = hidden

    def forward(self, ids: Tensor, mask: Tensor) -> TextFeatures:
        cls = ids.new_full((ids.shape[0], 1), self.cls_id)
        ids = torch.cat([cls, ids], dim=1)
        mask = torch.cat([mask.new_ones((mask.shape[0], 1)), mask.bool()], dim=1)
        additive = (~mask)[:, None, None, :].to(self.bert.embeddings.word_embeddings.weight.dtype) * _MASKED
        sequence, _ = self.bert(ids, None, None, additive)
        return TextFeatures(vector=sequence[:, 0], sequence=sequence, mask=mask)

    def load_local_weights(self, path: str | Path) -> list[str]:
        """Load a LOCAL BERT state dict the way MONAI's ``from_pretrained`` does (``gamma``/``beta``
        renamed, keys under ``bert.``); returns the loaded keys. BERT's word embeddings are skipped
        when the vocabulary sizes differ. Raises if the file is missing or nothing matches."""
        path = Path(path)
        if not path.is_file():
            raise InputNotFoundError(f"BERT weights not found: {path} (a local file; nothing is downloaded)")
        state = extract_state_dict(read_weights_file(path), str(path))
        state = {k.replace("gamma", "weight").replace("beta", "bias"): v for k, v in state.items()}
        state = {k if k.startswith("bert.") else f"bert.{k}": v for k, v in state.items()}
        target = self.state_dict()
        matched = {k: v for k, v in state.items() if k in target and v.shape == target[k].shape}
        skipped = sorted(k for k in state if k in target and k not in matched)
        if not matched:
            raise PretrainedWeightsError(
                f"{path}: no BERT key matches transchex_text (keys like {sorted(state)[:3]})"
            )
        self.load_state_dict(matched, strict=False)
        log.info("transchex_text: %d tensors from %s; skipped (other shape): %s", len(matched), path, skipped)
        return sorted(matched)


@register("fusion", "transchex")
class TranschexFusion(nn.Module):
    """Transchex's mixed layers (language and vision tokens cross-attend, no mask, as in MONAI) and its
    Pooler over the [CLS] token: (patches [B, P, D] from the grid, tokens [B, L+1, D]) -> vector [B, D].

    Needs ``transchex_image`` and ``transchex_text`` of the same width (grid_dim = seq_dim = D).
    """

    def __init__(
        self, image_dim: int, text_dim: int, grid_dim: int, seq_dim: int, out_dim: int = 256,
        num_labels: int = 1, *, num_attention_heads: int = 4, num_mixed_layers: int = 2, dropout: float = 0.1,
    ) -> None:  # fmt: skip
        super().__init__()
        if grid_dim != seq_dim:
            raise ValueError(f"transchex fusion needs image and text tokens of one width, got {grid_dim} and {seq_dim}"
                             " (use transchex_image and transchex_text of the same hidden_size)")  # fmt: skip
        monai = _monai_transchex()
        config = _config_object(bert_config(seq_dim, num_attention_heads, dropout=dropout))
        self.mixed_encoder = nn.ModuleList(monai.BertMixedLayer(config) for _ in range(num_mixed_layers))
        # MONAI's init_bert_weights (it reads only config.initializer_range), as MultiModal applies it
        holder = SimpleNamespace(config=config)
        self.mixed_encoder.apply(lambda m: monai.BertPreTrainedModel.init_bert_weights(holder, m))
        self.pooler = monai.Pooler(hidden_size=seq_dim)
        self.out_dim = seq_dim

    def forward(self, image: ImageFeatures, text: TextFeatures) -> FusionOutput:
        language, vision = text.sequence, image.grid.flatten(2).transpose(1, 2)
        for layer in self.mixed_encoder:
            language, vision = layer(language, vision)
        return FusionOutput(vector=self.pooler(language))


def _config_object(config: dict[str, Any]) -> Any:
    from transformers import BertConfig

    return BertConfig(**config)
