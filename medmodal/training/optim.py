"""The optimiser and learning-rate schedule of every medmodal training run (supervised, pretraining, tasks)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from medmodal.config import TrainerConfig

WARMUP_FRACTION = 0.15  # share of the steps the one-cycle schedule spends rising to the peak


def adamw_one_cycle(
    groups: Iterable[dict], train: TrainerConfig, total_steps: int, warmup_fraction: float = WARMUP_FRACTION
) -> dict:
    """AdamW over parameter ``groups`` (each ``{"params", "lr"}``) with a per-step one-cycle schedule
    peaking at each group's ``lr``; what ``LightningModule.configure_optimizers`` returns.

    Args:
        groups: optimiser groups; a group's ``lr`` is its peak learning rate.
        train: ``lr`` (default peak) and ``weight_decay``.
        total_steps: optimiser steps of the whole run (``trainer.estimated_stepping_batches``).
        warmup_fraction: share of the steps spent rising to the peak.
    """
    groups = list(groups)
    optimizer = torch.optim.AdamW(groups, lr=train.lr, weight_decay=train.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[g["lr"] for g in groups],
        total_steps=max(1, int(total_steps)),
        pct_start=warmup_fraction,
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def single_group(module: torch.nn.Module, lr: float) -> list[dict]:
    """All of ``module``'s parameters in one optimiser group at ``lr``."""
    return [{"params": list(module.parameters()), "lr": lr}]
