"""Fill the report bank of a ``report_conditioning.reports: retrieved`` run when training ends.

The bank (:mod:`medmodal.models.report_bank`) holds each training study's report (its target
token ids), labels and joint vector. The joint vectors must come from the weights inference
uses, so the bank is filled once, from the best checkpoint, when ``trainer.fit`` ends: its
weights are loaded into the module, one pass in eval mode over the training studies
(augmentation off, dataset order) computes the vectors, and the checkpoint is written again
atomically with the bank in its state dict. A run killed during the pass keeps its old
checkpoint and no ``training_done.json``; run again, it resumes the finished fit and fills the
bank the same way (eval mode, fixed order: the same bank).
"""

from __future__ import annotations

import logging
from typing import cast

import lightning as L
import torch
from torch.utils.data import Dataset

from medmodal.data.dataset import StudyDataset
from medmodal.models.decoders.base import ReportDecoder
from medmodal.models.multimodal import MultimodalModel
from medmodal.runs import RunDir
from medmodal.training.checkpoints import BestCheckpointStage, eval_batches

log = logging.getLogger(__name__)


class FillReportBank(BestCheckpointStage):
    """At the end of ``fit``: the bank from ``studies`` with the weights of ``run``'s best checkpoint."""

    name = "report_bank"

    def __init__(self, run: RunDir, studies: StudyDataset, batch_size: int, num_workers: int = 0) -> None:
        super().__init__(run)
        self.studies = studies
        self.batch_size, self.num_workers = batch_size, num_workers

    def run_stage(self, pl_module: L.LightningModule) -> dict[str, torch.Tensor]:
        model: MultimodalModel = pl_module.model  # type: ignore[assignment]
        with self.studies.augmentation_off():
            fill_bank(model, self.studies, self.batch_size, self.num_workers)
        bank = model.report_bank
        assert bank is not None  # the callback is added for retrieved-report runs only
        log.info("report bank: %d training reports in %s", len(bank), self.run.model_checkpoint())
        return bank.state_dict(prefix="model.report_bank.")


@torch.no_grad()
def fill_bank(model: MultimodalModel, studies: Dataset, batch_size: int, num_workers: int = 0) -> None:
    """Fill ``model.report_bank`` from ``studies`` (in order; the first ``bank_size`` with a report).

    Each study gives its target ids without BOS [T-1], its labels [C] and its joint vector
    (:meth:`MultimodalModel.joint_vector`, eval mode) [D]; a study whose target text is empty is left out.
    """
    bank = model.report_bank
    if bank is None:
        raise ValueError("this model has no report bank (report_conditioning.reports: generated)")
    ids, findings, keys = [], [], []
    kept = 0
    for batch in eval_batches(model, studies, batch_size, num_workers):
        targets = batch["target_ids"][:, 1:]
        has_report = targets[:, 0] != model_eos(model)
        vectors = model.joint_vector(batch)
        take = has_report.nonzero().squeeze(1)[: bank.capacity - kept]
        ids.append(targets[take].cpu())
        findings.append(batch["labels"][take].cpu())
        keys.append(vectors[take].cpu())
        kept += len(take)
        if kept >= bank.capacity:
            break
    if kept == 0:
        raise ValueError("no training study has target text to retrieve")
    bank.fill(torch.cat(ids), torch.cat(findings), torch.cat(keys))


def model_eos(model: MultimodalModel) -> int:
    """The decoder's end-of-report id."""
    return int(cast(ReportDecoder, model.decoder).eos_id)
