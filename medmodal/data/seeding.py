"""Seeds derived from several integers (a run's seed, the epoch, a worker or rank)."""

from __future__ import annotations

import numpy as np


def derived_seed(*parts: int) -> int:
    """A 32-bit seed from integers (numpy ``SeedSequence``: well mixed, distinct tuples -> distinct streams)."""
    return int(np.random.SeedSequence([int(p) % 2**63 for p in parts]).generate_state(1)[0])
