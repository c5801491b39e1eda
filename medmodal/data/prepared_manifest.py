"""Prepared data as a :class:`Manifest` of studies + a map-style dataset that reads images from the shards.

For everything that works on a list of studies (``evaluate``, ``benchmark``, ``calibrate``,
retrieval, baselines...): :func:`read_prepared_manifest` reads only the JSON members of the
shards (tar headers are read, image bytes are seeked over) and returns studies of type
:class:`PreparedStudy`, each knowing where its image lies (shard, byte offset, size).
:func:`prepared_study_dataset` is a :class:`StudyDataset` whose ``stored_image`` reads that
``.npy`` member (``numpy.load(allow_pickle=False)``, dtype and shape checked), so no image
file is decoded again. ``medmodal train`` streams instead (:mod:`medmodal.training.prepared_training`):
it never holds all studies.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from medmodal.data.dataset import StudyDataset
from medmodal.data.manifest import Manifest
from medmodal.data.prepared import (
    PreparedDataError,
    PreparedIndex,
    checked_members,
    decode_pixels,
    open_binary,
    read_index,
    record_study,
)
from medmodal.data.types import SPLITS, RowProblem, Study


@dataclass
class PreparedStudy(Study):
    """A study read from prepared shards; ``image_ref`` = (shard URL, byte offset, size) of its ``.npy``."""

    image_ref: tuple[str, int, int] | None = None
    image_hw: tuple[int, int] | None = None


def read_prepared_manifest(
    root: str | Path, labels: list[str] | None = None, image_size: int | None = None
) -> Manifest:
    """The studies of a prepared folder (all splits), its labels and recorded row problems.

    Raises:
        PreparedDataError: unreadable index or shard, ``labels`` other than the prepared ones, or an
            ``image_size`` other than the prepared one.
    """
    index = read_index(root)
    if image_size is not None and image_size != index.image_size:
        raise PreparedDataError(f"{index.root}: prepared at {index.image_size} px, but data.image_size is {image_size}; "
                                f"use --image-size {index.image_size} or prepare again")  # fmt: skip
    if labels is not None and list(labels) != index.label_names:
        raise PreparedDataError(f"{index.root}: prepared with labels {index.label_names}, asked for {list(labels)}; "
                                "prepare again with these labels")  # fmt: skip
    studies: list[Study] = []
    for split in SPLITS:
        for url in index.shard_urls(split):
            studies.extend(_shard_studies(url, index.image_size))
    problems = [RowProblem(str(p.get("file")), int(p.get("row", 0)), str(p.get("field")), str(p.get("message")),
                           p.get("study_id")) for p in index.problems if isinstance(p, dict)]  # fmt: skip
    summary = index.summary
    return Manifest(
        path=Path(str(index.root)),
        studies=studies,
        label_names=list(index.label_names),
        problems=problems,
        rows_read=int(summary.get("rows_read", len(studies))),
        labels_outside_set=dict(summary.get("labels_outside_set", {})),
        splits_assigned=int(summary.get("splits_assigned") or 0),
        left_out_by_view=int(summary.get("left_out_by_view", 0)),
    )


def _shard_studies(url: str, image_size: int) -> Iterator[PreparedStudy]:
    """The studies of one shard; the image members are located (offset, size), not read."""
    pending: dict[str, list[Any]] = {}  # key -> [(study, image_hw) or None, image ref or None]
    order: list[str] = []
    try:
        with open_binary(url) as handle, tarfile.open(fileobj=handle, mode="r:") as tar:
            for info, key, kind, where in checked_members(tar, url, image_size):
                entry = pending.setdefault(key, [None, None])
                if key not in order:
                    order.append(key)
                if kind == "json":
                    try:
                        extracted = tar.extractfile(info)
                        assert extracted is not None  # checked_members: regular files only
                        entry[0] = record_study(json.loads(extracted.read()), where)
                    except (ValueError, RecursionError) as err:
                        if isinstance(err, PreparedDataError):
                            raise
                        raise PreparedDataError(f"{where}: not valid JSON ({err})") from None
                else:
                    entry[1] = (url, info.offset_data, info.size)
    except tarfile.TarError as err:
        raise PreparedDataError(f"{url}: not a readable tar shard ({err})") from None
    except OSError as err:
        raise PreparedDataError(f"{url}: cannot read shard ({err})") from None
    for key in order:
        record, ref = pending[key]
        if record is None:
            raise PreparedDataError(f"{url}: study {key}: no {key}.json member")
        study, hw = record
        if ref is not None and hw is None:
            raise PreparedDataError(f"{url}: study {key}: an image member without 'image_hw'")
        yield PreparedStudy(**{f: getattr(study, f) for f in Study.__dataclass_fields__},
                            image_ref=ref, image_hw=hw)  # fmt: skip


class PreparedStudyDataset(StudyDataset):
    """:class:`StudyDataset` over :class:`PreparedStudy` items: the stored image is read from its shard."""

    def stored_image(self, index: int):
        import torch

        if index in self._cache:
            return self._cache[index]
        study = self.studies[index]
        ref = getattr(study, "image_ref", None)
        if ref is None:
            return None
        url, offset, size = ref
        with open_binary(url) as handle:
            handle.seek(offset)
            data = handle.read(size)
        pixels = decode_pixels(data, self.image_size, f"{url}: study {study.id}")
        hw = cast(PreparedStudy, study).image_hw  # only a PreparedStudy has an image_ref
        assert hw is not None  # _shard_studies: a study with an image member has its image_hw
        entry = (torch.from_numpy(pixels.copy())[None], cast("tuple[int, int]", tuple(hw)))
        if self.cache_images:
            self._cache[index] = entry
        return entry


def is_prepared_studies(studies) -> bool:
    return bool(studies) and isinstance(studies[0], PreparedStudy)


__all__ = [
    "PreparedIndex",
    "PreparedStudy",
    "PreparedStudyDataset",
    "is_prepared_studies",
    "read_prepared_manifest",
]
