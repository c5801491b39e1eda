"""Named model configurations (``medmodal.create_model("tiny", labels=...)``, ``medmodal.list_models()``).

A preset is a set of dotted config overrides (``{"model.embed_dim": 32}``) applied to the
default :class:`~medmodal.config.Config`, so it can be trained and evaluated like any config
file. ``default`` is the configuration ``medmodal train`` uses without ``--config``; ``tiny``
is for notebooks, examples and tests (64 px, narrow parts, one epoch); ``stacked_wide`` is the
default model with stacked wide pathways, and ``stacked_retrieved`` (the demo's recipe) is that
with retrieved reports; the others change one part of the default model and keep everything else.
"""

from __future__ import annotations

from typing import Any

from medmodal.config import Config, ConfigError, apply_overrides

PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "tiny": {
        "data.image_size": 64,
        "data.max_text_tokens": 24,
        "data.max_target_tokens": 24,
        "model.embed_dim": 32,
        "train.epochs": 1,
        "train.batch_size": 16,
        "train.progress_bar": False,
        "evaluate.beam_size": 1,
        "evaluate.max_generate_tokens": 12,
    },
    # The logistic regressions on 32 x 32 pixels and on TF-IDF n-grams inside the model, cross-fitted, the deep head's weight chosen on validation (medmodal/training/wide_stacking.py).
    "stacked_wide": {"model.wide.pixels": 32, "model.wide.ngrams": True, "model.wide.fit": "stacked"},
    # ... plus reports retrieved from the training split: the one stating the findings the study's
    # own report is likelier than t to state, estimated from the classifier's probabilities, t set
    # on validation CE F1 (medmodal/models/report_bank.py, "by expected reading"); the
    # decoder, which writes none of them, is not trained (weight 0: about half the training time);
    # the box head gets dilated convs (context for large boxes) and is refitted on frozen features
    # for 12 epochs when training ends (medmodal/training/localization_refit.py). Chosen on an
    # independent synthetic draw (docs/localization.md, "Refit and dilations"); the box head's heatmap
    # peaks are mixed into the finding logits, the weight chosen on validation (models/peak_evidence.py;
    # docs/diagnosis.md, round 7).
    "stacked_retrieved": {
        "model.wide.pixels": 32,
        "model.wide.ngrams": True,
        "model.wide.fit": "stacked",
        "model.report_conditioning.reports": "retrieved",
        "model.report_conditioning.threshold": "val_micro_f1",
        "model.report_conditioning.retrieve_by": "expected_reading",
        "train.loss_weights.generation": 0.0,
        "model.localization.dilations": [2, 4],
        "train.localization_refit_epochs": 12,
        "model.localization.peak_evidence": True,
    },
    "image_only": {"model.modalities": "image"},
    "text_only": {"model.modalities": "text"},
    "coordinated": {"model.representation": "coordinated"},
    "late_fusion": {"model.fusion.name": "late"},
    "cross_attention": {"model.fusion.name": "cross_attention"},
    "transformer_text": {"model.text_encoder.name": "transformer"},
    "resnet18": {"model.image_encoder.name": "resnet18"},
    "densenet121": {"model.image_encoder.name": "densenet121"},
    "efficientnet_b0": {"model.image_encoder.name": "efficientnet_b0"},
}


def preset_names() -> list[str]:
    """The presets' names, sorted."""
    return sorted(PRESETS)


def preset_config(name: str, base: Config | None = None) -> Config:
    """``base`` (default: ``Config()``) with the overrides of preset ``name``.

    Raises:
        ConfigError: unknown preset (the message lists the known ones).
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; presets: {', '.join(preset_names())}")
    return apply_overrides(base if base is not None else Config(), PRESETS[name])
