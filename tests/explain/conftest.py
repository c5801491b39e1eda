"""Fixtures of the explanation tests."""

from __future__ import annotations

import pytest
import torch

from explain.helpers import make_batch


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)  # one intra-op thread is set for every test in tests/conftest.py


@pytest.fixture
def batch():
    return make_batch(batch_size=3)
