"""Seed and thread settings for the model tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)  # one intra-op thread is set for every test in tests/conftest.py
