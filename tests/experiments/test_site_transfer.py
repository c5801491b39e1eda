from __future__ import annotations

import pytest

from medmodal.config import Config
from medmodal.experiments.site_transfer import site_transfer


def test_no_variant_is_rejected_before_any_training(tmp_path):
    # was: nothing trained, then an AttributeError on the missing test targets
    with pytest.raises(ValueError, match="no variant"):
        site_transfer(tmp_path / "data", Config(), tmp_path / "out", "site_a", [])
    assert not (tmp_path / "out").exists()
