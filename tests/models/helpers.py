"""Tiny sizes, batches and checks shared by the model tests (CPU, fast)."""

from __future__ import annotations

import torch

VOCAB = 50
PAD, BOS, EOS = 0, 1, 2
NUM_LABELS = 3
IMAGE_SIZE = 32


def make_batch(
    batch_size: int = 4,
    image_size: int = IMAGE_SIZE,
    text_len: int = 8,
    target_len: int = 10,
    lengths: list[int] | None = None,
    seed: int = 0,
) -> dict:
    """A batch dict with DEVELOPERS.md keys; text row i has ``lengths[i]`` real tokens (right padded)."""
    g = torch.Generator().manual_seed(seed)
    lengths = lengths if lengths is not None else [text_len - (i % 3) for i in range(batch_size)]
    text_ids = torch.randint(3, VOCAB, (batch_size, text_len), generator=g)
    text_mask = torch.arange(text_len)[None, :] < torch.tensor(lengths)[:, None]
    text_ids = text_ids.masked_fill(~text_mask, PAD)
    target_ids = torch.randint(3, VOCAB, (batch_size, target_len), generator=g)
    target_ids[:, 0] = BOS
    target_ids[:, -1] = EOS
    return {
        "id": [f"s{i}" for i in range(batch_size)],
        "image": torch.randn(batch_size, 1, image_size, image_size, generator=g),
        "has_image": torch.ones(batch_size, dtype=torch.bool),
        "text_ids": text_ids,
        "text_mask": text_mask,
        "has_text": text_mask.any(dim=1),
        "labels": torch.randint(0, 2, (batch_size, NUM_LABELS), generator=g).float(),
        "target_ids": target_ids,
    }


def assert_all_params_get_grad(module: torch.nn.Module, skip: tuple[str, ...] = ()) -> None:
    """Every trainable parameter (names not starting with ``skip``) has a finite, non-None gradient."""
    missing = [
        name
        for name, p in module.named_parameters()
        if p.requires_grad
        and not name.startswith(skip)
        and (p.grad is None or not torch.isfinite(p.grad).all())
    ]
    assert not missing, f"no (finite) gradient for: {missing}"
