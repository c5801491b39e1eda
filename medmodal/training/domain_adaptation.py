"""Training-side wiring of domain adaptation (``train.domain_adaptation``; docs/domain-adaptation.md).

- :func:`split_target_sites`: the target sites' labels are never used; their training
  studies become unlabeled data, their validation studies are left out.
- :class:`LabeledFlag` / :func:`with_unlabeled`: the training set with a ``labeled`` [B] bool
  batch key (False for the unlabeled target studies).
- :func:`labeled_rows`: the model output and batch restricted to labeled rows, for the task
  losses (so ``MultitaskLoss`` never sees a target label).
- :class:`DomainAdversary`: the DANN site loss on the fused vector of every row, labeled or not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence, Sized
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.utils.data import ConcatDataset, Dataset

from medmodal.config import DomainAdaptationConfig
from medmodal.data.types import Study
from medmodal.models.domain import SiteClassifier, dann_schedule, site_loss, site_targets
from medmodal.models.types import ModelOutput
from medmodal.training.losses import LossParts


def split_target_sites(
    train: list[Study], val: list[Study], cfg: DomainAdaptationConfig
) -> tuple[list[Study], list[Study], list[Study]]:
    """-> (labeled training studies, validation studies, unlabeled target studies).

    Studies of ``cfg.target_sites`` leave the labeled training and the validation sets;
    their training studies come back as unlabeled data when ``cfg.method`` uses it (dann).
    Without target sites, returns the inputs unchanged and no unlabeled studies.
    """
    targets = set(cfg.target_sites)
    if not targets:
        return train, val, []
    known = {s.site for s in train} | {s.site for s in val}
    missing = sorted(targets - known)
    if missing:
        raise ValueError(
            f"train.domain_adaptation.target_sites: no training or validation studies of {missing}; "
            f"sites in the data: {sorted(s for s in known if s)}"
        )
    labeled = [s for s in train if s.site not in targets]
    unlabeled = [s for s in train if s.site in targets] if cfg.method == "dann" else []
    return labeled, [s for s in val if s.site not in targets], unlabeled


def site_names(studies: Sequence[Study]) -> list[str]:
    """Sorted non-empty sites of ``studies`` (the site classifier's classes)."""
    return sorted({s.site for s in studies if s.site})


class LabeledFlag(Dataset):
    """A dataset whose items get ``labeled`` (bool []): whether their labels may be used."""

    def __init__(self, dataset: Dataset, labeled: bool) -> None:
        self.dataset = dataset
        self.labeled = labeled

    def __len__(self) -> int:
        return len(cast(Sized, self.dataset))  # a map-style dataset with a length

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.dataset[index], "labeled": torch.tensor(self.labeled)}

    def set_random_state(self, seed: int) -> None:
        """Forwarded to the wrapped dataset (augmentation reseeding in workers)."""
        if hasattr(self.dataset, "set_random_state"):
            self.dataset.set_random_state(seed)


class _ReseedingConcat(ConcatDataset):
    def set_random_state(self, seed: int) -> None:
        for dataset in self.datasets:
            cast(LabeledFlag, dataset).set_random_state(seed)  # (with_unlabeled)


def with_unlabeled(labeled: Dataset, unlabeled: Dataset) -> Dataset:
    """One training set of both; batches carry ``labeled`` [B] bool."""
    return _ReseedingConcat([LabeledFlag(labeled, True), LabeledFlag(unlabeled, False)])


def labeled_rows(out: ModelOutput, batch: dict) -> tuple[ModelOutput, dict]:
    """``out`` and ``batch`` restricted to the rows whose ``batch["labeled"]`` is True.

    Every tensor with the batch as first dimension is indexed (also inside nested output
    records such as the localization head's); without a ``labeled`` key,
    or with all rows labeled, the inputs are returned as they are.
    """
    keep = batch.get("labeled")
    if keep is None or bool(keep.all()):
        return out, batch
    keep = keep.bool()
    size = keep.shape[0]

    def rows(value: Any) -> Any:
        if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == size:
            return value[keep]
        if isinstance(value, list) and len(value) == size:
            return [v for v, k in zip(value, keep.tolist()) if k]
        if dataclasses.is_dataclass(value) and not isinstance(value, type):  # e.g. LocalizationOutput
            return dataclasses.replace(
                value, **{f.name: rows(getattr(value, f.name)) for f in dataclasses.fields(value)}
            )
        return value

    fields = {f.name: rows(getattr(out, f.name)) for f in dataclasses.fields(out) if f.name != "fusion"}
    return ModelOutput(**fields, fusion=out.fusion), {k: rows(v) for k, v in batch.items()}


class DomainAdversary(nn.Module):
    """DANN: site classifier behind gradient reversal on ``ModelOutput.fused``.

    Args:
        cfg: ``train.domain_adaptation`` (weight = largest reversal coefficient, schedule).
        fused_dim: width of the model's fused vector.
        sites: class order of the site classifier.
    """

    def __init__(self, cfg: DomainAdaptationConfig, fused_dim: int, sites: list[str]) -> None:
        super().__init__()
        self.cfg = cfg
        self.sites = list(sites)
        self.classifier = SiteClassifier(fused_dim, len(self.sites), hidden_dim=cfg.hidden_dim)

    def coefficient(self, progress: float) -> float:
        """Gradient-reversal lambda at training progress in [0, 1]."""
        ramp = dann_schedule(progress) if self.cfg.schedule == "dann" else 1.0
        return self.cfg.weight * ramp

    def forward(self, out: ModelOutput, batch: dict, progress: float) -> tuple[Tensor, Tensor]:
        """-> (site loss, site accuracy on the rows with a known site)."""
        self.classifier.coefficient = self.coefficient(progress)
        logits = self.classifier(out.fused)
        targets = site_targets(list(batch["site"]), self.sites, device=logits.device)
        known = targets >= 0
        accuracy = (
            (logits.argmax(-1)[known] == targets[known]).float().mean()
            if bool(known.any())
            else logits.new_zeros(())
        )
        return site_loss(logits, targets), accuracy


def build_domain_adversary(
    cfg: DomainAdaptationConfig, fused_dim: int, sites: list[str] | None
) -> DomainAdversary | None:
    """The adversary for ``method: dann`` (needs the training sites), else None."""
    if cfg.method != "dann":
        return None
    if not sites:
        raise ValueError(
            "train.domain_adaptation.method 'dann' needs the training studies' sites (manifest column 'site')"
        )
    return DomainAdversary(cfg, fused_dim, sites)


def task_losses(loss_fn: nn.Module, out: ModelOutput, batch: dict):
    """``loss_fn`` (a ``MultitaskLoss``) on the labeled rows only; zero when a batch has none."""
    task_out, task_batch = labeled_rows(out, batch)
    if task_batch["labels"].shape[0] == 0:
        assert out.fused is not None  # MultimodalModel.forward always sets it
        return LossParts(total=out.fused.sum() * 0.0, parts={})
    return loss_fn(task_out, task_batch)
