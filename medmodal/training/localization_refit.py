"""Second stage of the box head: a fresh localization head fitted on frozen features.

At the demo's budget (6 epochs, ~130 optimiser steps) the jointly trained head is undertrained:
its validation loss still falls at the last epoch, and its figures move by about 0.1 hit@0.5
between seeds (docs/localization.md). ``train.localization_refit_epochs: N`` adds a stage when
``fit`` ends (:class:`RefitLocalizer`, on the best checkpoint's weights):

1. one pass in eval mode over the training studies (augmentation off, dataset order) keeps what
   the head reads: the image encoder's grid, the fused vector, the image, the boxes and labels;
2. the head is drawn afresh (seeded by ``train.seed``) and trained for N epochs on those, the
   encoders and the fusion frozen: AdamW at ``train.lr * train.localization_lr_scale``, a
   one-cycle schedule, the same loss as in joint training (CenterNet focal loss + offset L1 +
   GIoU; :meth:`MultitaskLoss.localization_loss`), studies reshuffled every epoch;
3. the new head's weights are written into the best checkpoint (atomically).

A refit epoch costs the head alone (the encoders ran once), and the head does not compete with
the other tasks for the shared layers. The stage depends only on the checkpoint's encoders, the
training studies and the seed, so a run killed during it and run again writes the same head.
Memory: the kept tensors are capped at :data:`MAX_REFIT_BYTES` (at the demo's settings about 80 KB
a study, mostly the image, so all of up to ~26,000 training studies at 128 px, ~2,100 at 512 px);
the studies past the cap (in dataset order) are left out of the refit, and the log says how many.
"""

from __future__ import annotations

import logging
import time

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from medmodal.config import TrainConfig
from medmodal.data.dataset import StudyDataset
from medmodal.models.localization import LocalizationHead
from medmodal.models.multimodal import MultimodalModel
from medmodal.runs import RunDir
from medmodal.training.checkpoints import BestCheckpointStage, eval_batches
from medmodal.training.losses import MultitaskLoss
from medmodal.training.optim import adamw_one_cycle, single_group

log = logging.getLogger(__name__)

# The refit keeps the head's inputs of the training studies in memory, up to this many bytes.
MAX_REFIT_BYTES = 2 * 1024**3
# Share of the refit's steps its one-cycle schedule spends warming up.
REFIT_WARMUP = 0.3
# What the head and its loss read from a batch, kept for every study.
KEPT = ("grid", "vector", "image", "seen", "box_list", "box_labels", "labels")


class RefitLocalizer(BestCheckpointStage):
    """At the end of ``fit``: ``model.localizer`` refitted on frozen features of ``studies``."""

    name = "localization_refit"

    def __init__(self, run: RunDir, studies: StudyDataset, train: TrainConfig, num_workers: int = 0) -> None:
        super().__init__(run)
        self.studies, self.train, self.num_workers = studies, train, num_workers

    def run_stage(self, pl_module: L.LightningModule) -> dict[str, Tensor]:
        model: MultimodalModel = pl_module.model  # type: ignore[assignment]
        loss: MultitaskLoss = pl_module.loss  # type: ignore[assignment]
        with self.studies.augmentation_off():
            refit_localizer(model, loss, self.studies, self.train, self.num_workers)
        assert model.localizer is not None  # the callback is added for models with the head only
        return model.localizer.state_dict(prefix="model.localizer.")


@torch.no_grad()
def head_inputs(
    model: MultimodalModel,
    studies: StudyDataset,
    batch_size: int,
    num_workers: int = 0,
    max_bytes: int = MAX_REFIT_BYTES,
) -> dict[str, Tensor]:
    """One pass in eval mode, in dataset order: per study the encoder grid [N, G, h, w], the fused
    vector [N, D], the image [N, 1, H, W], whether the model saw it [N], the boxes [N, M, 4] (padded
    with label -1 to the most boxes M of any study), their labels [N, M] and the labels [N, C].
    N: the first studies whose kept tensors fit ``max_bytes`` (at least one batch)."""
    parts: dict[str, list[Tensor]] = {key: [] for key in KEPT}
    kept_bytes = 0
    for batch in eval_batches(model, studies, batch_size, num_workers):
        if kept_bytes >= max_bytes:
            break
        image, text, image_present, _ = model.encode(batch, modality_dropout=False)
        assert image is not None  # a localization head is built only with an image encoder
        vector, _ = model.fuse(image, text)
        seen = image_present if image_present is not None else batch["has_image"]
        for key, value in zip(
            KEPT,
            (
                image.grid,
                vector,
                batch["image"],
                seen,
                batch["box_list"],
                batch["box_labels"],
                batch["labels"],
            ),
        ):
            parts[key].append(value.detach().cpu())
            kept_bytes += value.element_size() * value.nelement()
    most = max(boxes.shape[1] for boxes in parts["box_list"])
    parts["box_list"] = [F.pad(b, (0, 0, 0, most - b.shape[1])) for b in parts["box_list"]]
    parts["box_labels"] = [F.pad(b, (0, most - b.shape[1]), value=-1) for b in parts["box_labels"]]
    return {key: torch.cat(values) for key, values in parts.items()}


def refit_localizer(
    model: MultimodalModel,
    loss: MultitaskLoss,
    studies: StudyDataset,
    train: TrainConfig,
    num_workers: int = 0,
) -> list[float]:
    """Replace ``model.localizer``'s weights by a fresh head fitted for ``train.localization_refit_epochs``
    epochs on the frozen features of ``studies`` (module docstring). Returns the mean loss per epoch;
    the model is left in eval mode."""
    head = model.localizer
    if head is None:
        raise ValueError("this model has no localization head to refit")
    start = time.time()
    kept = head_inputs(model, studies, train.batch_size, num_workers)
    if len(kept["grid"]) < len(studies):
        log.warning(
            "localization refit: the first %d of %d training studies fit the %d MiB it keeps in memory; "
            "the others are left out of the refit", len(kept["grid"]), len(studies), MAX_REFIT_BYTES // 2**20,
        )  # fmt: skip
    device = next(head.parameters()).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train.seed)
        head.reset_parameters()
    epochs = train.localization_refit_epochs
    losses = fit_head(head, loss, kept, train, epochs, device)
    model.eval()
    log.info(
        "localization refit: a fresh head, %d epochs on %d training studies in %.0f s; loss %.3f -> %.3f",
        epochs, len(kept["grid"]), time.time() - start, losses[0] if losses else float("nan"),
        losses[-1] if losses else float("nan"),
    )  # fmt: skip
    return losses


def fit_head(
    head: LocalizationHead,
    loss: MultitaskLoss,
    kept: dict[str, Tensor],
    train: TrainConfig,
    epochs: int,
    device: torch.device,
) -> list[float]:
    """Train ``head`` on the kept inputs (:func:`head_inputs`) for ``epochs``; mean loss per epoch."""
    n = len(kept["grid"])
    steps = epochs * -(-n // train.batch_size)
    # Warm-up over 30 % of the steps (PyTorch's one-cycle default), the setting the refit was measured with.
    built = adamw_one_cycle(
        single_group(head, train.lr * train.localization_lr_scale), train, steps, warmup_fraction=REFIT_WARMUP
    )
    optimizer, schedule = built["optimizer"], built["lr_scheduler"]["scheduler"]
    order = torch.Generator().manual_seed(train.seed)
    head.train()
    losses = []
    for _ in range(epochs):
        total = 0.0
        for rows in torch.randperm(n, generator=order).split(train.batch_size):
            batch = {key: value[rows].to(device) for key, value in kept.items()}
            out = head(batch["grid"], batch["vector"], batch["image"])
            value = loss.localization_loss(out, batch, batch["seen"])
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            if train.gradient_clip > 0:
                torch.nn.utils.clip_grad_norm_(head.parameters(), train.gradient_clip)
            optimizer.step()
            schedule.step()
            total += float(value.detach()) * len(rows)
        losses.append(total / n)
    head.eval()
    return losses
