"""Embed studies, images and free text into the joint space of a pretraining run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medmodal.data.dataset import make_dataloader, normalize_image, pad_ids, resize_image
from medmodal.data.images import read_image
from medmodal.data.types import Study
from medmodal.training.pretrain import PretrainedRun, pretraining_dataset


@dataclass
class StudyEmbeddings:
    """Joint-space embeddings of N studies.

    ids: N study ids. image: float32 [N, P] unit norm (rows without an image are zeros).
    text: float32 [N, P] unit norm (rows without report text are zeros).
    has_image / has_text: bool [N]. reports: N report texts (``pretrain.text_fields``).
    """

    ids: list[str]
    image: np.ndarray
    text: np.ndarray
    has_image: np.ndarray
    has_text: np.ndarray
    reports: list[str]


def _device(run: PretrainedRun) -> torch.device:
    return next(run.model.parameters()).device


@torch.no_grad()
def embed_studies(run: PretrainedRun, studies: list[Study], batch_size: int = 64) -> StudyEmbeddings:
    """Image and report embeddings of ``studies`` (the report = ``pretrain.text_fields``)."""
    if not studies:
        raise ValueError("no studies to embed")
    dataset = pretraining_dataset(studies, run.tokenizer, run.labels, run.config, train=False)
    loader = make_dataloader(dataset, batch_size=batch_size, shuffle=False)
    device = _device(run)
    images, texts, has_image, has_text = [], [], [], []
    for batch in loader:
        present_image, present_text = batch["has_image"], batch["has_text"]
        image = run.model.embed_images(batch["image"].to(device)).cpu()
        text = run.model.embed_texts(batch["text_ids"].to(device), batch["text_mask"].to(device)).cpu()
        images.append(image * present_image[:, None])
        texts.append(text * present_text[:, None])
        has_image.append(present_image)
        has_text.append(present_text)
    fields = run.config.pretrain.text_fields
    return StudyEmbeddings(
        ids=[s.id for s in studies],
        image=torch.cat(images).numpy().astype(np.float32),
        text=torch.cat(texts).numpy().astype(np.float32),
        has_image=torch.cat(has_image).numpy().astype(bool),
        has_text=torch.cat(has_text).numpy().astype(bool),
        reports=[s.text(fields, sep=" ") for s in studies],
    )


@torch.no_grad()
def embed_texts(run: PretrainedRun, texts: list[str]) -> np.ndarray:
    """Free texts (queries, prompts) -> float32 [len(texts), P] unit norm."""
    length = run.config.pretrain.max_text_tokens
    ids, masks = zip(*(pad_ids(run.tokenizer.encode(t, length), length, run.tokenizer.pad_id) for t in texts))
    device = _device(run)
    embeddings = run.model.embed_texts(torch.stack(ids).to(device), torch.stack(masks).to(device))
    return embeddings.cpu().numpy().astype(np.float32)


@torch.no_grad()
def embed_image_file(run: PretrainedRun, path: str | Path) -> np.ndarray:
    """An image file (PNG / JPEG / DICOM) -> float32 [1, P] unit norm, preprocessed like the training data."""
    size = run.config.data.image_size
    # The dataset stores images as uint8 after resizing; do the same so a query equals its indexed copy.
    pixels = (resize_image(read_image(path, reduce_to=size).pixels, size) * 255.0).round() / 255.0
    image = normalize_image(pixels)[None].to(_device(run))
    return run.model.embed_images(image).cpu().numpy().astype(np.float32)
