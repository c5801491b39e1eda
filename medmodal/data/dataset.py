"""``StudyDataset``: studies -> tensors, collated into the batch dict of DEVELOPERS.md.

One item (before collation), with S = ``image_size``, C = number of labels,
L = ``max_text_tokens``, T = ``max_target_tokens``:

==============  ================  ==============================================================
key             shape / type      meaning
==============  ================  ==============================================================
``id``          str               study id
``image``       float32 [1,S,S]   ``normalize_image(x)`` of the [0, 1] image; zeros if no image
``has_image``   bool []           image present and decoded
``text_ids``    int64 [L]         input text ids, ``pad_id`` after the text
``text_mask``   bool [L]          True at real tokens (all False when there is no text)
``has_text``    bool []           at least one input field non-empty
``labels``      float32 [C]       multi-hot, in ``label_names`` order
``boxes``       float32 [C,4]     per class the largest box, ``(x0, y0, x1, y1)`` / image size, in [0, 1]
``box_mask``    bool [C]          a box exists for that class (False whenever there is no image)
``box_list``    float32 [M,4]     every box of the study, normalised like ``boxes``, zeros after the last
``box_labels``  int64 [M]         class of each ``box_list`` row, -1 at padding (M = ``max_boxes``)
``target_ids``  int64 [T]         ``[BOS] target words [EOS] [PAD]...`` (truncated words, EOS kept)
``site``        str               site or ``""``
==============  ================  ==============================================================

:func:`collate` (the loader's ``collate_fn``) stacks these into ``[B, ...]``
tensors and lists of str.

Text: the input is ``study.text(text_fields)``, the non-empty sections joined
with ``" [SEP] "`` (one ``[SEP]`` token between sections). The generation target
is the target sections joined with a plain space (:data:`TARGET_SEP`): the model
writes one running report, and its decoded output compares directly with
references in text metrics.

Images: decoded by :func:`~medmodal.data.images.read_image` (a large JPEG at a reduced scale
still >= S, by DCT scaling), resized to S x S
with an antialiased bilinear filter (``torch.nn.functional.interpolate``: MONAI's
``Resize(anti_aliasing=True)`` Gaussian pre-filter costs ~0.6 s on a 2048 x 2048
radiograph against ~15 ms). The aspect ratio is not kept (a plain resize); boxes
stay valid because they are normalised by the stored image's own width and height.
With ``cache_images`` the resized image is kept in memory as uint8 (S*S bytes per
study; 1.6 GB for 100k studies at S=128). Images go through the same uint8 step
without the cache, so results do not depend on caching.

A file that fails to decode never raises here: the item gets a zero image and
``has_image=False``, and the failure is logged once per study (WARNING, logger
``medmodal.data.dataset``, naming the id and the file; once per worker process).

Augmentation (``train=True`` and ``augment.enabled``), MONAI array transforms on
the resized [0, 1] image: ``RandAffine`` (rotation up to ``rotate_degrees``,
scaling by up to ``1 +- scale``, zero padding), ``RandAdjustContrast`` (gamma),
``RandScaleIntensity`` / ``RandShiftIntensity`` (if ``intensity_scale`` /
``intensity_shift`` > 0), ``RandGaussianSmooth`` (if ``blur_sigma[1] > 0``) and ``RandGaussianNoise``,
each with probability ``prob``, then clipping to [0, 1]. Boxes follow the affine
exactly up to one pixel: each box is drawn as a mask, the mask goes through the
same affine (nearest neighbour), and the new box is the mask's extent; a box
moved fully out of view loses its ``box_mask``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import (
    RandAdjustContrast,
    RandAffine,
    RandGaussianNoise,
    RandGaussianSmooth,
    RandomizableTransform,
    RandScaleIntensity,
    RandShiftIntensity,
)
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info
from typing_extensions import Self  # typing.Self is Python 3.11+; medmodal supports 3.10

from medmodal.config import AugmentConfig, DataConfig
from medmodal.data.image_cache import DecodedImageCache
from medmodal.data.images import DecodedImage, ImageReadError, read_image
from medmodal.data.tokenizer import ReportTokenizer
from medmodal.data.types import Box, Study

logger = logging.getLogger(__name__)

IMAGE_MEAN = 0.5
IMAGE_STD = 0.25
TEXT_SEP = " [SEP] "
TARGET_SEP = " "
BATCH_KEYS = (
    "id", "image", "has_image", "text_ids", "text_mask", "has_text",
    "labels", "boxes", "box_mask", "box_list", "box_labels", "target_ids", "site",
)  # fmt: skip
MAX_BOXES = 32  # default M: boxes kept per study (the largest, if a study has more)


def normalize_image(image: torch.Tensor) -> torch.Tensor:
    """[0, 1] intensities -> model input: ``(x - IMAGE_MEAN) / IMAGE_STD`` (any shape)."""
    return (image - IMAGE_MEAN) / IMAGE_STD


def denormalize_image(image: torch.Tensor) -> torch.Tensor:
    """Model input -> [0, 1] intensities (inverse of :func:`normalize_image`; not clipped)."""
    return image * IMAGE_STD + IMAGE_MEAN


def resize_image(image: np.ndarray, size: int) -> torch.Tensor:
    """float32 ``[H, W]`` in [0, 1] -> float32 ``[1, size, size]``, antialiased bilinear, aspect not kept."""
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    resized = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return resized[0].clamp_(0.0, 1.0)


def stored_entry(decoded: DecodedImage, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """A decoded image as a dataset keeps it: (uint8 ``[1, size, size]`` resized pixels, full-scale
    ``(H, W)``, which boxes refer to)."""
    pixels = (resize_image(decoded.pixels, size) * 255.0).round_().to(torch.uint8)
    return pixels, (int(decoded.size[0]), int(decoded.size[1]))


def box_list(
    boxes: Sequence[Box], label_index: dict[str, int], height: int, width: int, max_boxes: int = MAX_BOXES
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every box of a study, normalised, padded to ``max_boxes`` rows.

    Args:
        boxes: pixel boxes of the stored image.
        label_index: label name -> class position; boxes of other labels are ignored.
        height, width: stored image size in pixels.
        max_boxes: M; with more boxes the ``max_boxes`` largest are kept.

    Returns:
        boxes float32 ``[M, 4]`` (x0, y0, x1, y1) in [0, 1] (zeros at padding);
        labels int64 ``[M]`` class positions, -1 at padding.
    """
    rows = []
    for box in boxes:
        c = label_index.get(box.label)
        if c is not None:
            x0, y0, x1, y1 = box.box
            rows.append((c, [x0 / width, y0 / height, x1 / width, y1 / height]))
    if len(rows) > max_boxes:
        rows = sorted(rows, key=lambda r: -(r[1][2] - r[1][0]) * (r[1][3] - r[1][1]))[:max_boxes]
    out = torch.zeros(max_boxes, 4, dtype=torch.float32)
    labels = torch.full((max_boxes,), -1, dtype=torch.long)
    for k, (c, xyxy) in enumerate(rows):
        out[k] = torch.tensor(xyxy)
        labels[k] = c
    return out.clamp_(0.0, 1.0), labels


def largest_box_per_class(
    boxes: torch.Tensor, labels: torch.Tensor, num_labels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """boxes ``[M, 4]``, labels ``[M]`` (-1 = none) -> the largest box of each class ``[C, 4]`` and
    box_mask bool ``[C]``."""
    out = torch.zeros(num_labels, 4, dtype=torch.float32)
    mask = torch.zeros(num_labels, dtype=torch.bool)
    real = (labels >= 0).nonzero().flatten()  # padding rows (-1) skipped: most studies have no box
    if real.numel() == 0:
        return out, mask
    area = (boxes[real, 2] - boxes[real, 0]) * (boxes[real, 3] - boxes[real, 1])
    for k in real[torch.argsort(area, descending=True, stable=True)].tolist():
        c = int(labels[k])
        if not mask[c]:
            out[c], mask[c] = boxes[k], True
    return out, mask


def box_targets(
    boxes: Sequence[Box], label_index: dict[str, int], height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One normalised box per class: the largest (float32 ``[C, 4]`` in [0, 1]) and box_mask bool ``[C]``."""
    listed, labels = box_list(boxes, label_index, height, width, max_boxes=max(1, len(boxes)))
    return largest_box_per_class(listed, labels, len(label_index))


def pad_ids(ids: Sequence[int], length: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``ids`` padded (or cut) to ``length``: (int64 ``[length]``, bool mask ``[length]``)."""
    ids = list(ids)[:length]
    padded = torch.full((length,), pad_id, dtype=torch.long)
    mask = torch.zeros(length, dtype=torch.bool)
    if ids:
        padded[: len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[: len(ids)] = True
    return padded, mask


class ImageAugmentation:
    """Random MONAI transforms of a ``[1, S, S]`` image in [0, 1] and of its normalised boxes."""

    def __init__(self, config: AugmentConfig, seed: int = 0):
        p = config.prob
        self.affine: RandAffine | None = None
        if config.rotate_degrees > 0 or config.scale > 0:
            self.affine = RandAffine(
                prob=p,
                rotate_range=(math.radians(config.rotate_degrees),),
                scale_range=(config.scale, config.scale),
                padding_mode="zeros",  # no reflected copies of lesions outside their boxes
                mode="bilinear",
            )
        self.intensity: list[RandomizableTransform] = [
            RandAdjustContrast(prob=p, gamma=tuple(config.contrast_gamma))
        ]
        if config.intensity_scale > 0:  # x * (1 + U(-scale, scale)): site contrast / exposure
            self.intensity.append(RandScaleIntensity(factors=config.intensity_scale, prob=p))
        if config.intensity_shift > 0:  # x + U(-shift, shift): site brightness
            self.intensity.append(RandShiftIntensity(offsets=config.intensity_shift, prob=p))
        if config.blur_sigma[1] > 0:
            sigma = config.blur_sigma
            self.intensity.append(RandGaussianSmooth(sigma_x=sigma, sigma_y=sigma, prob=p))
        if config.noise_std > 0:
            self.intensity.append(RandGaussianNoise(prob=p, std=config.noise_std))
        self.set_random_state(seed)

    def set_random_state(self, seed: int) -> None:
        """Reseed every transform (each DataLoader worker calls this with its own seed)."""
        transforms = ([self.affine] if self.affine is not None else []) + self.intensity
        for offset, transform in enumerate(transforms):
            transform.set_random_state(seed=(seed + offset) % 2**32)

    def __call__(
        self, image: torch.Tensor, boxes: torch.Tensor, box_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """image ``[1, S, S]``, boxes ``[M, 4]``, box_mask ``[M]`` -> the same, transformed
        (a box moved out of view: zeros, mask False)."""
        if self.affine is not None:
            image = torch.as_tensor(self.affine(image), dtype=torch.float32)
            moved = getattr(self.affine, "_do_transform", True)  # MONAI's "this draw applies" flag
            if moved and box_mask.any():
                boxes, box_mask = self._move_boxes(boxes, box_mask, size=image.shape[-1])
        for transform in self.intensity:
            image = torch.as_tensor(transform(image), dtype=torch.float32)
        return image.clamp(0.0, 1.0), boxes, box_mask

    def _move_boxes(
        self, boxes: torch.Tensor, box_mask: torch.Tensor, size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply the affine just drawn (``randomize=False``) to box masks; read the boxes back."""
        assert self.affine is not None  # only called right after the affine was applied
        rows = torch.nonzero(box_mask).flatten()
        masks = torch.stack([_box_to_mask(boxes[c], size) for c in rows])
        moved = torch.as_tensor(self.affine(masks, mode="nearest", randomize=False))
        boxes, box_mask = boxes.clone(), box_mask.clone()
        for c, mask in zip(rows.tolist(), moved):
            box = _mask_to_box(mask > 0.5)
            if box is None:
                box_mask[c] = False
                boxes[c] = 0.0
            else:
                boxes[c] = box
        return boxes, box_mask


def _box_to_mask(box: torch.Tensor, size: int) -> torch.Tensor:
    """Normalised box -> float ``[size, size]`` mask covering the pixels it touches (at least one)."""
    x0, y0, x1, y1 = box.tolist()
    c0, r0 = min(int(x0 * size), size - 1), min(int(y0 * size), size - 1)
    c1, r1 = max(math.ceil(x1 * size), c0 + 1), max(math.ceil(y1 * size), r0 + 1)
    mask = torch.zeros(size, size)
    mask[r0:r1, c0:c1] = 1.0
    return mask


def _mask_to_box(mask: torch.Tensor) -> torch.Tensor | None:
    """bool ``[S, S]`` -> normalised extent (x0, y0, x1, y1), or None if empty."""
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    if len(rows) == 0:
        return None
    size_y, size_x = mask.shape
    return torch.tensor(
        [cols[0] / size_x, rows[0] / size_y, (cols[-1] + 1) / size_x, (rows[-1] + 1) / size_y],
        dtype=torch.float32,
    )


# The keywords of StudyDataset that DataConfig holds under the same names (StudyDataset.from_config).
CONFIG_SETTINGS = ("image_size", "text_fields", "target_fields", "max_text_tokens", "max_target_tokens",
                   "augment", "cache_images", "image_cache_dir")  # fmt: skip


class StudyDataset(Dataset):
    """Map-style dataset of studies; items as in the module docstring."""

    def __init__(
        self,
        studies: Sequence[Study],
        tokenizer: ReportTokenizer,
        label_names: Sequence[str],
        *,
        image_size: int = 128,
        text_fields: Sequence[str] = ("indication",),
        target_fields: Sequence[str] = ("findings", "impression"),
        max_text_tokens: int = 48,
        max_target_tokens: int = 80,
        augment: AugmentConfig | None = None,
        cache_images: bool = True,
        train: bool = False,
        seed: int = 0,
        max_boxes: int = MAX_BOXES,
        image_cache_dir: str | None = None,
    ):
        """
        Args:
            studies: validated studies (e.g. ``Manifest.split("train")``).
            tokenizer: trained on the training reports.
            label_names: class order of ``labels`` / ``boxes`` / ``box_mask``.
            image_size: S, the side of the square model input.
            text_fields / target_fields: report sections of the input text / of the generation target.
            max_text_tokens / max_target_tokens: L and T (T includes BOS and EOS).
            augment: used only when ``train`` and ``augment.enabled``.
            cache_images: keep resized images in memory (uint8).
            train: training-time behaviour (augmentation).
            seed: seed of the augmentation (workers reseed, see :func:`make_dataloader`).
            max_boxes: M, rows of ``box_list`` (a study with more keeps its largest boxes).
            image_cache_dir: decode-once on-disk cache shared by processes (:mod:`medmodal.data.image_cache`).
        """
        if max_target_tokens < 2:
            raise ValueError("max_target_tokens must leave room for [BOS] and [EOS]")
        self.studies = list(studies)
        self.tokenizer = tokenizer
        self.label_names = list(label_names)
        self.label_index = {name: i for i, name in enumerate(self.label_names)}
        self.image_size = int(image_size)
        self.text_fields = tuple(text_fields)
        self.target_fields = tuple(target_fields)
        self.max_text_tokens = int(max_text_tokens)
        self.max_target_tokens = int(max_target_tokens)
        self.cache_images = cache_images
        self.max_boxes = int(max_boxes)
        self.train = train
        use_augment = train and augment is not None and augment.enabled
        self.augmentation = (
            ImageAugmentation(augment, seed=seed) if augment is not None and use_augment else None
        )
        self._cache: dict[int, tuple[torch.Tensor, tuple[int, int]]] = {}
        self._failed: set[int] = set()
        self._disk_cache = DecodedImageCache(image_cache_dir) if image_cache_dir else None

    @classmethod
    def from_config(
        cls,
        studies: Sequence[Study],
        tokenizer: ReportTokenizer,
        label_names: Sequence[str],
        config: DataConfig,
        *,
        train: bool = False,
        seed: int = 0,
    ) -> Self:
        """A dataset with the settings of ``config`` (sizes, fields, augmentation, cache)."""
        settings = {name: getattr(config, name) for name in CONFIG_SETTINGS}
        return cls(studies, tokenizer, label_names, train=train, seed=seed, **settings)

    def __len__(self) -> int:
        return len(self.studies)

    def __getitem__(self, index: int) -> dict[str, Any]:
        study = self.studies[index]
        size = self.image_size
        stored = self.stored_image(index)
        if stored is None:
            image = torch.zeros(1, size, size)
            listed = torch.zeros(self.max_boxes, 4)
            labels = torch.full((self.max_boxes,), -1, dtype=torch.long)
        else:
            pixels, (height, width) = stored
            image = pixels.float() / 255.0
            listed, labels = box_list(study.boxes, self.label_index, height, width, self.max_boxes)
            if self.augmentation is not None:
                image, listed, kept = self.augmentation(image, listed, labels >= 0)
                labels = labels.masked_fill(~kept, -1)
            image = normalize_image(image)
        boxes, box_mask = largest_box_per_class(listed, labels, len(self.label_names))

        text = study.text(self.text_fields, sep=TEXT_SEP)
        text_ids, text_mask = pad_ids(
            self.tokenizer.encode(text, self.max_text_tokens), self.max_text_tokens, self.tokenizer.pad_id
        )
        target = self.target_text(study)
        target_ids, _ = pad_ids(
            self.tokenizer.encode(target, self.max_target_tokens, add_bos_eos=True),
            self.max_target_tokens,
            self.tokenizer.pad_id,
        )
        return {
            "id": study.id,
            "image": image,
            "has_image": torch.tensor(stored is not None),
            "text_ids": text_ids,
            "text_mask": text_mask,
            "has_text": torch.tensor(bool(text)),
            "labels": self.label_vector(study),
            "boxes": boxes,
            "box_mask": box_mask,
            "box_list": listed,
            "box_labels": labels,
            "target_ids": target_ids,
            "site": study.site or "",
        }

    # --------------------------------------------------------------- parts of an item
    def target_text(self, study: Study) -> str:
        """The generation target: the target sections joined by :data:`TARGET_SEP`."""
        return study.text(self.target_fields, sep=TARGET_SEP)

    def label_vector(self, study: Study) -> torch.Tensor:
        """float32 ``[C]`` multi-hot of the study's labels (labels outside ``label_names`` ignored)."""
        vector = torch.zeros(len(self.label_names), dtype=torch.float32)
        for label in study.labels:
            c = self.label_index.get(label)
            if c is not None:
                vector[c] = 1.0
        return vector

    def stored_image(self, index: int) -> tuple[torch.Tensor, tuple[int, int]] | None:
        """(uint8 ``[1, S, S]`` resized image, stored ``(H, W)``), or None if missing / unreadable."""
        if index in self._cache:
            return self._cache[index]
        study = self.studies[index]
        if study.image is None or index in self._failed:
            return None
        entry = self._disk_cache.get(study.image, self.image_size) if self._disk_cache is not None else None
        if entry is None:
            try:
                decoded = read_image(study.image, reduce_to=self.image_size)
            except ImageReadError as err:
                self._failed.add(index)
                logger.warning("study %s: image not used (zero image, has_image=False): %s", study.id, err)
                return None
            entry = stored_entry(decoded, self.image_size)
            if self._disk_cache is not None:
                self._disk_cache.put(study.image, self.image_size, entry)
        if self.cache_images:
            self._cache[index] = entry
        return entry

    @contextmanager
    def augmentation_off(self) -> Iterator[Self]:
        """Within the block, items are read without augmentation (the image cache is shared)."""
        saved, self.augmentation = self.augmentation, None
        try:
            yield self
        finally:
            self.augmentation = saved

    def preload(self, index: int, decoded: DecodedImage) -> None:
        """Use ``decoded`` as study ``index``'s image (an image decoded from memory: array, PIL
        image, DICOM dataset), resized and stored exactly as a file's image would be."""
        self._cache[index] = stored_entry(decoded, self.image_size)

    def set_random_state(self, seed: int) -> None:
        """Reseed the augmentation (called in each DataLoader worker by :func:`seed_worker`)."""
        if self.augmentation is not None:
            self.augmentation.set_random_state(seed)


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Items -> the batch dict: tensors stacked to ``[B, ...]``, ``id`` and ``site`` as lists of str."""
    batch: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        batch[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else list(values)
    return batch


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: a distinct, reproducible augmentation seed per worker.

    ``worker_info.seed`` derives from the loader's generator, so it differs per
    worker and per epoch and is fixed by :func:`make_dataloader`'s ``seed``.
    """
    info = get_worker_info()
    if info is not None and hasattr(info.dataset, "set_random_state"):
        info.dataset.set_random_state(info.seed % 2**32)


def make_dataloader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = False,
    num_workers: int = 0,
    seed: int = 0,
    drop_last: bool = False,
    *,
    sampler: Sampler | None = None,
    collate_fn: Callable[[list], Any] = collate,
) -> DataLoader:
    """A DataLoader yielding batch dicts, with a seeded generator (same seed, same order).

    Workers are persistent (``num_workers > 0``), so each worker's image cache
    survives across epochs; note each worker holds its own cache. ``sampler``
    (instead of ``shuffle``) and ``collate_fn`` are handed to the DataLoader as they are.
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        generator=torch.Generator().manual_seed(seed),  # the order and the workers' base seeds
        worker_init_fn=seed_worker,
        persistent_workers=num_workers > 0,
        drop_last=drop_last,
    )
