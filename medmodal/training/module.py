"""Lightning module: the multimodal model, its multi-task loss, optimisation and validation metric."""

from __future__ import annotations

from typing import Any, cast

import lightning as L
import torch
from torchmetrics import Metric
from torchmetrics.classification import BinaryAUROC, MultilabelAUROC
from torchmetrics.utilities import dim_zero_cat

from medmodal.config import Config
from medmodal.data.tokenizer import ReportTokenizer
from medmodal.models.calibration import fill_missing_calibration
from medmodal.models.multimodal import create_model
from medmodal.training.domain_adaptation import build_domain_adversary, task_losses
from medmodal.training.finding_thresholds import BestF1Thresholds
from medmodal.training.losses import MultitaskLoss
from medmodal.training.modality_balance import modality_scores, ogm_coefficients, scale_gradients
from medmodal.training.optim import adamw_one_cycle

# Weights of the deep head tried on the validation split after each epoch (stacked wide pathways).
DEEP_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


class DefinedMacroAUROC(MultilabelAUROC):
    """Macro AUROC over the labels whose targets contain both classes.

    torchmetrics scores a label without positives as 0 and averages it in, which
    drags the macro down on small validation sets with rare findings; here such
    labels are left out (synchronised across processes like the parent metric).
    """

    def __init__(self, num_labels: int):
        super().__init__(num_labels=num_labels, average="none", thresholds=None)

    # the AUROC parents return a Tensor from the precision-recall-curve compute (torchmetrics
    # ignores the same override error on its own AUROC classes)
    def compute(self) -> torch.Tensor:  # type: ignore[override]
        per_label = super().compute()
        target = dim_zero_cat(self.target)
        positives = (target == 1).sum(dim=0)
        defined = (positives > 0) & (positives < target.shape[0])
        if not defined.any():
            return torch.tensor(float("nan"))
        return per_label[defined].mean()


class DefinedBinaryAUROC(BinaryAUROC):
    """The single-label case of :class:`DefinedMacroAUROC` (torchmetrics' multilabel AUROC
    needs at least two labels): NaN unless the targets contain both classes."""

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """preds, target: [B, 1] (or [B])."""
        super().update(preds.reshape(-1), target.reshape(-1))

    def compute(self) -> torch.Tensor:  # type: ignore[override]  # as DefinedMacroAUROC.compute
        target = dim_zero_cat(self.target)
        positives = int((target == 1).sum())
        if positives == 0 or positives == target.numel():
            return torch.tensor(float("nan"))
        return super().compute()


def _metrics(metrics: torch.nn.ModuleList | None) -> list[Metric]:
    """The metrics of a ModuleList (registered there so Lightning moves them with the module); [] for None."""
    return cast(list[Metric], list(metrics or []))


def defined_macro_auroc(num_labels: int) -> Metric:
    """Validation AUROC for ``num_labels`` findings (one label: binary AUROC)."""
    return DefinedBinaryAUROC(thresholds=None) if num_labels == 1 else DefinedMacroAUROC(num_labels)


class MultimodalModule(L.LightningModule):
    """Trains a :class:`~medmodal.models.multimodal.MultimodalModel` on batch dicts.

    Everything needed to rebuild the model is in the hyper-parameters, so
    ``module_from_checkpoint(MultimodalModule, path)`` (:mod:`medmodal.training.checkpoints`,
    weights only, never ``load_from_checkpoint``'s unpickling) restores it from the checkpoint alone.
    """

    def __init__(
        self,
        config: dict[str, Any],
        vocab_size: int,
        num_labels: int,
        pad_id: int,
        bos_id: int,
        eos_id: int,
        pos_weight: list[float] | None = None,
        site_names: list[str] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.config = Config.model_validate(config)
        self.model = create_model(
            self.config.model,
            vocab_size=vocab_size,
            num_labels=num_labels,
            pad_id=pad_id,
            bos_id=bos_id,
            eos_id=eos_id,
        )
        self.loss = MultitaskLoss(self.config.train, num_labels, pad_id, pos_weight)
        self.val_auroc = defined_macro_auroc(num_labels)
        # Diagnosis-driven generation with thresholds chosen on validation (docs/reports.md), else None.
        conditioning = self.config.model.report_conditioning
        with_thresholds = self.model.condition_on_findings and isinstance(conditioning.threshold, str)
        pooled = conditioning.threshold == "val_micro_f1"
        self.val_thresholds = BestF1Thresholds(pooled) if with_thresholds else None
        # Stacked wide pathways: the validation AUROC (and finding thresholds) at each weight of the
        # deep head (DEEP_WEIGHTS); the thresholds are those of the chosen weight's probabilities.
        self.val_auroc_by_deep_weight = self.val_thresholds_by_deep_weight = None
        if self.model.deep_weight is not None:
            self.val_auroc_by_deep_weight = torch.nn.ModuleList(
                defined_macro_auroc(num_labels) for _ in DEEP_WEIGHTS
            )
            if with_thresholds:
                self.val_thresholds_by_deep_weight = torch.nn.ModuleList(
                    BestF1Thresholds(pooled) for _ in DEEP_WEIGHTS
                )
        # DANN site adversary (train.domain_adaptation.method: dann), else None; training only.
        self.domain = build_domain_adversary(
            self.config.train.domain_adaptation, self.model.fused_dim, site_names
        )

    @classmethod
    def for_tokenizer(
        cls,
        config: Config,
        tokenizer: ReportTokenizer,
        num_labels: int,
        pos_weight: list[float] | None = None,
        site_names: list[str] | None = None,
    ) -> MultimodalModule:
        """The module of ``config`` with the vocabulary size and special ids of ``tokenizer``."""
        return cls(
            config.model_dump(mode="json"),
            vocab_size=tokenizer.vocab_size,
            num_labels=num_labels,
            pad_id=tokenizer.pad_id,
            bos_id=tokenizer.bos_id,
            eos_id=tokenizer.eos_id,
            pos_weight=pos_weight,
            site_names=site_names,
        )

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Resuming from a checkpoint saved before the calibration was persistent: the identity."""
        fill_missing_calibration(checkpoint["state_dict"], self)

    def forward(self, batch: dict):
        return self.model(batch)

    def _shared_step(self, batch: dict, stage: str) -> torch.Tensor:
        # A decoder whose loss weighs 0 (reports retrieved, not written) is not run: teacher forcing
        # is 60 % of a training step of the demo's fused model (benchmarks/decoder_step_share.py).
        skip_decoder = self.config.train.loss_weights.generation == 0 and "target_ids" in batch
        out = self.model({k: v for k, v in batch.items() if k != "target_ids"} if skip_decoder else batch)
        losses = task_losses(self.loss, out, batch)  # rows flagged unlabeled (target sites) left out
        if self.domain is not None and stage == "train":
            progress = self.global_step / max(1, int(self.trainer.estimated_stepping_batches))
            losses.parts["domain"], site_accuracy = self.domain(out, batch, progress)
            losses.total = losses.total + losses.parts["domain"]
            self.log("train/site_accuracy", site_accuracy, batch_size=batch["labels"].shape[0])
        batch_size = batch["labels"].shape[0]
        self.log(
            f"{stage}/loss", losses.total, prog_bar=True, batch_size=batch_size, sync_dist=stage != "train"
        )
        for name, value in losses.parts.items():
            self.log(f"{stage}/loss_{name}", value, batch_size=batch_size, sync_dist=stage != "train")
        if stage == "val":
            self.val_auroc.update(torch.sigmoid(out.logits.detach()), batch["labels"].long())
            if self.val_auroc_by_deep_weight is not None and out.stacked_logits is not None:
                # validation runs at deep weight 1 (on_validation_epoch_start): logits = deep + stacked
                stacked, deep = out.stacked_logits.detach(), out.logits.detach() - out.stacked_logits.detach()
                aurocs, thresholds = (
                    _metrics(self.val_auroc_by_deep_weight),
                    _metrics(self.val_thresholds_by_deep_weight),
                )
                for i, weight in enumerate(DEEP_WEIGHTS):
                    probs = torch.sigmoid(stacked + weight * deep)
                    aurocs[i].update(probs, batch["labels"].long())
                    if thresholds:
                        thresholds[i].update(probs, batch["labels"])
            if self.val_thresholds is not None and self.val_thresholds_by_deep_weight is None:
                self.val_thresholds.update(torch.sigmoid(out.logits.detach()), batch["labels"])
        if stage == "train" and self.config.train.modality_balance == "ogm":
            self._set_ogm_coefficients(out, batch, batch_size)
        return losses.total

    def _set_ogm_coefficients(self, out, batch: dict, batch_size: int) -> None:
        """OGM (medmodal.training.modality_balance): scores averaged over processes, so every
        DDP replica scales its gradients by the same factors."""
        scores = modality_scores(out, batch)
        scores = torch.nan_to_num(scores, nan=-1.0)  # "undefined" survives the mean as a negative
        if self.trainer is not None and self.trainer.world_size > 1:
            scores = self.trainer.strategy.reduce(scores, reduce_op="mean")
        self._ogm = ogm_coefficients(float(scores[0]), float(scores[1]), self.config.train.ogm_alpha)
        self.log("train/ogm_k_image", self._ogm[0], batch_size=batch_size)
        self.log("train/ogm_k_text", self._ogm[1], batch_size=batch_size)

    def on_after_backward(self) -> None:
        k_image, k_text = getattr(self, "_ogm", (1.0, 1.0))
        if self.model.image_encoder is not None:
            scale_gradients(self.model.image_encoder, k_image)
        if self.model.text_encoder is not None:
            scale_gradients(self.model.text_encoder, k_text)
        self._ogm = (1.0, 1.0)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def on_validation_epoch_start(self) -> None:
        if self.model.deep_weight is not None:
            self.model.deep_weight.fill_(1.0)

    def on_validation_epoch_end(self) -> None:
        auroc = self.val_auroc.compute()
        self.val_auroc.reset()
        thresholds = self.val_thresholds
        # val/auroc_macro stays the deep model's own (deep weight 1); a stacked run's checkpoint is
        # chosen by the validation loss (wide_stacking.checkpoint_monitor).
        self.log("val/auroc_macro", auroc, prog_bar=True)
        if self.val_auroc_by_deep_weight is not None:
            weighted, chosen = self._choose_deep_weight(auroc)
            self.log("val/auroc_macro_at_deep_weight", weighted, prog_bar=True)
            if self.val_thresholds_by_deep_weight is not None:
                thresholds = cast(BestF1Thresholds, self.val_thresholds_by_deep_weight[chosen])
        if thresholds is not None:  # before checkpointing: the checkpoint keeps them
            # reshape: torchmetrics squeezes a one-label result to a scalar
            self.model.set_finding_thresholds(thresholds.compute().reshape(-1))
        for metric in [self.val_thresholds, *(self.val_thresholds_by_deep_weight or [])]:
            if metric is not None:
                metric.reset()

    def _choose_deep_weight(self, auroc_at_one: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Set the model's deep weight to the one of DEEP_WEIGHTS with the best validation macro AUROC
        (ties: the larger weight; before checkpointing, so the checkpoint keeps it). Returns (that
        AUROC, its index); with an undefined AUROC, (``auroc_at_one``, the index of weight 1)."""
        assert self.val_auroc_by_deep_weight is not None and self.model.deep_weight is not None
        scores = [metric.compute() for metric in _metrics(self.val_auroc_by_deep_weight)]
        for metric in _metrics(self.val_auroc_by_deep_weight):
            metric.reset()
        if any(bool(torch.isnan(score)) for score in scores):
            return auroc_at_one, DEEP_WEIGHTS.index(1.0)
        best = max(range(len(DEEP_WEIGHTS)), key=lambda i: (float(scores[i]), DEEP_WEIGHTS[i]))
        self.model.deep_weight.fill_(DEEP_WEIGHTS[best])
        self.log("val/deep_weight", DEEP_WEIGHTS[best])
        return scores[best], best

    def parameter_groups(self) -> list[dict]:
        """Optimiser groups: the localization head at ``lr * train.localization_lr_scale`` (a dense head
        trained from scratch), the wide pathways (``model.wide``) at ``lr * train.wide_lr_scale`` with
        ``train.wide_weight_decay`` (0 for stacked pathways), everything else at ``lr``."""
        cfg = self.config.train
        # A stacked pathway's only trained parameters are its stacking weights: no decay towards 0.
        decay = 0.0 if self.config.model.wide.fit == "stacked" else cfg.wide_weight_decay
        wide = {"lr": cfg.lr * cfg.wide_lr_scale, "weight_decay": decay}
        parts = [(self.model.localizer, {"lr": cfg.lr * cfg.localization_lr_scale}),
                 (self.model.wide_image, wide), (self.model.wide_text, wide)]  # fmt: skip
        special = [(part, settings) for part, settings in parts if part is not None]
        taken = {id(p) for part, _ in special for p in part.parameters()}
        groups = [{"params": [p for p in self.parameters() if id(p) not in taken], "lr": cfg.lr}]
        return groups + [{"params": list(part.parameters()), **settings} for part, settings in special]

    def configure_optimizers(self):
        return adamw_one_cycle(
            self.parameter_groups(), self.config.train, self.trainer.estimated_stepping_batches
        )
