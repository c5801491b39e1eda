"""Fixtures of the explanation tests."""

from __future__ import annotations

import pytest
import torch

from explain.helpers import make_batch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared; tiny models gain nothing from threads
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def batch():
    return make_batch(batch_size=3)
