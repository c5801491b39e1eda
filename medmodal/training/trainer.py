"""``medmodal train``: read the data, build the vocabulary and the model, fit with Lightning.

The engine is that of every medmodal run (:mod:`medmodal.training.engine`, on Lightning):
atomic checkpoints (``best.ckpt`` by the monitored validation metric, ``last.ckpt`` for
resuming), the config check on resume, CSV and TensorBoard logs, the progress bar, and
distributed training (``--devices 2 --strategy ddp`` on CPU processes or GPUs; multi-node with
``--num-nodes`` under torchrun / SLURM); early stopping is added here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import Dataset

from medmodal.config import Config, write_config_atomic
from medmodal.data.dataset import make_dataloader
from medmodal.data.pipeline import (
    build_dataset,
    fit_splits,
    label_matrix,
    load_or_train_tokenizer,
    read_dataset,
    training_subset,
)
from medmodal.data.prepared import is_prepared
from medmodal.runs import RunDir, write_json_atomic
from medmodal.training.callbacks import supervised_callbacks
from medmodal.training.data_defaults import heads_for_data
from medmodal.training.domain_adaptation import site_names, split_target_sites, with_unlabeled
from medmodal.training.engine import RunConflictError, TrainResult, prepare_run
from medmodal.training.localization_refit import RefitLocalizer
from medmodal.training.losses import positive_weights
from medmodal.training.module import MultimodalModule
from medmodal.training.peak_evidence import FitPeakEvidence, boxed_findings
from medmodal.training.prepared_training import train_prepared
from medmodal.training.report_bank import FillReportBank
from medmodal.training.reproducibility import epoch_seeded_loader
from medmodal.training.wide_stacking import (
    STACKING_FILE,
    WithOutOfFold,
    check_stacking,
    checkpoint_monitor,
    stack_wide_pathways,
)

__all__ = ["RunConflictError", "TrainResult", "train"]

log = logging.getLogger(__name__)


def train(data: str | Path, config: Config, out: str | Path, *, force: bool = False,
          callbacks: Sequence[L.Callback] = ()) -> TrainResult:  # fmt: skip
    """Train a model on ``data`` into the run folder ``out``; resumes from ``last.ckpt`` if present.
    ``callbacks``: further Lightning callbacks (the Python API's ``medmodal.train``)."""
    if is_prepared(data):  # streamed from the shards, never all studies in memory (docs/prepare.md)
        return train_prepared(str(data), config, out, force=force, callbacks=callbacks)
    start = time.time()
    check_stacking(config)
    manifest = read_dataset(data, config)
    config = heads_for_data(config, manifest.split("train"))  # no target text / no boxes: no such head
    prepared = prepare_run(out, config, force=force)
    run = prepared.run
    if prepared.finished is not None:
        return prepared.finished

    labels = manifest.label_names
    train_studies, val_studies = fit_splits(manifest)

    # Target sites (domain adaptation): labels never used; their training studies come back unlabeled.
    train_studies, val_studies, unlabeled = split_target_sites(
        train_studies, val_studies, config.train.domain_adaptation
    )
    train_studies = training_subset(train_studies, config.data.train_fraction, config.data.split_seed)
    tokenizer = load_or_train_tokenizer(run, train_studies, config)
    train_labels = label_matrix(train_studies, labels)
    prepared.write_files(partial(_write_run_files, config=config, tokenizer=tokenizer, labels=labels,
                                 train_labels=train_labels, manifest=manifest, data=data))  # fmt: skip

    module = MultimodalModule.for_tokenizer(
        config,
        tokenizer,
        len(labels),
        pos_weight=positive_weights(train_labels),
        site_names=site_names(train_studies + unlabeled)
        if config.train.domain_adaptation.method == "dann"
        else None,
    )
    t = config.train
    studies_set = build_dataset(train_studies, tokenizer, labels, config, train=True)
    train_set: Dataset = studies_set
    val_set = build_dataset(val_studies, tokenizer, labels, config, train=False)
    if config.model.wide.fit == "stacked":  # the regressions inside the model, cross-fitted (wide_stacking)
        out_of_fold, chosen = stack_wide_pathways(module.model, studies_set, val_set, config)
        write_json_atomic(run.root / STACKING_FILE, chosen)
        train_set = WithOutOfFold(train_set, out_of_fold)
    if unlabeled:
        train_set = with_unlabeled(train_set, build_dataset(unlabeled, tokenizer, labels, config, train=True))
    # Each epoch's order and augmentation depend only on (seed, epoch): resume reproduces.
    train_loader = epoch_seeded_loader(train_set, t.batch_size, t.seed, num_workers=config.data.num_workers)
    val_loader = make_dataloader(
        val_set,
        batch_size=t.batch_size,
        shuffle=False,
        num_workers=config.data.num_workers,
        seed=t.seed,
    )
    monitor, mode = checkpoint_monitor(config)
    if t.localization_refit_epochs and module.model.localizer is not None:  # training/localization_refit.py
        callbacks = [*callbacks, RefitLocalizer(run, studies_set, t, config.data.num_workers)]
    if (
        module.model.peak_evidence is not None
    ):  # heatmap peaks as classification evidence (training/peak_evidence.py)
        callbacks = [
            *callbacks,
            FitPeakEvidence(
                run,
                val_set,
                labels,
                boxed_findings(train_studies, labels),
                t.batch_size,
                config.data.num_workers,
                finding_threshold_rule=config.model.report_conditioning.threshold,
            ),
        ]
    if module.model.report_bank is not None:  # reports: retrieved (training/report_bank.py)
        callbacks = [
            *callbacks,
            FillReportBank(
                run,
                studies_set,
                t.batch_size,
                config.data.num_workers,
                val_set,
                uncertain_as=config.evaluate.uncertain_as,
            ),
        ]
    return prepared.train_module(t, module, train_loader, val_loader, monitor=monitor, mode=mode, start=start,
                                 callbacks=supervised_callbacks(t, labels, tokenizer, callbacks,
                                                                monitor=(monitor, mode)))  # fmt: skip


def _write_run_files(run: RunDir, *, config, tokenizer, labels, train_labels, manifest, data) -> None:
    write_config_atomic(config, run.config)  # atomic, and untouched when unchanged
    if not run.tokenizer.exists():
        tokenizer.save(run.tokenizer)
    prevalence = (train_labels.mean(dim=0) if len(train_labels) else torch.zeros(len(labels))).tolist()
    write_json_atomic(run.labels, {"labels": labels, "train_prevalence": dict(zip(labels, prevalence))})
    summary = manifest.summary()
    summary["data"] = str(Path(data).resolve())
    summary["problems"] = [str(p) for p in manifest.problems]
    write_json_atomic(run.data_summary, summary)
