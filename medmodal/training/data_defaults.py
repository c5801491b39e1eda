"""Defaults that follow the data: heads the training data cannot teach are left out.

- no training study has text in ``data.target_fields`` -> no report decoder
  (``model.heads.generation: false``): it would learn to write nothing, and ``evaluate``
  would have no reference to score it against;
- no training study has a box (on an image) -> no localization head
  (``model.heads.localization: false``).

Each change is logged once, when the run starts; the run folder's ``config.yaml`` holds
the adjusted configuration, so evaluation, prediction and resumption build the same model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from medmodal.config import Config, apply_overrides
from medmodal.data.types import Study

log = logging.getLogger(__name__)


def has_target_text(studies: Sequence[Study], fields: Sequence[str]) -> bool:
    """At least one study has a non-empty section among ``fields``."""
    return any(study.text(fields).strip() for study in studies)


def has_boxes(studies: Sequence[Study]) -> bool:
    """At least one study with an image has a box."""
    return any(study.boxes and study.image is not None for study in studies)


def heads_for_data(config: Config, train_studies: Sequence[Study]) -> Config:
    """``config`` with the generation / localization head switched off where ``train_studies``
    offer nothing to learn it from (module docstring); unchanged otherwise."""
    heads = config.model.heads
    changes: dict[str, bool] = {}
    if heads.generation and not has_target_text(train_studies, config.data.target_fields):
        log.info(
            "no training study has text in data.target_fields %s: the model is built without a report "
            "decoder (model.heads.generation: false)", list(config.data.target_fields),
        )  # fmt: skip
        changes["model.heads.generation"] = False
    if heads.localization and config.model.modalities != "text" and not has_boxes(train_studies):
        log.info("no training study has a box: the model is built without a localization head "
                 "(model.heads.localization: false)")  # fmt: skip
        changes["model.heads.localization"] = False
    return apply_overrides(config, changes) if changes else config
