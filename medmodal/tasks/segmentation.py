"""Text-guided lesion segmentation: a MONAI U-Net whose decoder is conditioned on the report text.

Network (:class:`medmodal.models.segmentation.TextGuidedUNet`): MONAI's ``BasicUNet`` and,
with ``conditioning: film``, a report encoder from the registry whose vector modulates the
bottleneck and every decoder level by FiLM; with ``conditioning: none`` there is no text branch
at all (the image-only U-Net baseline, same weights otherwise). :class:`SegmentationModule`
trains it with the engine of every medmodal run (:mod:`medmodal.tasks.common`).

Targets: the manifest's ``mask`` column, one PNG label map per study with
value ``k`` = the k-th label of the data set (1-based, ``labels.json`` of the
synthetic data; 0 = background), resized to the model's size by nearest
neighbour. Loss: MONAI ``DiceCELoss`` (softmax over the K = labels + 1 classes).

Metrics (:func:`segmentation_metrics`), per finding class (background
excluded) with MONAI's ``DiceMetric`` and ``MeanIoU`` on the argmax prediction:

* ``dice`` / ``iou``: averaged over the studies whose ground truth has the class
  (MONAI ``ignore_empty=True``); ``n`` = how many;
* ``dice_all``: averaged over all studies, counting a study without the class as
  1 if nothing is predicted there and 0 otherwise (``ignore_empty=False``), so
  false-positive masks on studies without the finding lower it.

``dice_mean`` / ``iou_mean`` / ``dice_all_mean``: the means over the classes with
at least one case.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric, MeanIoU
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from medmodal.data.dataset import TEXT_SEP, StudyDataset, normalize_image, pad_ids
from medmodal.data.manifest import Manifest
from medmodal.data.tokenizer import ReportTokenizer
from medmodal.data.types import RowProblem, Study
from medmodal.errors import InputNotFoundError
from medmodal.models.multimodal import build_part
from medmodal.models.segmentation import TextGuidedUNet
from medmodal.tasks import common
from medmodal.tasks.config import SegmentationConfig
from medmodal.training.engine import PreparedRun, TrainResult

log = logging.getLogger(__name__)

TASK = "segmentation"
MASK_COLUMN = "mask"


# --------------------------------------------------------------------------- model
def build_segmentation_model(
    config: SegmentationConfig, num_classes: int, vocab_size: int, pad_id: int
) -> TextGuidedUNet:
    """The U-Net of ``config`` (text encoder from the registry when ``conditioning`` is ``film``)."""
    text_encoder = None
    if config.conditioning == "film":
        wired = {"vocab_size": vocab_size, "out_dim": config.embed_dim, "pad_id": pad_id}
        text_encoder = build_part("text_encoder", config.text_encoder, wired, {})
    return TextGuidedUNet(num_classes, config.features, text_encoder, config.dropout)


# ---------------------------------------------------------------------------- data
def mask_path(study: Study, manifest_dir: Path, file: str) -> Path:
    """The absolute path of a study's label map; ValueError naming the file, row and field if there is none."""
    relative = str(study.extra.get(MASK_COLUMN) or "").strip()
    if not relative:
        raise ValueError(
            str(
                RowProblem(
                    file,
                    study.row,
                    MASK_COLUMN,
                    "no mask (text-guided segmentation needs one per study)",
                    study.id,
                )
            )
        )
    path = Path(relative)
    path = path if path.is_absolute() else manifest_dir / path
    if not path.is_file():
        raise InputNotFoundError(
            str(RowProblem(file, study.row, MASK_COLUMN, f"mask file not found: {path}", study.id))
        )
    return path


def read_label_map(path: Path, size: int, num_classes: int) -> Tensor:
    """A PNG label map -> long [size, size] (nearest-neighbour resize); ValueError if a value is >= num_classes."""
    with Image.open(path) as handle:
        labels = np.asarray(handle.convert("L") if handle.mode not in ("L", "P") else handle, dtype=np.uint8)
    if labels.ndim != 2:
        raise ValueError(f"{path}: a label map must be a single-channel image, got shape {labels.shape}")
    if labels.max(initial=0) >= num_classes:
        raise ValueError(
            f"{path}: label value {int(labels.max())} but only {num_classes - 1} finding classes"
        )
    tensor = torch.from_numpy(labels.astype(np.int64))[None, None].float()
    return F.interpolate(tensor, size=(size, size), mode="nearest")[0, 0].long()


class SegmentationDataset(Dataset):
    """Items: ``image`` [1,S,S], ``mask`` long [S,S] (0 = background, k = class k), ``text_ids`` / ``text_mask`` [L]."""

    def __init__(
        self,
        studies: Sequence[Study],
        manifest_path: Path,
        tokenizer: ReportTokenizer,
        num_classes: int,
        image_size: int,
        text_fields: Sequence[str],
        max_text_tokens: int,
    ) -> None:
        self.studies = list(studies)
        self.masks = [mask_path(s, manifest_path.parent, str(manifest_path)) for s in self.studies]
        self.images = StudyDataset(self.studies, tokenizer, [], image_size=image_size, cache_images=True)
        self.tokenizer = tokenizer
        self.num_classes = num_classes
        self.image_size = image_size
        self.text_fields = tuple(text_fields)
        self.max_text_tokens = max_text_tokens
        self._mask_cache: dict[int, Tensor] = {}

    def __len__(self) -> int:
        return len(self.studies)

    def __getitem__(self, index: int) -> dict[str, Any]:
        stored = self.images.stored_image(index)
        if stored is None:
            raise ValueError(
                f"study {self.studies[index].id}: image missing or unreadable; segmentation needs it"
            )
        if index not in self._mask_cache:
            self._mask_cache[index] = read_label_map(self.masks[index], self.image_size, self.num_classes)
        text = self.studies[index].text(self.text_fields, sep=TEXT_SEP)
        ids, mask = pad_ids(
            self.tokenizer.encode(text, self.max_text_tokens), self.max_text_tokens, self.tokenizer.pad_id
        )
        return {
            "image": normalize_image(stored[0].float() / 255.0),
            "mask": self._mask_cache[index],
            "text_ids": ids,
            "text_mask": mask,
        }


# ------------------------------------------------------------------------- metrics
class SegmentationScores:
    """Accumulates MONAI Dice / IoU over batches of label maps; :meth:`result` gives per-class and mean figures."""

    def __init__(self, class_names: Sequence[str]) -> None:
        self.class_names = list(class_names)  # finding classes 1..K-1
        self.num_classes = len(self.class_names) + 1
        self.dice = DiceMetric(include_background=False, reduction="mean_batch", ignore_empty=True)
        self.dice_all = DiceMetric(include_background=False, reduction="mean_batch", ignore_empty=False)
        self.iou = MeanIoU(include_background=False, reduction="mean_batch", ignore_empty=True)
        self.cases = torch.zeros(len(self.class_names), dtype=torch.long)

    def update(self, predicted: Tensor, target: Tensor) -> None:
        """predicted, target: long label maps [B,H,W] with values in [0, K)."""
        pred = F.one_hot(predicted, self.num_classes).permute(0, 3, 1, 2).float()
        true = F.one_hot(target, self.num_classes).permute(0, 3, 1, 2).float()
        self.dice(pred, true)
        self.dice_all(pred, true)
        self.iou(pred, true)
        self.cases += true[:, 1:].flatten(2).any(dim=2).sum(dim=0)

    def result(self) -> dict[str, Any]:
        # reduction "mean_batch": one tensor [K-1] per metric
        dice, dice_all, iou = (
            cast(Tensor, m.aggregate()).flatten().tolist() for m in (self.dice, self.dice_all, self.iou)
        )
        per_class = {}
        for c, name in enumerate(self.class_names):
            n = int(self.cases[c])
            per_class[name] = {
                "dice": dice[c] if n else None,
                "iou": iou[c] if n else None,
                "dice_all": dice_all[c],
                "n": n,
            }
        with_cases = [row for row in per_class.values() if row["n"]]

        def mean(key: str) -> float | None:
            return float(np.mean([row[key] for row in with_cases])) if with_cases else None

        return {
            "dice_mean": mean("dice"),
            "iou_mean": mean("iou"),
            "dice_all_mean": mean("dice_all"),
            "per_class": per_class,
        }


def segmentation_metrics(predicted: Tensor, target: Tensor, class_names: Sequence[str]) -> dict[str, Any]:
    """Per-class and mean Dice / IoU of label maps ``predicted``, ``target`` (long [B,H,W]); see the module docstring."""
    scores = SegmentationScores(class_names)
    scores.update(predicted, target)
    return scores.result()


# ------------------------------------------------------------------------ Lightning
class SegmentationModule(common.TaskModule):
    """Trains a :class:`TextGuidedUNet` over background + the finding classes (``labels``) with MONAI
    ``DiceCELoss``; validation ``dice_mean`` is ``val/dice``."""

    config_class = SegmentationConfig
    config: SegmentationConfig
    monitor = "val/dice"

    def __init__(self, config: dict[str, Any], vocab_size: int, pad_id: int, labels: list[str]) -> None:
        super().__init__(config, vocab_size, pad_id, labels)
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)
        self.val_scores = SegmentationScores(self.labels)

    def build_network(self, vocab_size: int, pad_id: int) -> TextGuidedUNet:
        return build_segmentation_model(self.config, len(self.labels) + 1, vocab_size, pad_id)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Class logits [B,K,H,W] of a batch of :class:`SegmentationDataset` items."""
        return self.model(batch["image"], batch["text_ids"], batch["text_mask"])

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.loss(self(batch), batch["mask"][:, None])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["mask"]))
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_scores = SegmentationScores(self.labels)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        logits = self(batch)
        self.log(
            "val/loss",
            self.loss(logits, batch["mask"][:, None]),
            batch_size=len(batch["mask"]),
            sync_dist=True,
        )
        self.val_scores.update(logits.argmax(dim=1).cpu(), batch["mask"].cpu())

    def on_validation_epoch_end(self) -> None:
        dice = self.val_scores.result()["dice_mean"]  # None: no validation study has a finding
        self.log(self.monitor, float("nan") if dice is None else dice, prog_bar=True, sync_dist=True)


@torch.no_grad()
def score_loader(module: SegmentationModule, loader: DataLoader) -> dict[str, Any]:
    """:func:`segmentation_metrics` of the module's argmax prediction over a loader (eval mode)."""
    module.eval()
    scores = SegmentationScores(module.labels)
    for batch in loader:
        scores.update(module(batch).argmax(dim=1), batch["mask"])
    return scores.result()


# ------------------------------------------------------------------- train / evaluate
def class_names_of(manifest: Manifest, data: str | Path) -> list[str]:
    """The finding classes of the label maps, in mask-value order: the data set's ``labels.json`` if present."""
    labels_file = manifest.path.parent / "labels.json"
    if labels_file.is_file():
        labels = json.loads(labels_file.read_text())
        if isinstance(labels, list) and all(isinstance(x, str) for x in labels):
            return labels
    log.info("%s: no labels.json next to the manifest; mask values follow the manifest's label order", data)
    return list(manifest.label_names)


def segmentation_dataset(studies: Sequence[Study], manifest: Manifest, tokenizer: ReportTokenizer,
                         class_names: Sequence[str], config: SegmentationConfig) -> SegmentationDataset:  # fmt: skip
    """The :class:`SegmentationDataset` of ``studies`` as ``config`` describes it."""
    return SegmentationDataset(studies, manifest.path, tokenizer, len(class_names) + 1, config.image_size,
                               config.text_fields, config.max_text_tokens)  # fmt: skip


def train_segmentation(data: str | Path, out: str | Path, config: SegmentationConfig | None = None, *,
                       force: bool = False) -> TrainResult:  # fmt: skip
    """Train the (text-guided or image-only) U-Net on ``data``'s training studies into the run folder ``out``."""
    config = config or SegmentationConfig()

    def build(prepared: PreparedRun) -> common.TaskData:
        manifest = common.read_task_manifest(data)
        class_names = class_names_of(manifest, data)
        train_studies, val_studies = manifest.split("train"), manifest.split("val")
        if not train_studies or not val_studies:
            raise ValueError(f"{manifest.path}: segmentation needs training and validation studies, found "
                             f"{len(train_studies)} and {len(val_studies)}")  # fmt: skip
        # The vocabulary is learnt from the sections one by one (as medmodal train does): texts that
        # contain "[SEP]" make ReportTokenizer.train skip an id and report a vocab_size one too small.
        tokenizer = common.run_tokenizer(prepared.run, lambda: [
            s.sections[f] for s in train_studies for f in config.text_fields if s.sections.get(f)
        ], config.min_token_freq)  # fmt: skip
        module = SegmentationModule(
            config.model_dump(mode="json"), tokenizer.vocab_size, tokenizer.pad_id, class_names
        )
        summary = {
            "data": str(Path(data).resolve()),
            "studies": {"train": len(train_studies), "val": len(val_studies)},
        }
        return common.TaskData(module, segmentation_dataset(train_studies, manifest, tokenizer, class_names, config),
                        segmentation_dataset(val_studies, manifest, tokenizer, class_names, config),
                        tokenizer, class_names, summary)  # fmt: skip

    return common.train_task(out, config, build, monitor=SegmentationModule.monitor, force=force)


def evaluate_segmentation(
    run: str | Path, data: str | Path | None = None, *, split: str = "test"
) -> dict[str, Any]:
    """Score a run's segmentation model on ``split``; adds ``segmentation`` to the run's metrics file."""
    trained = common.load_task(run, SegmentationModule)
    config = trained.module.config
    data = data or trained.data
    manifest = common.read_task_manifest(data)
    studies = manifest.split(split)
    if not studies:
        raise ValueError(f"{manifest.path}: split '{split}' is empty")
    dataset = segmentation_dataset(studies, manifest, trained.tokenizer, trained.labels, config)
    scores = score_loader(trained.module, common.eval_loader(dataset))
    metrics = {"split": split, "data": str(Path(data).resolve()), "conditioning": config.conditioning,
               "n_studies": len(studies), **scores}  # fmt: skip
    common.merge_metrics(trained.run, TASK, split, metrics)
    return metrics


def format_segmentation_metrics(metrics: dict[str, Any]) -> str:
    """A small text table of per-class and mean Dice / IoU."""

    def cell(value: float | None) -> str:
        return "  n/a" if value is None else f"{value:.3f}"

    lines = [
        f"split {metrics['split']}: {metrics['n_studies']} studies, conditioning={metrics['conditioning']}",
        f"  {'class':<16}{'dice':>8}{'iou':>8}{'dice_all':>10}{'n':>6}",
    ]
    for name, row in metrics["per_class"].items():
        lines.append(
            f"  {name:<16}{cell(row['dice']):>8}{cell(row['iou']):>8}{cell(row['dice_all']):>10}{row['n']:>6}"
        )
    lines.append(
        f"  {'mean':<16}{cell(metrics['dice_mean']):>8}{cell(metrics['iou_mean']):>8}{cell(metrics['dice_all_mean']):>10}"
    )
    return "\n".join(lines)
