"""Prepared data: WebDataset tar shards + a JSON index, read back as a stream of batch items.

Layout of a prepared folder (local path or fsspec URL such as ``s3://bucket/cxr``)::

    prepared.json            index: format version, image size, labels, splits (shards, counts),
                             manifest summary, row problems, settings, tokenizer settings
    tokenizer.json           word-level tokenizer learnt from the training split (HF tokenizers JSON)
    train-000000.tar ...     WebDataset shards, one split per shard
    val-000000.tar, test-...

A shard member pair per study, key = 9-digit ordinal: ``KEY.json`` (id, row, patient_id,
sections, labels, boxes, split, site, view, extra, image_hw) and ``KEY.image.npy`` (uint8
``[S, S]``, the resized image exactly as :class:`~medmodal.data.dataset.StudyDataset`
stores it; absent when the study has no usable image).

Why WebDataset: plain POSIX tar files (inspectable with ``tar tf``), sequential reads that
suit object stores, shards split over DDP ranks and loader workers
(``webdataset.split_by_node`` / ``split_by_worker``), and no extra dependency beyond
``webdataset`` + ``braceexpand``. LitData (the Lightning-stack choice) requires torchvision,
which cannot be installed here, and its index names a serializer per field, ``pickle``
included; MosaicML Streaming's MDS also has a ``pkl`` encoding.

Untrusted shards: nothing here unpickles. Members are read by our own bounded tar loop
(names must match the key pattern, sizes are capped before a byte is read, only regular
files), ``.npy`` through ``numpy.load(allow_pickle=False)`` with the exact dtype and shape
checked, ``.json`` with its fields type-checked. Shard names come from the index only after
matching ``SPLIT-NNNNNN.tar``, and are opened through ``fsspec`` (never webdataset's
``pipe:`` URLs, which run shell commands). A problem raises :class:`PreparedDataError`
naming the shard and member.
"""

from __future__ import annotations

import functools
import io
import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from medmodal.config import SECTION_FIELDS
from medmodal.data.dataset import StudyDataset
from medmodal.data.seeding import derived_seed
from medmodal.data.types import SPLITS, Box, Study
from medmodal.errors import DataError

FORMAT = "medmodal-prepared"
VERSION = 1
INDEX_NAME = "prepared.json"
TOKENIZER_NAME = "tokenizer.json"
SHARD_PATTERN = re.compile(r"^(train|val|test)-\d{6}\.tar$")
MEMBER_PATTERN = re.compile(r"^(\d{9})\.(json|image\.npy)$")
MAX_INDEX_BYTES = 256 * 1024 * 1024
MAX_JSON_MEMBER_BYTES = 4 * 1024 * 1024  # 4 report sections of <= 100k characters + extra columns
NPY_HEADER_BYTES = 1024
MAX_LABELS = 10_000
MAX_NAME_CHARS = 256
DEFAULT_SHUFFLE_BUFFER = 1000


class PreparedDataError(DataError, ValueError):
    """A prepared folder, index or shard that cannot be used (the message names the file and member)."""


# --------------------------------------------------------------------------- paths
def join(root: str, name: str) -> str:
    """``root`` + ``/`` + ``name`` for a local folder or a URL."""
    return f"{str(root).rstrip('/')}/{name}"


def is_prepared(data: str | Path) -> bool:
    """Whether ``data`` is a prepared folder (holds ``prepared.json``), local or URL."""
    import fsspec

    text = str(data)
    if "://" not in text and not Path(text).is_dir():
        return False
    try:
        fs, path = fsspec.core.url_to_fs(join(text, INDEX_NAME))
        return fs.isfile(path)
    except (OSError, ValueError, ImportError):
        return False


def open_binary(url: str, mode: str = "rb"):
    """A file object for a local path or an fsspec URL (``s3://``, ``gs://``, ``memory://`` ...)."""
    import fsspec

    return fsspec.open(url, mode).open()


# --------------------------------------------------------------------------- index
@dataclass(frozen=True)
class SplitShards:
    studies: int
    shards: tuple[str, ...]


@dataclass(frozen=True)
class PreparedIndex:
    """The checked content of ``prepared.json``."""

    root: str
    image_size: int
    label_names: list[str]
    splits: dict[str, SplitShards]
    summary: dict[str, Any]
    problems: list[dict[str, Any]]
    settings: dict[str, Any]
    tokenizer: dict[str, Any]

    def shard_urls(self, split: str) -> list[str]:
        return [join(self.root, name) for name in self.splits[split].shards]

    def label_counts(self, split: str) -> dict[str, int]:
        return dict(self.summary.get("label_counts_by_split", {}).get(split, {}))


def read_index(root: str | Path) -> PreparedIndex:
    """Read and check ``ROOT/prepared.json``; raises :class:`PreparedDataError` naming the problem."""
    url = join(str(root), INDEX_NAME)
    try:
        with open_binary(url) as handle:
            raw = handle.read(MAX_INDEX_BYTES + 1)
    except (OSError, ValueError) as err:
        raise PreparedDataError(f"{url}: cannot read the prepared index ({err})") from err
    if len(raw) > MAX_INDEX_BYTES:
        raise PreparedDataError(f"{url}: larger than {MAX_INDEX_BYTES:,} bytes; not a prepared index")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as err:
        raise PreparedDataError(f"{url}: not valid JSON ({err})") from None
    return _checked_index(data, str(root), url)


def _checked_index(data: Any, root: str, url: str) -> PreparedIndex:
    def bad(message: str) -> PreparedDataError:
        return PreparedDataError(f"{url}: {message}")

    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise bad(f"not a {FORMAT} index (field 'format')")
    if data.get("version") != VERSION:
        raise bad(
            f"format version {data.get('version')!r}; this medmodal reads version {VERSION} (prepare again)"
        )
    size = data.get("image_size")
    if not isinstance(size, int) or isinstance(size, bool) or not 8 <= size <= 4096:
        raise bad(f"field 'image_size' must be an integer in [8, 4096], got {str(size)[:40]!r}")
    labels = data.get("label_names")
    if (not isinstance(labels, list) or len(labels) > MAX_LABELS or len(set(map(str, labels))) != len(labels)
            or not all(isinstance(x, str) and 0 < len(x) <= MAX_NAME_CHARS for x in labels)):  # fmt: skip
        raise bad("field 'label_names' must be a list of distinct short names")
    splits_in = data.get("splits")
    if not isinstance(splits_in, dict) or set(splits_in) - set(SPLITS):
        raise bad(f"field 'splits' must map {', '.join(SPLITS)} to their shards")
    splits = {}
    for name in SPLITS:
        entry = splits_in.get(name, {"studies": 0, "shards": []})
        count, shards = (
            (entry.get("studies"), entry.get("shards")) if isinstance(entry, dict) else (None, None)
        )
        if not isinstance(count, int) or count < 0 or not isinstance(shards, list):
            raise bad(f"splits.{name} must hold 'studies' (an integer >= 0) and 'shards' (a list)")
        for shard in shards:
            if (
                not isinstance(shard, str)
                or not SHARD_PATTERN.match(shard)
                or not shard.startswith(name + "-")
            ):
                raise bad(f"splits.{name}: shard name {str(shard)[:80]!r} is not {name}-NNNNNN.tar")
        splits[name] = SplitShards(count, tuple(shards))
    dicts = {key: data.get(key, {}) for key in ("summary", "settings", "tokenizer")}
    for key, value in dicts.items():
        if not isinstance(value, dict):
            raise bad(f"field {key!r} must be an object")
    problems = data.get("problems", [])
    if not isinstance(problems, list):
        raise bad("field 'problems' must be a list")
    return PreparedIndex(
        root, size, labels, splits, dicts["summary"], problems, dicts["settings"], dicts["tokenizer"]
    )


def write_index(root: str, content: dict[str, Any]) -> None:
    """Write ``prepared.json`` (last, so that a folder with an index has all its shards)."""
    data = {"format": FORMAT, "version": VERSION, **content}
    with open_binary(join(root, INDEX_NAME), "wb") as handle:
        handle.write(json.dumps(data, indent=1).encode())


# --------------------------------------------------------------------- shard records
def study_record(study: Study, image_hw: tuple[int, int] | None) -> dict[str, Any]:
    """The JSON member of one study (no absolute paths: the image file name relative to the data folder)."""
    return {
        "id": study.id,
        "row": study.row,
        "patient_id": study.patient_id,
        "sections": {k: v for k, v in study.sections.items() if v},
        "labels": list(study.labels),
        "boxes": [{"label": b.label, "box": list(b.box)} for b in study.boxes],
        "split": study.split,
        "site": study.site,
        "view": study.view,
        "extra": {
            str(k): v if isinstance(v, (str, int, float, bool)) or v is None else str(v)
            for k, v in study.extra.items()
        },
        "image_hw": list(image_hw) if image_hw is not None else None,
        "had_image": study.image is not None,
    }


def npy_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(pixels, dtype=np.uint8), allow_pickle=False)
    return buffer.getvalue()


def _short_text(
    value: Any, name: str, where: str, limit: int = MAX_NAME_CHARS, optional: bool = True
) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise PreparedDataError(f"{where}: field {name!r} must be text of at most {limit} characters")
    return value


def record_study(record: Any, where: str) -> tuple[Study, tuple[int, int] | None]:
    """Check one JSON member and turn it back into a :class:`Study` (image path None) and its image size."""
    if not isinstance(record, dict):
        raise PreparedDataError(f"{where}: not a JSON object")
    study_id = _short_text(record.get("id"), "id", where, optional=False)
    assert study_id is not None  # optional=False: text or an error
    row = record.get("row")
    if not isinstance(row, int) or isinstance(row, bool) or row < 0:
        raise PreparedDataError(f"{where}: field 'row' must be an integer >= 0")
    sections = record.get("sections", {})
    if not isinstance(sections, dict) or not all(
        k in SECTION_FIELDS and isinstance(v, str) for k, v in sections.items()
    ):
        raise PreparedDataError(f"{where}: field 'sections' must map report sections to text")
    labels = record.get("labels", [])
    if not isinstance(labels, list) or not all(
        isinstance(x, str) and len(x) <= MAX_NAME_CHARS for x in labels
    ):
        raise PreparedDataError(f"{where}: field 'labels' must be a list of names")
    boxes = []
    for entry in record.get("boxes") or []:
        coords = entry.get("box") if isinstance(entry, dict) else None
        if (not isinstance(coords, list) or len(coords) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in coords)
                or not isinstance(entry.get("label"), str)):  # fmt: skip
            raise PreparedDataError(f"{where}: field 'boxes' must hold {{'label': name, 'box': [4 numbers]}}")
        box = cast("tuple[float, float, float, float]", tuple(float(v) for v in coords))  # 4, checked above
        boxes.append(Box(label=entry["label"], box=box))
    split = record.get("split")
    if split not in SPLITS:
        raise PreparedDataError(f"{where}: field 'split' must be one of {', '.join(SPLITS)}")
    hw = record.get("image_hw")
    if hw is not None and (not isinstance(hw, list) or len(hw) != 2
                           or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in hw)):  # fmt: skip
        raise PreparedDataError(f"{where}: field 'image_hw' must be [height, width] or null")
    extra = record.get("extra") or {}
    if not isinstance(extra, dict):
        raise PreparedDataError(f"{where}: field 'extra' must be an object")
    study = Study(
        id=study_id,
        row=row,
        patient_id=_short_text(record.get("patient_id"), "patient_id", where),
        image=None,
        sections=dict(sections),
        labels=labels,
        boxes=boxes,
        split=split,
        site=_short_text(record.get("site"), "site", where),
        view=_short_text(record.get("view"), "view", where),
        extra=extra,
    )
    return study, (tuple(hw) if hw is not None else None)


@functools.lru_cache(maxsize=8)
def npy_header(size: int) -> bytes:
    """The exact ``.npy`` header :func:`npy_bytes` writes before a uint8 ``[size, size]`` image."""
    return npy_bytes(np.zeros((size, size), dtype=np.uint8))[: -size * size]


def decode_pixels(data: bytes, size: int, where: str) -> np.ndarray:
    """A ``.npy`` member -> uint8 ``[size, size]`` (read-only when it is a view of ``data``); never unpickles.

    A member that starts with exactly the header :func:`npy_bytes` writes is read as raw bytes (numpy
    parses a header with ``ast.literal_eval``, ~70 us a study); any other header goes through
    ``numpy.load`` and its dtype and shape are checked.
    """
    header = npy_header(size)
    if len(data) == len(header) + size * size and data.startswith(header):
        return np.frombuffer(data, dtype=np.uint8, offset=len(header)).reshape(size, size)
    try:
        pixels = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise PreparedDataError(f"{where}: not a readable .npy array ({err})") from None
    if pixels.dtype != np.uint8 or pixels.shape != (size, size):
        raise PreparedDataError(
            f"{where}: expected uint8 [{size}, {size}], got {pixels.dtype} {list(pixels.shape)}"
        )
    return pixels


# ---------------------------------------------------------------------- shard reading
def shard_samples(
    url: str, image_size: int
) -> Iterator[tuple[Study, tuple[torch.Tensor, tuple[int, int]] | None]]:
    """``(study, stored image or None)`` for each study of one shard, checked member by member.

    The stored image is ``(uint8 [1, S, S], (H, W))`` as :meth:`StudyDataset.stored_image` returns it.
    """
    current_key: str | None = None
    members: dict[str, bytes] = {}
    try:
        with open_binary(url) as handle, tarfile.open(fileobj=handle, mode="r|") as tar:
            for info, key, kind, where in checked_members(tar, url, image_size):
                if key != current_key:
                    if current_key is not None:
                        yield _sample(url, current_key, members, image_size)
                    current_key, members = key, {}
                if kind in members:
                    raise PreparedDataError(f"{where}: appears twice")
                extracted = tar.extractfile(info)
                assert extracted is not None  # checked_members: regular files only
                members[kind] = extracted.read()
    except tarfile.TarError as err:
        raise PreparedDataError(f"{url}: not a readable tar shard ({err})") from None
    except OSError as err:
        raise PreparedDataError(f"{url}: cannot read shard ({err})") from None
    if current_key is not None:
        yield _sample(url, current_key, members, image_size)


def checked_members(
    tar: tarfile.TarFile, url: str, image_size: int
) -> Iterator[tuple[tarfile.TarInfo, str, str, str]]:
    """(member, study key, kind, where) for each member of a shard, after checking that it is a regular
    file named like a prepared member and within its size limit; keeps no member list (streaming)."""
    limits = {"json": MAX_JSON_MEMBER_BYTES, "image.npy": image_size * image_size + NPY_HEADER_BYTES}
    for info in tar:
        where = f"{url}: member {info.name[:120]!r}"
        match = MEMBER_PATTERN.match(info.name)
        if not info.isreg() or match is None:
            raise PreparedDataError(f"{where}: not a member of a prepared shard")
        key, kind = match.groups()
        if info.size > limits[kind]:
            raise PreparedDataError(f"{where}: {info.size:,} bytes, more than the limit of {limits[kind]:,}")
        yield info, key, kind, where
        tar.members = []  # type: ignore[attr-defined]  # typeshed lacks TarFile.members (real attribute)


def _sample(url: str, key: str, members: dict[str, bytes], size: int):
    where = f"{url}: study {key}"
    if "json" not in members:
        raise PreparedDataError(f"{where}: no {key}.json member")
    try:
        record = json.loads(members["json"])
    except (ValueError, RecursionError) as err:
        raise PreparedDataError(f"{where}.json: not valid JSON ({err})") from None
    study, hw = record_study(record, f"{where}.json")
    if "image.npy" not in members:
        return study, None
    if hw is None:
        raise PreparedDataError(f"{where}: an image member without 'image_hw'")
    pixels = decode_pixels(members["image.npy"], size, f"{where}.image.npy")
    return study, (torch.from_numpy(pixels.copy())[None], hw)


# ---------------------------------------------------------------------- the dataset
class PreparedStudies(IterableDataset):
    """One split of a prepared folder as a stream of batch items (the keys of :class:`StudyDataset`).

    Items are built by a :class:`StudyDataset` whose stored image comes from the shard, so text,
    labels, boxes and augmentation are exactly those of the raw path. Shards are divided over DDP
    ranks and loader workers (webdataset ``split_by_node`` / ``split_by_worker``). With ``shuffle``
    the shard order is permuted and items pass a ``shuffle_buffer``-item buffer, both seeded by
    ``(seed, epoch)`` (:meth:`set_epoch`); memory stays ``shuffle_buffer`` items whatever the split size.
    """

    def __init__(self, index: PreparedIndex, split: str, builder, *, shuffle: bool = False, seed: int = 0,
                 shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER):  # fmt: skip
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}")
        self.index, self.split, self.builder = index, split, builder
        self.shuffle, self.seed, self.shuffle_buffer = shuffle, seed, shuffle_buffer
        self.epoch = 0

    def __len__(self) -> int:
        return self.index.splits[self.split].studies

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_random_state(self, seed: int) -> None:
        self.builder.set_random_state(seed)

    def samples(self) -> Iterator[tuple[Study, Any]]:
        """``(study, stored image)`` of this rank's and worker's shards, in (shuffled) order."""
        import webdataset as wds

        rng = np.random.default_rng(derived_seed(self.seed, self.epoch))
        urls = self.index.shard_urls(self.split)
        if self.shuffle:
            urls = [urls[i] for i in rng.permutation(len(urls))]
        mine = [s["url"] for s in wds.split_by_worker(wds.split_by_node([{"url": u} for u in urls]))]
        worker = get_worker_info()
        rng = np.random.default_rng(derived_seed(self.seed, self.epoch, worker.id if worker else 0))
        stream = (sample for url in mine for sample in shard_samples(url, self.index.image_size))
        yield from _buffer_shuffled(stream, self.shuffle_buffer, rng) if self.shuffle else stream

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for study, stored in self.samples():
            yield self.builder.item(study, stored)


def _buffer_shuffled(stream: Iterator, size: int, rng: np.random.Generator) -> Iterator:
    buffer: list = []
    for sample in stream:
        if len(buffer) < size:
            buffer.append(sample)
            continue
        k = int(rng.integers(len(buffer)))
        buffer[k], sample = sample, buffer[k]
        yield sample
    order = rng.permutation(len(buffer))
    for k in order:
        yield buffer[k]


class _ItemBuilder(StudyDataset):
    """A :class:`StudyDataset` that builds the item of one given (study, stored image) pair."""

    def item(self, study: Study, stored) -> dict[str, Any]:
        self.studies, self._stored = [study], stored
        return self[0]

    def stored_image(self, index: int):
        return self._stored


def item_builder(
    tokenizer, label_names, data_config, *, train: bool, seed: int, targets: bool = True
) -> _ItemBuilder:
    """The item builder with the settings of ``data_config`` (fields, lengths, augmentation when ``train``).

    ``targets`` False (a model without a report decoder): the target text is not tokenised and
    ``target_ids`` holds ``[BOS] [EOS]`` and padding (~60 us a study saved).
    """
    builder = _ItemBuilder.from_config([], tokenizer, label_names, data_config, train=train, seed=seed)
    builder.cache_images = False
    if not targets:
        builder.target_fields = ()
    return builder
