"""Text-guided lesion segmentation: a MONAI U-Net whose decoder is conditioned on the report text.

Model (:class:`TextGuidedUNet`): MONAI's ``BasicUNet`` (2-D; encoder of five
two-conv levels, decoder of four up-and-concatenate levels, 1x1 output conv)
and, with ``conditioning: film``, a report encoder from the registry whose
vector modulates the bottleneck and every decoder level by FiLM (Perez et al.
2018): ``x * (1 + gamma(t)) + beta(t)`` per channel. The FiLM layers start at
zero, so the text-guided network starts as the image-only one; with
``conditioning: none`` there is no text branch at all (the image-only U-Net
baseline, same weights otherwise).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric, MeanIoU
from monai.networks.nets import BasicUNet
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from medmodal.data.dataset import TEXT_SEP, StudyDataset, normalize_image, pad_ids
from medmodal.data.manifest import Manifest
from medmodal.data.tokenizer import ReportTokenizer
from medmodal.data.types import RowProblem, Study
from medmodal.models import registry
from medmodal.models.pretrained import load_pretrained
from medmodal.runs import write_json_atomic
from medmodal.tasks.common import FitResult, TaskDir, fit, merge_metrics, read_task_manifest, seeded_generator
from medmodal.tasks.config import SegmentationConfig, load_task_config, save_task_config

log = logging.getLogger(__name__)

TASK = "segmentation"
MASK_COLUMN = "mask"


# --------------------------------------------------------------------------- model
class FiLM(nn.Module):
    """Feature-wise linear modulation of a feature map by a condition vector, initialised to the identity.

    ``forward(x [B,C,h,w], condition [B,D]) -> x * (1 + gamma) + beta`` with ``(gamma, beta) = Linear(condition)``.
    """

    def __init__(self, condition_dim: int, channels: int) -> None:
        super().__init__()
        self.project = nn.Linear(condition_dim, 2 * channels)
        nn.init.zeros_(self.project.weight)
        nn.init.zeros_(self.project.bias)

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        gamma, beta = self.project(condition)[:, :, None, None].chunk(2, dim=1)
        return x * (1.0 + gamma) + beta


class TextGuidedUNet(nn.Module):
    """MONAI BasicUNet, optionally FiLM-conditioned on a report vector at the bottleneck and each decoder level.

    Args:
        num_classes: K output channels (background + findings).
        features: BasicUNet widths ``(f0, f1, f2, f3, f4, f_out)``.
        text_encoder: a registry text encoder, or None for the image-only U-Net.
        dropout: BasicUNet dropout.
    """

    def __init__(
        self,
        num_classes: int,
        features: Sequence[int] = (16, 16, 32, 64, 128, 16),
        text_encoder: nn.Module | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.unet = BasicUNet(spatial_dims=2, in_channels=1, out_channels=num_classes, features=tuple(features), dropout=dropout)
        self.text_encoder = text_encoder
        self.films = None
        if text_encoder is not None:
            f = tuple(features)
            stage_channels = (f[4], f[3], f[2], f[1], f[5])  # bottleneck, then decoder levels 4 -> 1
            self.films = nn.ModuleList(FiLM(text_encoder.out_dim, c) for c in stage_channels)

    @property
    def conditioned(self) -> bool:
        return self.text_encoder is not None

    def forward(self, image: Tensor, text_ids: Tensor | None = None, text_mask: Tensor | None = None) -> Tensor:
        """image [B,1,H,W] (H, W multiples of 16), text_ids / text_mask [B,L] -> class logits [B,K,H,W]."""
        if self.text_encoder is None:
            return self.unet(image)
        if text_ids is None or text_mask is None:
            raise ValueError("this U-Net is text-conditioned: pass text_ids and text_mask")
        condition = self.text_encoder(text_ids, text_mask).vector
        film = [lambda x, layer=layer: layer(x, condition) for layer in self.films]
        u = self.unet  # BasicUNet.forward, with FiLM after the bottleneck and each decoder level
        x0 = u.conv_0(image)
        x1 = u.down_1(x0)
        x2 = u.down_2(x1)
        x3 = u.down_3(x2)
        x4 = film[0](u.down_4(x3))
        u4 = film[1](u.upcat_4(x4, x3))
        u3 = film[2](u.upcat_3(u4, x2))
        u2 = film[3](u.upcat_2(u3, x1))
        u1 = film[4](u.upcat_1(u2, x0))
        return u.final_conv(u1)


def build_segmentation_model(config: SegmentationConfig, num_classes: int, vocab_size: int, pad_id: int) -> TextGuidedUNet:
    """The U-Net of ``config`` (text encoder from the registry when ``conditioning`` is ``film``)."""
    text_encoder = None
    if config.conditioning == "film":
        part = config.text_encoder
        text_encoder = registry.create("text_encoder", part.name, vocab_size=vocab_size, out_dim=config.embed_dim,
                                       pad_id=pad_id, **part.kwargs)
        if part.pretrained_path:
            load_pretrained(text_encoder, part.pretrained_path)
    return TextGuidedUNet(num_classes, config.features, text_encoder, config.dropout)


# ---------------------------------------------------------------------------- data
def mask_path(study: Study, manifest_dir: Path, file: str) -> Path:
    """The absolute path of a study's label map; ValueError naming the file, row and field if there is none."""
    relative = str(study.extra.get(MASK_COLUMN) or "").strip()
    if not relative:
        raise ValueError(str(RowProblem(file, study.row, MASK_COLUMN, "no mask (text-guided segmentation needs one per study)", study.id)))
    path = Path(relative)
    path = path if path.is_absolute() else manifest_dir / path
    if not path.is_file():
        raise FileNotFoundError(str(RowProblem(file, study.row, MASK_COLUMN, f"mask file not found: {path}", study.id)))
    return path


def read_label_map(path: Path, size: int, num_classes: int) -> Tensor:
    """A PNG label map -> long [size, size] (nearest-neighbour resize); ValueError if a value is >= num_classes."""
    with Image.open(path) as handle:
        labels = np.asarray(handle.convert("L") if handle.mode not in ("L", "P") else handle, dtype=np.uint8)
    if labels.ndim != 2:
        raise ValueError(f"{path}: a label map must be a single-channel image, got shape {labels.shape}")
    if labels.max(initial=0) >= num_classes:
        raise ValueError(f"{path}: label value {int(labels.max())} but only {num_classes - 1} finding classes")
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
            raise ValueError(f"study {self.studies[index].id}: image missing or unreadable; segmentation needs it")
        if index not in self._mask_cache:
            self._mask_cache[index] = read_label_map(self.masks[index], self.image_size, self.num_classes)
        text = self.studies[index].text(self.text_fields, sep=TEXT_SEP)
        ids, mask = pad_ids(self.tokenizer.encode(text, self.max_text_tokens), self.max_text_tokens, self.tokenizer.pad_id)
        return {
            "image": normalize_image(stored[0].float() / 255.0),
            "mask": self._mask_cache[index],
            "text_ids": ids,
            "text_mask": mask,
        }


def make_loader(dataset: SegmentationDataset, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=seeded_generator(seed) if shuffle else None)


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
        dice, dice_all, iou = (m.aggregate().flatten().tolist() for m in (self.dice, self.dice_all, self.iou))
        per_class = {}
        for c, name in enumerate(self.class_names):
            n = int(self.cases[c])
            per_class[name] = {"dice": dice[c] if n else None, "iou": iou[c] if n else None, "dice_all": dice_all[c], "n": n}
        with_cases = [row for row in per_class.values() if row["n"]]

        def mean(key: str) -> float | None:
            return float(np.mean([row[key] for row in with_cases])) if with_cases else None

        return {"dice_mean": mean("dice"), "iou_mean": mean("iou"), "dice_all_mean": mean("dice_all"), "per_class": per_class}


def segmentation_metrics(predicted: Tensor, target: Tensor, class_names: Sequence[str]) -> dict[str, Any]:
    """Per-class and mean Dice / IoU of label maps ``predicted``, ``target`` (long [B,H,W]); see the module docstring."""
    scores = SegmentationScores(class_names)
    scores.update(predicted, target)
    return scores.result()


@torch.no_grad()
def score_loader(model: TextGuidedUNet, loader: DataLoader, class_names: Sequence[str]) -> dict[str, Any]:
    """:func:`segmentation_metrics` of the model's argmax prediction over a loader (eval mode)."""
    model.eval()
    scores = SegmentationScores(class_names)
    for batch in loader:
        scores.update(predict_label_maps(model, batch), batch["mask"])
    return scores.result()


def predict_label_maps(model: TextGuidedUNet, batch: dict) -> Tensor:
    """long [B,H,W]: the argmax class per pixel."""
    return model(batch["image"], batch["text_ids"], batch["text_mask"]).argmax(dim=1)


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


def train_segmentation(data: str | Path, out: str | Path, config: SegmentationConfig | None = None, *, force: bool = False) -> FitResult:
    """Train the (text-guided or image-only) U-Net on ``data``'s training studies; writes ``out/segmentation/``."""
    config = config or SegmentationConfig()
    task_dir = TaskDir.at(out, TASK)
    task_dir.prepare(force)
    manifest = read_task_manifest(data)
    class_names = class_names_of(manifest, data)
    train_studies = manifest.split("train")
    if not train_studies:
        raise ValueError(f"{manifest.path}: no training study")
    # The vocabulary is learnt from the sections one by one (as medmodal train does): texts that
    # contain "[SEP]" make ReportTokenizer.train skip an id and report a vocab_size one too small.
    sections = [s.sections.get(f, "") for s in train_studies for f in config.text_fields]
    tokenizer = ReportTokenizer.train([t for t in sections if t], min_freq=config.min_token_freq)
    torch.manual_seed(config.train.seed)
    model = build_segmentation_model(config, len(class_names) + 1, tokenizer.vocab_size, tokenizer.pad_id)

    def dataset(studies):
        return SegmentationDataset(studies, manifest.path, tokenizer, len(class_names) + 1, config.image_size,
                                   config.text_fields, config.max_text_tokens)

    train_loader = make_loader(dataset(train_studies), config.train.batch_size, shuffle=True, seed=config.train.seed)
    val_studies = manifest.split("val")
    val_loader = make_loader(dataset(val_studies), 64, shuffle=False) if val_studies else None
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)

    def loss_of(batch: dict) -> Tensor:
        logits = model(batch["image"], batch["text_ids"], batch["text_mask"])
        return loss_fn(logits, batch["mask"][:, None])

    def validation_dice() -> float | None:
        return None if val_loader is None else score_loader(model, val_loader, class_names)["dice_mean"]

    result = fit(model, train_loader, loss_of, validation_dice, config.train, task=TASK)
    save_task_config(config, task_dir.config)
    tokenizer.save(task_dir.tokenizer)
    torch.save(model.state_dict(), task_dir.weights)
    write_json_atomic(task_dir.training, {"data": str(Path(data).resolve()), "classes": class_names, **result.to_json()})
    return result


@dataclass
class TrainedSegmentation:
    model: TextGuidedUNet
    config: SegmentationConfig
    tokenizer: ReportTokenizer
    class_names: list[str]
    training: dict[str, Any]


def load_segmentation(run: str | Path) -> TrainedSegmentation:
    """The trained segmentation model of a run folder (eval mode, CPU)."""
    task_dir = TaskDir.at(run, TASK)
    task_dir.require_trained()
    config = load_task_config(SegmentationConfig, task_dir.config)
    tokenizer = ReportTokenizer.load(task_dir.tokenizer)
    training = json.loads(task_dir.training.read_text())
    class_names = training["classes"]
    weights_only = config.model_copy(update={"text_encoder": config.text_encoder.model_copy(update={"pretrained_path": None})})
    model = build_segmentation_model(weights_only, len(class_names) + 1, tokenizer.vocab_size, tokenizer.pad_id)
    model.load_state_dict(torch.load(task_dir.weights, map_location="cpu", weights_only=True))
    model.eval()
    return TrainedSegmentation(model, config, tokenizer, class_names, training)


def evaluate_segmentation(run: str | Path, data: str | Path | None = None, *, split: str = "test") -> dict[str, Any]:
    """Score a run's segmentation model on ``split``; adds ``segmentation`` to the run's metrics file."""
    trained = load_segmentation(run)
    data = data or trained.training["data"]
    manifest = read_task_manifest(data)
    studies = manifest.split(split)
    if not studies:
        raise ValueError(f"{manifest.path}: split '{split}' is empty")
    dataset = SegmentationDataset(studies, manifest.path, trained.tokenizer, len(trained.class_names) + 1,
                                  trained.config.image_size, trained.config.text_fields, trained.config.max_text_tokens)
    scores = score_loader(trained.model, make_loader(dataset, 64, shuffle=False), trained.class_names)
    metrics = {"split": split, "data": str(Path(data).resolve()), "conditioning": trained.config.conditioning,
               "n_studies": len(studies), **scores}
    merge_metrics(TaskDir.at(run, TASK), split, metrics)
    return metrics


def format_segmentation_metrics(metrics: dict[str, Any]) -> str:
    """A small text table of per-class and mean Dice / IoU."""

    def cell(value: float | None) -> str:
        return "  n/a" if value is None else f"{value:.3f}"

    lines = [f"split {metrics['split']}: {metrics['n_studies']} studies, conditioning={metrics['conditioning']}",
             f"  {'class':<16}{'dice':>8}{'iou':>8}{'dice_all':>10}{'n':>6}"]
    for name, row in metrics["per_class"].items():
        lines.append(f"  {name:<16}{cell(row['dice']):>8}{cell(row['iou']):>8}{cell(row['dice_all']):>10}{row['n']:>6}")
    lines.append(f"  {'mean':<16}{cell(metrics['dice_mean']):>8}{cell(metrics['iou_mean']):>8}{cell(metrics['dice_all_mean']):>10}")
    return "\n".join(lines)
