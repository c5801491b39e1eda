"""Per-finding thresholds of diagnosis-driven report generation, chosen on the validation split.

A model whose decoder is conditioned on the findings (``model.report_conditioning.mode:
findings``, docs/reports.md) passes a finding to the decoder when the classifier's probability
reaches that finding's threshold. With ``threshold: val_f1`` the threshold is the one with the
best F1 over each validation epoch's studies (the same rule as the report baselines,
:func:`~medmodal.evaluation.metrics.best_f1_thresholds`); with ``threshold: val_micro_f1`` the
thresholds with the best F1 pooled over all findings
(:func:`~medmodal.evaluation.metrics.best_micro_f1_thresholds`). The model keeps them in a
buffer, so the best checkpoint carries the thresholds of its own validation epoch.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from medmodal.evaluation.metrics import best_f1_thresholds, best_micro_f1_thresholds


class BestF1Thresholds(Metric):
    """Collects validation probabilities and labels (gathered across processes);
    ``compute()`` -> float [C] best-F1 threshold per finding (0.5 for one without positives), or
    with ``pooled`` the thresholds with the best micro F1 over all findings."""

    full_state_update = False
    probs: list[torch.Tensor]  # states (add_state), one [B, C] tensor per update
    labels: list[torch.Tensor]

    def __init__(self, pooled: bool = False) -> None:
        super().__init__()
        self.pooled = pooled
        self.add_state("probs", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")

    def update(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        """probs, labels: [B, C]."""
        self.probs.append(probs.detach().float())
        self.labels.append(labels.detach().float())

    def compute(self) -> torch.Tensor:
        probs, labels = dim_zero_cat(self.probs), dim_zero_cat(self.labels)
        choose = best_micro_f1_thresholds if self.pooled else best_f1_thresholds
        thresholds = choose(probs.cpu().numpy(), labels.cpu().numpy())
        return torch.as_tensor(thresholds, dtype=torch.float32)
