"""Training and loading from prepared data (``medmodal prepare``): shards streamed, nothing decoded.

:func:`train_prepared` is what :func:`medmodal.training.trainer.train` runs when ``data`` is a
prepared folder: the same Lightning set-up (checkpoints, resume, config check, logs, run
files), with the training and validation splits streamed from WebDataset shards
(:class:`~medmodal.data.prepared.PreparedStudies`), so memory does not grow with the number of
studies. Label prevalence and BCE ``pos_weight`` come from the index's per-split label counts.

Not available on prepared data (refused with a message): ``data.train_fraction < 1`` and
``train.domain_adaptation`` (both choose studies by their content before training).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
from torch.utils.data import DataLoader

from medmodal.config import Config, ConfigError, write_config_atomic
from medmodal.data.dataset import collate, seed_worker
from medmodal.data.pipeline import saved_tokenizer
from medmodal.data.prepared import (
    TOKENIZER_NAME,
    PreparedDataError,
    PreparedIndex,
    PreparedStudies,
    item_builder,
    join,
    open_binary,
    read_index,
    shard_samples,
)
from medmodal.data.tokenizer import ReportTokenizer
from medmodal.data.types import Box, Study
from medmodal.runs import RunDir, write_json_atomic
from medmodal.training.callbacks import supervised_callbacks
from medmodal.training.data_defaults import heads_for_data
from medmodal.training.engine import prepare_run
from medmodal.training.module import MultimodalModule

log = logging.getLogger(__name__)


class PreparedEpoch(L.Callback):
    """Tells the streamed training split which epoch it is (its shuffling is seeded by it)."""

    def __init__(self, dataset: PreparedStudies) -> None:
        self.dataset = dataset

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.dataset.set_epoch(trainer.current_epoch)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.dataset.set_epoch(trainer.current_epoch)


def check_prepared_config(index: PreparedIndex, config: Config) -> None:
    """Refuse settings the prepared data cannot honour, naming the setting and both values."""
    d = config.data
    if d.image_size != index.image_size:
        raise ConfigError(f"data.image_size is {d.image_size}, but {index.root} was prepared at {index.image_size} px; "
                          f"use --image-size {index.image_size} or prepare again")  # fmt: skip
    if d.labels is not None and list(d.labels) != index.label_names:
        raise ConfigError(f"data.labels {d.labels} differ from the labels {index.label_names} of {index.root}; "
                          "prepare again with these labels")  # fmt: skip
    if d.train_fraction < 1:
        raise ConfigError(
            "data.train_fraction < 1 is not available on prepared data; prepare a subset instead"
        )
    if config.train.domain_adaptation.method != "none":
        raise ConfigError(
            "train.domain_adaptation is not available on prepared data; train on the raw manifest"
        )
    if config.model.wide.fit == "stacked":
        raise ConfigError(
            "model.wide.fit: stacked is not available on prepared data (it cross-fits regressions on "
            "every training study in memory); train on the raw manifest or use fit: sgd"
        )
    if config.train.localization_refit_epochs > 0:
        raise ConfigError(
            "train.localization_refit_epochs > 0 is not available on prepared data (the refit keeps the "
            "training studies' encoder features in memory); train on the raw manifest or set it to 0"
        )
    if config.model.localization.peak_evidence:
        raise ConfigError(
            "model.localization.peak_evidence is not available on prepared data (it is fitted on the "
            "validation studies in memory when training ends); train on the raw manifest or set it to false"
        )
    if config.model.report_conditioning.reports == "retrieved":
        raise ConfigError(
            "model.report_conditioning.reports: retrieved is not available on prepared data (its bank is "
            "filled by a pass over the training studies in memory); train on the raw manifest or use 'generated'"
        )


def prepared_tokenizer(index: PreparedIndex, run: RunDir | None, config: Config) -> ReportTokenizer:
    """The run's own tokenizer (resume), else ``data.tokenizer_path``, else the prepared one when it was
    learnt with this config's fields and ``min_token_freq``, else one learnt from the streamed training text."""
    from tokenizers import Tokenizer

    saved = saved_tokenizer(run, config)
    if saved is not None:
        return saved
    d = config.data
    fields = list(dict.fromkeys([*d.text_fields, *d.target_fields]))
    settings = index.tokenizer
    if settings.get("fields") == fields and settings.get("min_freq") == d.min_token_freq:
        url = join(index.root, TOKENIZER_NAME)
        try:
            with open_binary(url) as handle:
                return ReportTokenizer(Tokenizer.from_str(handle.read(64 * 1024 * 1024).decode()))
        except Exception as err:  # noqa: BLE001 - tokenizers raises a plain Exception on bad JSON
            raise PreparedDataError(f"{url}: not a readable tokenizer ({err})") from None
    texts = (s.sections.get(f, "") for url in index.shard_urls("train")
             for s, _ in shard_samples(url, index.image_size) for f in fields if s.sections.get(f))  # fmt: skip
    return ReportTokenizer.train(texts, min_freq=d.min_token_freq)


def prepared_loader(index: PreparedIndex, split: str, tokenizer: ReportTokenizer, config: Config, *,
                    train: bool, batch_size: int | None = None) -> DataLoader:  # fmt: skip
    """A DataLoader of batch dicts streamed from one split (shuffled and augmented when ``train``)."""
    t = config.train
    dataset = PreparedStudies(
        index,
        split,
        item_builder(
            tokenizer,
            index.label_names,
            config.data,
            train=train,
            seed=t.seed,
            targets=config.model.heads.generation,
        ),
        shuffle=train,
        seed=t.seed,
    )
    return DataLoader(dataset, batch_size=batch_size or t.batch_size, num_workers=config.data.num_workers,
                      collate_fn=collate, worker_init_fn=seed_worker)  # fmt: skip


def positive_weights_from_counts(positives: list[int], n: int, max_weight: float = 50.0) -> list[float]:
    """:func:`medmodal.training.losses.positive_weights` computed from per-label positive counts and N
    (negatives / positives, clipped to [1, max_weight]; no positive -> max_weight), without the [N, C] matrix."""
    pos = torch.tensor(positives, dtype=torch.float32)
    neg = n - pos
    weight = torch.where(pos > 0, neg / pos.clamp(min=1), torch.full_like(pos, max_weight))
    return weight.clamp(min=1.0, max=max_weight).tolist()


def heads_for_prepared_data(config: Config, index: PreparedIndex) -> Config:
    """:func:`~medmodal.training.data_defaults.heads_for_data` from the index's training-split counts
    (studies with each report section, studies with an image and a box)."""
    sections = index.summary.get("sections_by_split", {}).get("train", {})
    with_boxes = index.summary.get("boxes_by_split", {}).get("train", 0)
    # one stand-in study per property the training split has: heads_for_data asks only "is there any"
    stand_ins = [Study(id=f"has-{name}", row=0, sections={name: "text"}) for name, n in sections.items() if n]
    if with_boxes:
        stand_ins.append(
            Study(id="has-box", row=0, image=Path(str(index.root)), boxes=[Box("box", (0, 0, 1, 1))])
        )
    return heads_for_data(config, stand_ins)


def train_prepared(
    data: str, config: Config, out: str | Path, *, force: bool = False, callbacks: Sequence[L.Callback] = ()
):
    """Train on prepared data into the run folder ``out`` (see :func:`medmodal.training.trainer.train`)."""
    start = time.time()
    # the shards are divided over ranks and workers by split_by_node / split_by_worker (no duplicates)
    warnings.filterwarnings("ignore", message=r".*IterableDataset. has .__len__. defined.*")
    index = read_index(data)
    check_prepared_config(index, config)
    config = heads_for_prepared_data(config, index)  # no target text / no boxes: no such head
    prepared = prepare_run(out, config, force=force)
    run = prepared.run
    if prepared.finished is not None:
        return prepared.finished
    for split in ("train", "val"):
        if not index.splits[split].studies:
            raise ValueError(f"{index.root}: no {split} studies (split {split!r} is empty)")
    labels = index.label_names
    tokenizer = prepared_tokenizer(index, run, config)
    n_train = index.splits["train"].studies
    positives = [index.label_counts("train").get(name, 0) for name in labels]
    prepared.write_files(
        lambda run: _write_run_files(run, config, tokenizer, labels, positives, n_train, index, data)
    )
    module = MultimodalModule.for_tokenizer(
        config, tokenizer, len(labels), pos_weight=positive_weights_from_counts(positives, n_train)
    )
    t = config.train
    train_loader = prepared_loader(index, "train", tokenizer, config, train=True)
    val_loader = prepared_loader(index, "val", tokenizer, config, train=False)
    return prepared.train_module(
        t, module, train_loader, val_loader, monitor=t.monitor, start=start, record={"prepared": True},
        callbacks=[PreparedEpoch(cast(PreparedStudies, train_loader.dataset)), *supervised_callbacks(t, labels, tokenizer, callbacks)],
    )  # fmt: skip


def _write_run_files(run: RunDir, config: Config, tokenizer: ReportTokenizer, labels: list[str],
                     positives: list[int], n_train: int, index: PreparedIndex, data: Any) -> None:  # fmt: skip
    write_config_atomic(config, run.config)
    if not run.tokenizer.exists():
        tokenizer.save(run.tokenizer)
    prevalence = [p / n_train if n_train else 0.0 for p in positives]
    write_json_atomic(run.labels, {"labels": labels, "train_prevalence": dict(zip(labels, prevalence))})
    summary = {k: v for k, v in index.summary.items() if k != "label_counts_by_split"}
    summary["data"] = str(data) if "://" in str(data) else str(Path(data).resolve())
    summary["prepared"] = True
    summary["problems"] = [f"{p.get('file')}: row {p.get('row')}, field '{p.get('field')}': {p.get('message')}"
                           for p in index.problems if isinstance(p, dict)]  # fmt: skip
    write_json_atomic(run.data_summary, summary)
