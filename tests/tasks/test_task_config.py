"""The typed task configs reject bad values with the field named."""

from __future__ import annotations

import pytest

from medmodal.config import ConfigError
from medmodal.tasks.config import SegmentationConfig, VQAConfig, load_task_config, with_overrides


def test_defaults_and_overrides():
    config = with_overrides(VQAConfig(), {"train.epochs": 3, "fusion.name": "gated", "use_image": None})
    assert (config.train.epochs, config.fusion.name, config.use_image) == (3, "gated", True)


@pytest.mark.parametrize(
    ("cls", "overrides", "message"),
    [
        (VQAConfig, {"fusion.name": "gatd"}, "unknown fusion 'gatd'"),
        (VQAConfig, {"train.lr": -1}, "train.lr"),
        (VQAConfig, {"colour": 1}, "unknown config field 'colour'"),
        (SegmentationConfig, {"image_size": 72}, "multiple of 16"),
        (SegmentationConfig, {"conditioning": "clip"}, "conditioning"),
        (SegmentationConfig, {"text_fields": ["summary"]}, "text_fields"),
    ],
)
def test_bad_values_name_the_field(cls, overrides, message):
    with pytest.raises(ConfigError, match=message):
        with_overrides(cls(), overrides)


def test_yaml_file(tmp_path):
    path = tmp_path / "seg.yaml"
    path.write_text("conditioning: none\ntrain: {epochs: 2}\n")
    config = load_task_config(SegmentationConfig, path)
    assert (config.conditioning, config.train.epochs, config.train.batch_size) == ("none", 2, 16)
    path.write_text("unknown_key: 1\n")
    with pytest.raises(ConfigError, match="unknown_key"):
        load_task_config(SegmentationConfig, path)
