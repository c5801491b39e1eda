"""Tiny models and batches for the explanation tests (CPU, fast)."""

from __future__ import annotations

import torch

from medmodal.config import Config, apply_overrides
from medmodal.models.multimodal import create_model

VOCAB, PAD, BOS, EOS = 40, 0, 2, 3
NUM_LABELS = 3


def make_batch(batch_size: int = 3, image_size: int = 32, text_len: int = 8, seed: int = 0) -> dict:
    """A batch dict with the DEVELOPERS.md keys; row i has ``text_len - i % 3`` real tokens."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([text_len - (i % 3) for i in range(batch_size)])
    mask = torch.arange(text_len)[None, :] < lengths[:, None]
    return {
        "id": [f"s{i}" for i in range(batch_size)],
        "image": torch.randn(batch_size, 1, image_size, image_size, generator=g),
        "has_image": torch.ones(batch_size, dtype=torch.bool),
        "text_ids": torch.randint(5, VOCAB, (batch_size, text_len), generator=g).masked_fill(~mask, PAD),
        "text_mask": mask,
        "has_text": mask.any(dim=1),
        "labels": torch.randint(0, 2, (batch_size, NUM_LABELS), generator=g).float(),
    }


def tiny_model(
    modalities: str = "both",
    text_encoder: str = "bilstm_attention",
    generation: bool = False,
    seed: int = 0,
    vocab: int = VOCAB,
    widths=(8, 16),
):
    torch.manual_seed(seed)
    cfg = apply_overrides(
        Config(),
        {
            "model.modalities": modalities,
            "model.embed_dim": 16,
            "model.heads.generation": generation,
            "model.text_encoder.name": text_encoder,
            "model.image_encoder.kwargs": {"widths": list(widths), "stem_width": 8},
        },
    )
    model = create_model(
        cfg.model, vocab_size=vocab, num_labels=NUM_LABELS, pad_id=PAD, bos_id=BOS, eos_id=EOS
    )
    return model.eval()
