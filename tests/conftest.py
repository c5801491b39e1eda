"""Shared fixtures: a tiny synthetic dataset and a tiny trained run (built once per session)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Two cores here: one intra-op thread per test process keeps the suite predictable.
torch.set_num_threads(1)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY_OVERRIDES = {
    "data.image_size": 64,
    "data.max_text_tokens": 24,
    "data.max_target_tokens": 40,
    "model.embed_dim": 32,
    "train.epochs": 2,
    "train.batch_size": 16,
    "train.progress_bar": False,
    "train.early_stopping_patience": 0,
    "evaluate.beam_size": 2,
    "evaluate.max_generate_tokens": 30,
}


def tiny_config(**extra):
    from medmodal.config import Config, apply_overrides

    return apply_overrides(Config(), {**TINY_OVERRIDES, **extra})


@pytest.fixture(scope="session", autouse=True)
def private_index_key(tmp_path_factory) -> None:
    """Index caches are signed with a per-user key (medmodal.retrieval.index.local_key): the tests'
    key lives in their temporary folder, not in ~/.cache."""
    os.environ.setdefault("MEDMODAL_KEY_FILE", str(tmp_path_factory.mktemp("keys") / "index.key"))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """120 synthetic studies at 64 px (all splits present)."""
    from medmodal.data.synthetic import generate_dataset

    out = tmp_path_factory.mktemp("tiny_data")
    generate_dataset(out, n=120, seed=1, image_size=64)
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory) -> Path:
    """A fused model trained 2 epochs on ``tiny_data``."""
    from medmodal.training.trainer import train

    out = tmp_path_factory.mktemp("tiny_run") / "run"
    train(tiny_data, tiny_config(), out)
    return out
