"""The typed config: defaults, YAML validation naming the bad field, overrides."""

import pytest

from medmodal.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    load_config,
    save_config,
    write_config_atomic,
)


def test_defaults_validate_and_round_trip(tmp_path):
    config = Config()
    assert config.model.fusion.name == "gated"
    assert config.data.text_fields == ["indication"]
    path = tmp_path / "c.yaml"
    save_config(config, path)
    assert load_config(path) == config


def test_unknown_key_is_named_with_its_path():
    with pytest.raises(ConfigError) as err:
        config_from_dict({"train": {"epoch": 3}})
    assert "train.epoch" in str(err.value)
    assert "unknown key" in str(err.value)


def test_bad_value_is_named_with_its_path():
    with pytest.raises(ConfigError) as err:
        config_from_dict({"train": {"batch_size": 0}, "data": {"text_fields": ["indication", "history"]}})
    message = str(err.value)
    assert "train.batch_size" in message
    assert "data.text_fields" in message and "history" in message


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_overrides_apply_validate_and_ignore_none():
    config = apply_overrides(Config(), {"train.epochs": 3, "model.modalities": "text", "train.seed": None})
    assert config.train.epochs == 3 and config.model.modalities == "text" and config.train.seed == 0
    with pytest.raises(ConfigError, match="model.modalities"):
        apply_overrides(Config(), {"model.modalities": "audio"})
    with pytest.raises(ConfigError, match="unknown key"):
        apply_overrides(Config(), {"train.epochz": 3})


def test_split_fractions_must_sum_to_one():
    with pytest.raises(ConfigError, match="data.split_fractions"):
        config_from_dict({"data": {"split_fractions": [0.5, 0.2, 0.2]}})


def test_config_is_written_atomically_and_only_when_changed(tmp_path):
    path = tmp_path / "config.yaml"
    config = Config()
    assert write_config_atomic(config, path) is True
    assert load_config(path) == config
    mtime = path.stat().st_mtime_ns
    assert write_config_atomic(config, path) is False and path.stat().st_mtime_ns == mtime
    assert write_config_atomic(apply_overrides(config, {"train.lr": 0.5}), path) is True
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
