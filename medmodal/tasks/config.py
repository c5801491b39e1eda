"""Typed, validated settings of the VQA and text-guided segmentation tasks (pydantic, unknown keys rejected).

Each task has one config class whose defaults are the small CPU set-up of
``docs/vqa-segmentation.md``; ``load_task_config(cls, path)`` reads a YAML file
(only the fields it changes) and ``with_overrides`` applies command-line flags.
Model parts are named as in the registry (:mod:`medmodal.models.registry`) and
checked against it. ``train`` holds the settings every medmodal run has
(:class:`medmodal.config.TrainerConfig`: epochs, batch size, AdamW + one-cycle, devices).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medmodal.config import SECTION_FIELDS, ConfigError, PartConfig, TrainerConfig
from medmodal.errors import InputNotFoundError
from medmodal.models import registry


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TaskTrainConfig(TrainerConfig):
    """How a task trains: the settings of every medmodal run (AdamW + one-cycle, Lightning devices,
    :class:`medmodal.config.TrainerConfig`); ``checkpoints/best.ckpt`` keeps the best validation epoch."""

    epochs: int = Field(8, ge=1, le=1000)


def _check_part(part: PartConfig, kind: str, where: str) -> None:
    known = registry.available(kind)
    if part.name not in known:
        raise ValueError(f"{where}.name: unknown {kind} '{part.name}'; available: {', '.join(known)}")


class VQAConfig(_Section):
    """Visual question answering: image encoder + question encoder + fusion + answer classifier.

    ``use_image: false`` hides the image (a blank image goes in), which gives the
    question-only baseline with the same network.
    """

    image_encoder: PartConfig = Field(default_factory=lambda: PartConfig(name="small_cnn"))
    question_encoder: PartConfig = Field(default_factory=lambda: PartConfig(name="bilstm_attention"))
    fusion: PartConfig = Field(default_factory=lambda: PartConfig(name="concat"))
    embed_dim: int = Field(64, ge=8, le=4096)
    dropout: float = Field(0.1, ge=0, lt=1)
    image_size: int = Field(64, ge=16, le=1024)
    max_question_tokens: int = Field(24, ge=4, le=256)
    min_token_freq: int = Field(1, ge=1)
    use_image: bool = True
    qa_file: str = "qa.jsonl"  # relative to the data folder
    # batch_size counts studies (each with all its questions, ~5 on the synthetic data).
    train: TaskTrainConfig = Field(default_factory=lambda: TaskTrainConfig(epochs=20, batch_size=16))

    @model_validator(mode="after")
    def _parts_exist(self) -> VQAConfig:
        _check_part(self.image_encoder, "image_encoder", "image_encoder")
        _check_part(self.question_encoder, "text_encoder", "question_encoder")
        _check_part(self.fusion, "fusion", "fusion")
        return self


class SegmentationConfig(_Section):
    """Text-guided segmentation: a MONAI BasicUNet whose decoder is FiLM-modulated by the report vector.

    ``conditioning: none`` is the same U-Net without the text (the image-only baseline).
    ``features``: BasicUNet widths (encoder levels 0-4, then the last decoder level).
    """

    conditioning: Literal["film", "none"] = "film"
    text_encoder: PartConfig = Field(default_factory=lambda: PartConfig(name="bilstm_attention"))
    text_fields: list[str] = ["findings", "impression"]
    embed_dim: int = Field(64, ge=8, le=4096)
    features: tuple[int, int, int, int, int, int] = (16, 16, 32, 64, 128, 16)
    dropout: float = Field(0.0, ge=0, lt=1)
    image_size: int = Field(64, ge=16, le=1024)
    max_text_tokens: int = Field(64, ge=4, le=1024)
    min_token_freq: int = Field(2, ge=1)
    train: TaskTrainConfig = Field(default_factory=lambda: TaskTrainConfig(epochs=6, batch_size=16))

    @field_validator("text_fields")
    @classmethod
    def _known_sections(cls, value: list[str]) -> list[str]:
        unknown = [f for f in value if f not in SECTION_FIELDS]
        if unknown or not value:
            raise ValueError(
                f"text_fields must name report sections among {list(SECTION_FIELDS)}, got {value}"
            )
        return value

    @field_validator("features")
    @classmethod
    def _positive_widths(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(v < 1 for v in value):
            raise ValueError(f"features must be positive channel counts, got {value}")
        return value

    @field_validator("image_size")
    @classmethod
    def _divisible_by_16(cls, value: int) -> int:
        if value % 16:
            raise ValueError(f"image_size must be a multiple of 16 (four 2x poolings), got {value}")
        return value

    @model_validator(mode="after")
    def _parts_exist(self) -> SegmentationConfig:
        _check_part(self.text_encoder, "text_encoder", "text_encoder")
        return self


C = TypeVar("C", VQAConfig, SegmentationConfig)


def load_task_config(cls: type[C], path: str | Path | None) -> C:
    """``cls`` from a YAML file (``None`` = the defaults); raises ConfigError naming each bad field."""
    if path is None:
        return cls()
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    # Merged onto the defaults section by section, so `train: {epochs: 2}` keeps the task's other train defaults.
    return _validated(cls, _deep_merge(cls().model_dump(mode="json"), data), str(path))


def _deep_merge(base: dict, changes: dict) -> dict:
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "kwargs":
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def with_overrides(config: C, overrides: dict[str, Any]) -> C:
    """A copy with dotted-key overrides applied (``{"train.epochs": 2}``); ``None`` values are skipped."""
    data = config.model_dump(mode="json")
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            if not isinstance(node.get(key), dict):
                raise ConfigError(f"unknown config section '{key}' in override '{dotted}'")
            node = node[key]
        if leaf not in node:
            raise ConfigError(f"unknown config field '{dotted}'")
        node[leaf] = value
    return _validated(type(config), data, "overrides")


def _validated(cls: type[C], data: dict, source: str) -> C:
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        lines = [f"invalid {cls.__name__} in {source}:"]
        for e in err.errors():
            lines.append(f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}")
        raise ConfigError("\n".join(lines)) from err
