"""``medmodal pretrain``: contrastive image-report pretraining into a run folder.

The run folder has the layout of a training run (:mod:`medmodal.runs`) plus::

    RUN/
      encoders/image_encoder.pt   state_dict of the pretrained image encoder
      encoders/text_encoder.pt    state_dict of the pretrained text encoder
      pretraining_done.json       epochs run, best validation loss, time
      metrics.json                ``retrieval`` / ``zero_shot`` sections (medmodal retrieval-eval / zero-shot)

The encoder files load into the supervised model through ``PartConfig.pretrained_path``
(:func:`medmodal.models.pretrained.load_pretrained`); give the supervised run the same
``model.embed_dim`` and encoder kwargs, and ``data.tokenizer_path: RUN/tokenizer.json`` so the
word embeddings keep their meaning (``medmodal transfer`` does both).

Pretraining pairs each training study's image with its report (``pretrain.text_fields``,
findings + impression by default); labels are not used. Studies without an image or without
report text are left out. The vocabulary is learnt like a supervised run's (input and target
fields of the training studies), so it is the one a supervised run on the same data learns.

It runs on the engine of every medmodal run (:func:`medmodal.training.engine.prepare_run`): a run
is continued only with its own configuration (a changed ``train.epochs`` is refused, as by
``medmodal train``), run files are written by rank zero, a resumed run logs into
``logs/csv-resumed-N`` (earlier logs kept) and is recorded in ``resumes.json``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch

from medmodal.config import Config, apply_overrides, write_config_atomic
from medmodal.data.dataset import StudyDataset, make_dataloader
from medmodal.data.pipeline import build_dataset, label_matrix, load_or_train_tokenizer, read_dataset
from medmodal.data.tokenizer import ReportTokenizer
from medmodal.data.types import Study
from medmodal.errors import RunNotFoundError
from medmodal.models.contrastive import ContrastiveLoss, ContrastiveModel, create_contrastive_model
from medmodal.runs import RunDir, write_json_atomic
from medmodal.training.checkpoints import module_from_checkpoint, run_checkpoints
from medmodal.training.engine import prepare_run
from medmodal.training.optim import adamw_one_cycle, single_group
from medmodal.training.reproducibility import EpochSeeding, epoch_seeded_loader

log = logging.getLogger(__name__)

ENCODER_FILES = {"image_encoder": "image_encoder.pt", "text_encoder": "text_encoder.pt"}
DONE_FILE = "pretraining_done.json"


# ---------------------------------------------------------------------- Lightning
class ContrastiveModule(L.LightningModule):
    """Trains a :class:`ContrastiveModel`; the hyper-parameters rebuild it from the checkpoint alone."""

    def __init__(self, config: dict[str, Any], vocab_size: int, pad_id: int) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.config = Config.model_validate(config)
        self.model = create_contrastive_model(self.config, vocab_size=vocab_size, pad_id=pad_id)
        p = self.config.pretrain
        self.loss = ContrastiveLoss(
            p.local_loss_weight,
            p.local_attention_temperature,
            p.local_word_temperature,
            p.local_logit_temperature,
        )

    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        output = self.model(batch)
        total, parts = self.loss(output, batch["has_image"] & batch["has_text"])
        size = batch["image"].shape[0]
        self.log(f"{stage}/loss", total, prog_bar=True, batch_size=size, sync_dist=stage != "train")
        for name, value in parts.items():
            self.log(f"{stage}/loss_{name}", value, batch_size=size, sync_dist=stage != "train")
        if stage == "train":
            self.log("train/temperature", 1.0 / output.logit_scale.detach(), batch_size=size)
        return total

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self):
        t = self.config.train
        return adamw_one_cycle(single_group(self, t.lr), t, self.trainer.estimated_stepping_batches)


# ------------------------------------------------------------------------ data
def pretraining_data_config(config: Config) -> Config:
    """The config the pretraining datasets are built with: the report fields as the input text."""
    return apply_overrides(
        config,
        {
            "data.text_fields": config.pretrain.text_fields,
            "data.max_text_tokens": config.pretrain.max_text_tokens,
        },
    )


def vocabulary_config(config: Config) -> Config:
    """The config the vocabulary is learnt with: the supervised input fields plus the report fields,
    so that with default settings it is exactly the vocabulary of a supervised run on the same data."""
    fields = list(dict.fromkeys([*config.data.text_fields, *config.pretrain.text_fields]))
    return apply_overrides(config, {"data.text_fields": fields})


def paired_studies(studies: list[Study], text_fields: list[str]) -> list[Study]:
    """The studies with an image and non-empty report text in ``text_fields``."""
    return [s for s in studies if s.image is not None and s.text(text_fields).strip()]


def pretraining_dataset(
    studies: list[Study], tokenizer: ReportTokenizer, labels: list[str], config: Config, train: bool
) -> StudyDataset:
    """Dataset whose ``text_ids`` are the report (``pretrain.text_fields``) of ``studies``."""
    return build_dataset(studies, tokenizer, labels, pretraining_data_config(config), train=train)


# ----------------------------------------------------------------------- run
@dataclass
class PretrainResult:
    run: RunDir
    best_val_loss: float | None
    epochs_run: int
    seconds: float
    encoders: dict[str, Path]


def encoder_paths(run: RunDir) -> dict[str, Path]:
    """``{"image_encoder": RUN/encoders/image_encoder.pt, "text_encoder": ...}``."""
    return {name: run.root / "encoders" / filename for name, filename in ENCODER_FILES.items()}


def pretrain(data: str | Path, config: Config, out: str | Path, *, force: bool = False) -> PretrainResult:
    """Contrastive pretraining on the training split of ``data`` into the run folder ``out``.

    Resumes from ``last.ckpt`` when ``out`` holds an unfinished run with the same config;
    ``force`` starts over.
    """
    start = time.time()
    prepared = prepare_run(out, config, force=force, outputs=(DONE_FILE, "encoders", "index"))
    run = prepared.run
    finished = finished_pretraining(run)  # its record is pretraining_done.json, not training_done.json
    if finished is not None:
        log.info("%s already finished pretraining (%s); nothing to do", run.root, DONE_FILE)
        return finished

    manifest = read_dataset(data, config)
    labels = manifest.label_names
    fields = config.pretrain.text_fields
    all_train = manifest.split("train")
    train_studies = paired_studies(all_train, fields)
    val_studies = paired_studies(manifest.split("val"), fields)
    if len(train_studies) < 2:
        raise ValueError(
            f"{manifest.path}: fewer than 2 training studies with an image and report text in {fields}"
        )
    if len(val_studies) < 2:
        raise ValueError(
            f"{manifest.path}: fewer than 2 validation studies with an image and report text in {fields}"
        )
    tokenizer = load_or_train_tokenizer(run, all_train, vocabulary_config(config))
    prepared.write_files(
        lambda run: _write_run_files(run, config, tokenizer, labels, all_train, manifest, data)
    )

    module = ContrastiveModule(
        config.model_dump(mode="json"), vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id
    )
    t = config.train
    batch_size = min(t.batch_size, len(train_studies))
    train_loader = epoch_seeded_loader(  # each epoch's order and augmentation depend on (seed, epoch) only
        pretraining_dataset(train_studies, tokenizer, labels, config, train=True),
        batch_size, t.seed, num_workers=config.data.num_workers,
        drop_last=True,  # a last batch of one pair has no negatives
    )  # fmt: skip
    val_loader = make_dataloader(
        pretraining_dataset(val_studies, tokenizer, labels, config, train=False),
        batch_size=batch_size, shuffle=False, num_workers=config.data.num_workers, seed=t.seed,
    )  # fmt: skip
    checkpoint, last_checkpoint = run_checkpoints(run, "val/loss", "min")
    trainer = prepared.trainer(t, [checkpoint, last_checkpoint, EpochSeeding(t.seed)])
    prepared.fit(trainer, module, train_loader, val_loader)

    best = checkpoint.best_model_score
    encoders = encoder_paths(run)
    if trainer.is_global_zero:
        save_encoders(run.model_checkpoint(), encoders)
    result = PretrainResult(
        run=run,
        best_val_loss=float(best) if best is not None else None,
        epochs_run=trainer.current_epoch,
        seconds=time.time() - start,
        encoders=encoders,
    )
    prepared.record_done(trainer, {
        "best_checkpoint": str(run.model_checkpoint()), "best_val_loss": result.best_val_loss,
        "epochs_run": result.epochs_run, "seconds": round(result.seconds, 1),
        "train_pairs": len(train_studies), "val_pairs": len(val_studies),
        "encoders": {k: str(v) for k, v in encoders.items()},
    }, path=run.root / DONE_FILE)  # fmt: skip
    return result


def finished_pretraining(run: RunDir) -> PretrainResult | None:
    """The recorded result when ``run`` finished and wrote its encoders (its ``pretraining_done.json``
    is then kept as it is), else None."""
    done_path, encoders = run.root / DONE_FILE, encoder_paths(run)
    if not done_path.exists() or not all(path.exists() for path in encoders.values()):
        return None
    try:
        done = json.loads(done_path.read_text())
        return PretrainResult(run=run, best_val_loss=done.get("best_val_loss"), epochs_run=int(done["epochs_run"]),
                              seconds=float(done["seconds"]), encoders=encoders)  # fmt: skip
    except (ValueError, KeyError, TypeError) as err:
        log.warning("%s cannot be read (%s); pretraining is resumed and writes it again", done_path, err)
        return None


def save_encoders(checkpoint: Path, paths: dict[str, Path]) -> None:
    """Write each encoder's ``state_dict`` (from the Lightning ``checkpoint``) as its own file."""
    module = module_from_checkpoint(ContrastiveModule, checkpoint)  # never unpickles code
    for name, path in paths.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(getattr(module.model, name).state_dict(), path)


def _write_run_files(
    run: RunDir, config: Config, tokenizer: ReportTokenizer, labels, train_studies, manifest, data
) -> None:
    write_config_atomic(config, run.config)  # atomic, and untouched when unchanged
    if not run.tokenizer.exists():
        tokenizer.save(run.tokenizer)
    prevalence = (
        label_matrix(train_studies, labels).mean(dim=0).tolist() if train_studies else [0.0] * len(labels)
    )
    write_json_atomic(run.labels, {"labels": labels, "train_prevalence": dict(zip(labels, prevalence))})
    summary = manifest.summary()
    summary["data"] = str(Path(data).resolve())
    write_json_atomic(run.data_summary, summary)


# ----------------------------------------------------------------------- loading
@dataclass
class PretrainedRun:
    """A pretraining run loaded for inference (retrieval, zero-shot): the model in eval mode."""

    run: RunDir
    config: Config
    labels: list[str]
    tokenizer: ReportTokenizer
    model: ContrastiveModel

    @property
    def data(self) -> str:
        """The dataset the run was trained on (from ``data_summary.json``)."""
        return json.loads(self.run.data_summary.read_text())["data"]


def load_pretrained_run(run_dir: str | Path, device: str | torch.device = "cpu") -> PretrainedRun:
    """Read a ``medmodal pretrain`` run folder; a clear error for anything else."""
    run = RunDir.at(run_dir)
    run.require_trained()
    if not (run.root / DONE_FILE).exists() and not (run.root / "encoders").is_dir():
        raise RunNotFoundError(
            f"{run.root} is not a contrastive pretraining run (no {DONE_FILE}); create one with `medmodal pretrain`"
        )
    module = module_from_checkpoint(ContrastiveModule, run.model_checkpoint(), map_location=device)
    return PretrainedRun(
        run=run,
        config=module.config,
        labels=run.load_labels(),
        tokenizer=ReportTokenizer.load(run.tokenizer),
        model=module.model.to(device).eval(),
    )
