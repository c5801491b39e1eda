"""Fill the report bank of a ``report_conditioning.reports: retrieved`` run when training ends.

The bank (:mod:`medmodal.models.report_bank`) holds each training study's report (its target
token ids), labels and joint vector. The joint vectors must come from the weights inference
uses, so the bank is filled once, from the best checkpoint, when ``trainer.fit`` ends: its
weights are loaded into the module, one pass in eval mode over the training studies
(augmentation off, dataset order) computes the vectors, and the checkpoint is written again
atomically with the bank in its state dict. A run killed during the pass keeps its old
checkpoint and no ``training_done.json``; run again, it resumes the finished fit and fills the
bank the same way (eval mode, fixed order: the same bank).

A bank that retrieves by expected reading (``report_conditioning.retrieve_by: expected_reading``,
:mod:`medmodal.models.report_bank`) also keeps what the report labeler reads in each stored report
(decoded as the evaluation decodes it, an uncertain mention counted as ``evaluate.uncertain_as`` says,
by default as stated), and
its threshold ``t`` is then set on the validation studies that have a report: the ``t`` of
:data:`READING_THRESHOLDS` whose chosen reports reach the highest validation CE F1 (micro, over the
labeler's findings, as the evaluation scores it; the lowest such ``t`` on ties). Without validation
reports ``t`` keeps its default, said in the log.

Why a grid and not the fixed point ``t = F1(t) / 2`` that the optimal-threshold rule gives for
calibrated probabilities: iterated on validation, that fixed point suited the demo's fused model
(0.5 -> 0.326, F1 0.582 -> 0.653) but lowered the image-only and text-only models' F1 at every step
(0.574 -> 0.483 and 0.383 -> 0.256): their expected readings are not calibrated enough for it.
"""

from __future__ import annotations

import logging
from typing import Literal, cast

import lightning as L
import numpy as np
import torch
from sklearn.metrics import f1_score
from torch.utils.data import Dataset

from medmodal.data.dataset import StudyDataset
from medmodal.evaluation.metrics import tokenize
from medmodal.labeling import default_labeler, to_binary
from medmodal.models.decoders.base import ReportDecoder
from medmodal.models.multimodal import MultimodalModel
from medmodal.runs import RunDir
from medmodal.training.checkpoints import BestCheckpointStage, eval_batches

log = logging.getLogger(__name__)
UncertainAs = Literal["positive", "negative"]


class FillReportBank(BestCheckpointStage):
    """At the end of ``fit``: the bank from ``studies`` with the weights of ``run``'s best checkpoint."""

    name = "report_bank"

    def __init__(
        self,
        run: RunDir,
        studies: StudyDataset,
        batch_size: int,
        num_workers: int = 0,
        validation: StudyDataset | None = None,
        uncertain_as: UncertainAs = "positive",
    ) -> None:
        super().__init__(run)
        self.studies, self.validation = studies, validation
        self.batch_size, self.num_workers = batch_size, num_workers
        self.uncertain_as = (
            uncertain_as  # how the readings count an uncertain mention (evaluate.uncertain_as)
        )

    def run_stage(self, pl_module: L.LightningModule) -> dict[str, torch.Tensor]:
        model: MultimodalModel = pl_module.model  # type: ignore[assignment]
        with self.studies.augmentation_off():
            fill_bank(model, self.studies, self.batch_size, self.num_workers, self.uncertain_as)
        bank = model.report_bank
        assert bank is not None  # the callback is added for retrieved-report runs only
        log.info("report bank: %d training reports in %s", len(bank), self.run.model_checkpoint())
        if bank.by_expected_reading:
            chosen = None
            if self.validation is not None:
                chosen = reading_threshold(
                    model, self.validation, self.batch_size, self.num_workers, self.uncertain_as
                )
            if chosen is None:
                log.info(
                    "report bank: no validation reports; reading threshold t = %.2f",
                    float(bank.reading_threshold),
                )
            else:
                threshold, scores = chosen
                bank.set_reading_threshold(threshold)
                curve = " ".join(f"{score:.3f}" for _, score in scores[1::2])
                log.info(
                    "report bank: reading threshold t = %.2f, validation CE F1 %.3f (at t = 0.1, 0.2, .., 0.9: %s)",
                    threshold, dict(scores)[threshold], curve,
                )  # fmt: skip
        return bank.state_dict(prefix="model.report_bank.")


@torch.no_grad()
def fill_bank(
    model: MultimodalModel,
    studies: Dataset,
    batch_size: int,
    num_workers: int = 0,
    uncertain_as: UncertainAs = "positive",
) -> None:
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
    stored = torch.cat(ids)
    readings = None
    if bank.by_expected_reading:
        tokenizer = cast(StudyDataset, studies).tokenizer
        texts = [tokenizer.decode(row.tolist()) for row in stored]
        readings = torch.as_tensor(labeler_readings(texts, uncertain_as))
    bank.fill(stored, torch.cat(findings), torch.cat(keys), readings)


def labeler_readings(texts: list[str], uncertain_as: UncertainAs = "positive") -> np.ndarray:
    """[N, R] 0/1: the report labeler's findings stated in each text, an uncertain mention counted as
    ``uncertain_as`` says (as the evaluation's CE F1 counts it; R = the labeler's findings)."""
    labeler = default_labeler()
    return to_binary(labeler.label_many(texts), labeler.findings, uncertain_as)


def reports_of(studies: StudyDataset) -> tuple[list[int], list[str]]:
    """Indices and target texts of the studies that have target text."""
    texts = [studies.target_text(study) for study in studies.studies]
    kept = [i for i, text in enumerate(texts) if tokenize(text)]  # as the evaluation keeps references
    return kept, [texts[i] for i in kept]


READING_THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))  # 0.05, 0.10, ..., 0.95


@torch.no_grad()
def reading_threshold(
    model: MultimodalModel,
    validation: StudyDataset,
    batch_size: int,
    num_workers: int = 0,
    uncertain_as: UncertainAs = "positive",
) -> tuple[float, list[tuple[float, float]]] | None:
    """The expected-reading threshold t of ``model``'s bank on ``validation`` (module docstring):
    returns t and the validation CE F1 at each candidate, [(t, F1)]; None when no validation study
    has a report."""
    bank = model.report_bank
    assert bank is not None and bank.by_expected_reading
    kept, texts = reports_of(validation)
    if not kept:
        return None
    references = labeler_readings(texts, uncertain_as)  # [V, R]
    expected = []
    with validation.augmentation_off():
        for batch in eval_batches(model, validation, batch_size, num_workers):
            expected.append(bank.expected_readings(model.retrieval_inputs(batch)[0]))
    q = torch.cat(expected)[kept]  # [V, R]
    # The cosine only breaks ties between reports of the same reading, which score the same: so the
    # choice is made among the bank's distinct readings ([V, U] work, not [V, N]).
    distinct = torch.unique(bank.readings, dim=0).float()  # [U, R]

    def ce_f1(threshold: float) -> float:
        stated = distinct[((q - threshold) @ distinct.T).argmax(dim=1)].cpu().numpy()
        return float(f1_score(references, stated, average="micro", zero_division=0.0))

    scores = [(t, round(ce_f1(t), 4)) for t in READING_THRESHOLDS]
    return max(scores, key=lambda pair: pair[1])[0], scores  # max() keeps the first (lowest t) of ties


def model_eos(model: MultimodalModel) -> int:
    """The decoder's end-of-report id."""
    return int(cast(ReportDecoder, model.decoder).eos_id)
