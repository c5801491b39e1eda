"""The studies every fit starts from: a manifest's training and validation splits, neither empty.

Shared by supervised training (:mod:`medmodal.training.trainer`) and the baselines
(:mod:`medmodal.training.baselines`): both select on the validation split, so a manifest
without one is an error naming the manifest, not a run without model selection.
"""

from __future__ import annotations

from medmodal.data.manifest import Manifest
from medmodal.data.manifest_contract import ManifestError
from medmodal.data.types import Study


def fit_splits(manifest: Manifest) -> tuple[list[Study], list[Study]]:
    """(training studies, validation studies) of ``manifest``; :class:`ManifestError` if either is empty."""
    train, val = manifest.split("train"), manifest.split("val")
    if not train:
        raise ManifestError(f"{manifest.path}: no training studies (split 'train' is empty)")
    if not val:
        raise ManifestError(
            f"{manifest.path}: no validation studies (split 'val' is empty); add a val split or leave 'split' empty"
        )
    return train, val
