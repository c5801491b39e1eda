"""The data as a :class:`~medmodal.config.Config` describes it.

Read a data folder with the config's policies (all of it, or one split), take the seeded training share, the label
matrix, the run's tokenizer (or one learnt from the training text), and the torch dataset
of a list of studies.
Shared by training, evaluation, baselines, retrieval, explanation and serving, so that every
command reads, splits and labels the data the same way.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from medmodal.config import Config
from medmodal.data.dataset import StudyDataset
from medmodal.data.images import image_size
from medmodal.data.manifest import Manifest, read_manifest
from medmodal.data.manifest_contract import ManifestError
from medmodal.data.prepared import is_prepared
from medmodal.data.prepared_manifest import PreparedStudyDataset, is_prepared_studies, read_prepared_manifest
from medmodal.data.tokenizer import ReportTokenizer
from medmodal.data.types import Study
from medmodal.errors import DataError, InputNotFoundError
from medmodal.runs import RunDir


def read_dataset(data: str | Path, config: Config, labels: list[str] | None = None) -> Manifest:
    """Read and validate the manifest of ``data`` (a folder or a manifest file) with the config's policies."""
    if is_prepared(data):  # `medmodal prepare` output (docs/prepare.md): studies from the shards' JSON
        return read_prepared_manifest(
            data, labels if labels is not None else config.data.labels, config.data.image_size
        )
    path = Path(data)
    if path.is_dir() and (path / config.data.manifest).exists():
        path = path / config.data.manifest
    return read_manifest(
        path,
        labels=labels if labels is not None else config.data.labels,
        on_bad_row=config.data.on_bad_row,
        check_images=config.data.check_images,
        allow_outside_paths=config.data.allow_outside_paths,
        views=config.data.views,
        split_fractions=config.data.split_fractions,
        split_seed=config.data.split_seed,
    )


class EmptySplitError(DataError, ValueError):
    """The split a command works on has no studies."""


def fit_splits(manifest: Manifest) -> tuple[list[Study], list[Study]]:
    """(training studies, validation studies) of ``manifest``; :class:`ManifestError` if either is empty.

    Every fit (supervised training, the baselines) selects on the validation split, so a manifest
    without one is an error naming the manifest, not a run without model selection.
    """
    train, val = manifest.split("train"), manifest.split("val")
    if not train:
        raise ManifestError(f"{manifest.path}: no training studies (split 'train' is empty)")
    if not val:
        raise ManifestError(
            f"{manifest.path}: no validation studies (split 'val' is empty); add a val split or leave 'split' empty"
        )
    return train, val


def read_split(data: str | Path, config: Config, labels: list[str], split: str) -> list[Study]:
    """The studies of ``split`` of ``data``, read with ``config``'s policies and labelled in the order
    ``labels`` (a trained run's); :class:`EmptySplitError` if there are none."""
    manifest = read_dataset(data, config, labels=labels)
    studies = manifest.split(split)
    if not studies:
        raise EmptySplitError(f"{manifest.path}: split '{split}' is empty")
    return studies


def build_dataset(
    studies: list[Study], tokenizer: ReportTokenizer, labels: list[str], config: Config, train: bool
) -> StudyDataset:
    """The torch dataset of ``studies`` as the config describes it (images from shards for prepared data)."""
    dataset_class = PreparedStudyDataset if is_prepared_studies(studies) else StudyDataset
    return dataset_class.from_config(
        studies, tokenizer, labels, config.data, train=train, seed=config.train.seed
    )


def vocabulary_texts(studies: list[Study], config: Config) -> list[str]:
    """The texts the vocabulary is learnt from: input and target fields of the training studies."""
    fields = list(dict.fromkeys([*config.data.text_fields, *config.data.target_fields]))
    return [s.sections.get(f, "") for s in studies for f in fields if s.sections.get(f)]


def saved_tokenizer(run: RunDir | None, config: Config) -> ReportTokenizer | None:
    """The run's own tokenizer (a resumed run), else the file named by ``data.tokenizer_path``, else None
    (the caller learns one from its training text)."""
    if run is not None and run.tokenizer.exists():
        return ReportTokenizer.load(run.tokenizer)
    if config.data.tokenizer_path:
        path = Path(config.data.tokenizer_path)
        if not path.is_file():
            raise InputNotFoundError(f"data.tokenizer_path: tokenizer file not found: {path}")
        return ReportTokenizer.load(path)
    return None


def load_or_train_tokenizer(run: RunDir, train_studies: list[Study], config: Config) -> ReportTokenizer:
    """The run's own tokenizer (resume), else ``data.tokenizer_path``, else one learnt from ``train_studies``."""
    saved = saved_tokenizer(run, config)
    if saved is not None:
        return saved
    return ReportTokenizer.train(vocabulary_texts(train_studies, config), min_freq=config.data.min_token_freq)


def training_subset(studies: list[Study], fraction: float, seed: int) -> list[Study]:
    """A seeded share of the training studies (``data.train_fraction``), in manifest order.

    ``ceil(fraction * N)`` studies (at least one) chosen by one seeded permutation, so with the
    same seed a smaller fraction is a subset of a larger one; ``fraction == 1`` keeps all.
    """
    if fraction >= 1.0 or not studies:
        return list(studies)
    keep = max(1, math.ceil(fraction * len(studies)))
    chosen = np.random.default_rng(seed).permutation(len(studies))[:keep]
    return [studies[i] for i in sorted(chosen.tolist())]


def true_boxes_normalised(studies: list[Study], labels: list[str]) -> list[list[tuple[int, list[float]]]]:
    """Every true box of every study as (class index, normalised xyxy), for the localization metrics."""
    index = {name: i for i, name in enumerate(labels)}
    result = []
    for study in studies:
        boxes = []
        if study.boxes and study.image is not None:
            height, width = image_size(study.image)
            for b in study.boxes:
                if b.label in index:
                    x0, y0, x1, y1 = b.box
                    boxes.append((index[b.label], [x0 / width, y0 / height, x1 / width, y1 / height]))
        result.append(boxes)
    return result


def label_matrix(studies: list[Study], labels: list[str]) -> torch.Tensor:
    """[N, C] multi-hot matrix of ``studies``' labels."""
    index = {name: i for i, name in enumerate(labels)}
    matrix = torch.zeros(len(studies), len(labels))
    for row, study in enumerate(studies):
        for name in study.labels:
            if name in index:
                matrix[row, index[name]] = 1.0
    return matrix
