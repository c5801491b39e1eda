"""``medmodal prepare DATA OUT``: validate, decode, resize each study once into WebDataset shards.

One streaming pass over the manifest (:func:`~medmodal.data.manifest_stream.stream_manifest`),
then one over a temporary spill file, so memory does not grow with the cells of the whole file:

1. **scan**: rows validated chunk by chunk (bad rows named and logged as found), each
   distinct image file decode-checked once; each kept study is written to a temporary JSON
   Lines file; kept in memory per study: its row, id, patient and given split (what the
   patient-level split needs), label and summary counts.
2. **write**: the spilled studies are read back; each gets the split
   :func:`~medmodal.data.splits.patient_splits` assigns (the same as the raw path with the
   same ``split_fractions`` / ``split_seed``), its image is decoded and resized exactly as
   :meth:`StudyDataset.stored_image` does (uint8 ``[S, S]``; a file repeated across rows is
   decoded once, a small LRU cache) and it is appended to its split's current shard; the
   training text goes to a second temporary file.

Then the tokenizer is learnt from that training text (``data.text_fields`` +
``data.target_fields``, ``data.min_token_freq``) and ``prepared.json`` is written last.
The format is described in :mod:`medmodal.data.prepared` and docs/prepare.md.
"""

from __future__ import annotations

import json
import logging
import tarfile
import tempfile
import time
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, cast

from medmodal.config import Config, DataConfig
from medmodal.data.dataset import StudyDataset
from medmodal.data.manifest import ManifestError, find_manifest_file
from medmodal.data.manifest_report import problem_report
from medmodal.data.manifest_stream import DEFAULT_CHUNK_ROWS, stream_manifest
from medmodal.data.prepared import (
    TOKENIZER_NAME,
    PreparedDataError,
    join,
    npy_bytes,
    open_binary,
    read_index,
    record_study,
    study_record,
    write_index,
)
from medmodal.data.splits import patient_key, patient_splits
from medmodal.data.tokenizer import ReportTokenizer
from medmodal.data.types import SPLITS, RowProblem, Study

logger = logging.getLogger(__name__)

DEFAULT_STUDIES_PER_SHARD = 5000
MAX_PROBLEMS_IN_INDEX = 10_000
DECODED_CACHE_FILES = 256


class _Slim(NamedTuple):
    """What the patient-level split needs of a study (duck-types :class:`Study` for :mod:`splits`)."""

    id: str
    patient_id: str | None
    split: str | None


@dataclass
class PrepareResult:
    out: str
    studies: dict[str, int]
    shards: dict[str, int]
    rows_read: int
    problems: list[RowProblem] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class _Scan:
    rows: list[int] = field(default_factory=list)
    slim: list[_Slim] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)
    rows_read: int = 0
    left_out_by_view: int = 0
    labels_outside_set: dict[str, int] = field(default_factory=dict)
    label_counts: Counter = field(default_factory=Counter)
    sites: Counter = field(default_factory=Counter)
    missing_image: int = 0
    missing_text: int = 0
    with_boxes: int = 0
    splits_assigned: int = 0


def prepare(data: str | Path, out: str, config: Config | None = None, *,
            studies_per_shard: int = DEFAULT_STUDIES_PER_SHARD, chunk_rows: int = DEFAULT_CHUNK_ROWS,
            progress: bool = False) -> PrepareResult:  # fmt: skip
    """Prepare the manifest of ``data`` into ``out`` (a local folder or an fsspec URL).

    Reading settings come from ``config.data`` (labels, image_size, views, on_bad_row,
    check_images, allow_outside_paths, split_fractions, split_seed, text/target fields,
    min_token_freq, manifest name).

    Raises:
        ManifestError: unreadable manifest, bad rows with ``on_bad_row="error"``, no usable row.
        PreparedDataError: ``out`` already holds a prepared index.
    """
    start = time.time()
    config = config or Config()
    d = config.data
    out = str(out)
    _refuse_existing(out)
    manifest = _manifest_file(data, d.manifest)
    stream_args = {"labels": d.labels, "check_images": d.check_images, "allow_outside_paths": d.allow_outside_paths,
                   "views": d.views, "chunk_rows": chunk_rows}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="medmodal-prepare-") as tmp:
        spill, texts = Path(tmp) / "studies.jsonl", Path(tmp) / "train_texts.jsonl"
        scan = _scan(manifest, stream_args, spill)
        if scan.problems and d.on_bad_row == "error":
            raise ManifestError(
                _problem_text(manifest, scan.problems, "bad row(s) (on_bad_row='error')"), scan.problems
            )
        if not scan.rows:
            raise ManifestError(
                _problem_text(manifest, scan.problems, "row(s) read, none usable"), scan.problems
            )
        label_names = list(d.labels) if d.labels is not None else sorted(scan.label_counts)
        splits = patient_splits(scan.slim, d.split_fractions, d.split_seed)  # as read_manifest assigns them
        patients = len({patient_key(s) for s in scan.slim})
        scan.slim = []  # not needed past this point
        _make_folder(out)
        logger.info("writing prepared shards to %s", out)
        writers, counts = _write_shards(spill, splits, out, studies_per_shard, config, texts, progress)
        tokenizer_settings = _write_tokenizer(out, texts, config)
    summary = _summary(manifest, scan, label_names, writers, counts["labels"], patients)
    summary["sections_by_split"] = {k: dict(v) for k, v in counts["sections"].items()}
    summary["boxes_by_split"] = {k: counts["boxes"][k] for k in SPLITS}
    write_index(out, {
        "image_size": d.image_size,
        "label_names": label_names,
        "splits": {name: {"studies": writers.counts[name], "shards": writers.names[name]} for name in SPLITS},
        "summary": summary,
        "problems": [_problem_dict(p) for p in scan.problems[:MAX_PROBLEMS_IN_INDEX]],
        "settings": {"source": str(manifest), "labels": d.labels, "views": d.views, "check_images": d.check_images,
                     "allow_outside_paths": d.allow_outside_paths, "split_fractions": list(d.split_fractions),
                     "split_seed": d.split_seed, "on_bad_row": d.on_bad_row},
        "tokenizer": tokenizer_settings,
    })  # fmt: skip
    result = PrepareResult(out, dict(writers.counts), {k: len(v) for k, v in writers.names.items()},
                           scan.rows_read, scan.problems, time.time() - start)  # fmt: skip
    logger.info("prepared %s: %s studies (%s) in %.1f s", out, sum(result.studies.values()),
                ", ".join(f"{k} {v}" for k, v in result.studies.items()), result.seconds)  # fmt: skip
    return result


# ------------------------------------------------------------------------ passes
def _manifest_file(data: str | Path, manifest_name: str) -> Path:
    path = Path(data)
    if path.is_dir() and (path / manifest_name).exists():
        path = path / manifest_name
    return find_manifest_file(path)


def _refuse_existing(out: str) -> None:
    try:
        read_index(out)
    except Exception:  # noqa: BLE001 - no readable index there: nothing to overwrite
        return
    raise PreparedDataError(f"{out} already holds prepared data; choose another OUT or delete it")


def _make_folder(out: str) -> bool:
    if "://" in out:
        return True
    Path(out).mkdir(parents=True, exist_ok=True)
    return True


def _scan(manifest: Path, stream_args: dict[str, Any], spill: Path) -> _Scan:
    """Pass 1: validate the manifest chunk by chunk; each kept study is spilled to ``spill`` (JSON Lines)."""
    scan = _Scan()
    with open(spill, "w", encoding="utf-8") as handle:
        for chunk in stream_manifest(manifest, labels_outside_set=scan.labels_outside_set, **stream_args):
            scan.problems += chunk.problems
            scan.rows_read += chunk.rows_read
            scan.left_out_by_view += chunk.left_out_by_view
            for s in chunk.studies:
                scan.rows.append(s.row)
                scan.slim.append(_Slim(s.id, s.patient_id, s.split))
                scan.label_counts.update(s.labels)
                scan.sites[s.site or ""] += 1
                scan.missing_image += s.image is None
                scan.missing_text += not any(s.sections.values())
                scan.with_boxes += bool(s.boxes)
                scan.splits_assigned += not s.split
                record = study_record(s, None)
                record["image_path"] = str(s.image) if s.image is not None else None
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return scan


def _spilled_studies(spill: Path, splits: list[str]) -> Iterator[Study]:
    """The studies of pass 1, in order, each with its assigned split."""
    with open(spill, encoding="utf-8") as handle:
        for line, split in zip(handle, splits):
            record = json.loads(line)
            record["split"] = split
            study, _ = record_study(record, str(spill))
            study.image = Path(record["image_path"]) if record["image_path"] else None
            yield study


def _write_shards(spill: Path, splits: list[str], out: str, per_shard: int, config: Config, texts: Path,
                  progress: bool) -> tuple[_ShardWriters, dict[str, Any]]:  # fmt: skip
    """Pass 2: decode, resize and write each study to its split's shard; training text to ``texts``."""
    d = config.data
    fields = _tokenizer_fields(config)
    writers = _ShardWriters(out, per_shard)
    counts: dict[str, Any] = {"labels": {n: Counter() for n in SPLITS}, "sections": {n: Counter() for n in SPLITS},
                              "boxes": Counter()}  # fmt: skip
    try:
        with open(texts, "w", encoding="utf-8") as text_handle:
            for study in _spilled_studies(spill, splits):
                stored = _decoded(study, d.image_size)
                writers.add(study, stored)
                counts["labels"][study.split].update(study.labels)
                counts["sections"][study.split].update(k for k, v in study.sections.items() if v.strip())
                counts["boxes"][study.split] += bool(study.boxes and stored is not None)
                if study.split == "train":
                    for f in fields:
                        if study.sections.get(f):
                            text_handle.write(json.dumps(study.sections[f], ensure_ascii=False) + "\n")
                if progress and writers.written % 50_000 == 0:
                    logger.info("prepared %d of %d studies", writers.written, len(splits))
    finally:
        writers.close()
    return writers, counts


_decoded_cache: OrderedDict = OrderedDict()


def _decoded(study: Study, size: int):
    """``(uint8 [1, S, S], (H, W))`` as the raw path stores it, or None; a repeated file is decoded once."""
    if study.image is None:
        return None
    key = (str(study.image), size)
    if key in _decoded_cache:
        _decoded_cache.move_to_end(key)
        return _decoded_cache[key]
    decoder = _decoders.get(size)
    if decoder is None:
        no_tokenizer = cast(ReportTokenizer, None)  # only stored_image is used: nothing is tokenised
        decoder = _decoders[size] = StudyDataset.from_config(
            [], no_tokenizer, [], DataConfig(image_size=size, cache_images=False)
        )
    decoder.studies = [study]
    decoder._failed = set()
    stored = decoder.stored_image(0)  # the raw path's own decode + resize + uint8 step
    _decoded_cache[key] = stored
    if len(_decoded_cache) > DECODED_CACHE_FILES:
        _decoded_cache.popitem(last=False)
    return stored


_decoders: dict[int, Any] = {}


class _ShardWriters:
    """One open WebDataset ``TarWriter`` per split; a new shard every ``per_shard`` studies."""

    def __init__(self, out: str, per_shard: int):
        self.out, self.per_shard = out, per_shard
        self.counts = {name: 0 for name in SPLITS}
        self.names: dict[str, list[str]] = {name: [] for name in SPLITS}
        self.open: dict[str, Any] = {}
        self.written = 0

    def add(self, study: Study, stored) -> None:
        import webdataset as wds

        split = study.split
        assert split is not None  # record_study checked it is one of SPLITS
        if split not in self.open or self.counts[split] % self.per_shard == 0:
            self._close(split)
            name = f"{split}-{len(self.names[split]):06d}.tar"
            handle = open_binary(join(self.out, name), "wb")
            writer = wds.TarWriter(handle, encoder=False, mtime=0)  # fixed mtime: reproducible shards
            writer.tarstream.format = (
                tarfile.USTAR_FORMAT
            )  # plain headers (TarWriter leaves tarfile's PAX default)
            self.open[split] = (handle, writer)
            self.names[split].append(name)
        sample: dict[str, str | bytes] = {"__key__": f"{self.written:09d}"}
        hw = None
        if stored is not None:
            pixels, hw = stored
            sample["image.npy"] = npy_bytes(pixels.numpy()[0])
        sample["json"] = _json_bytes(study_record(study, hw))
        self.open[split][1].write(sample)
        self.counts[split] += 1
        self.written += 1

    def _close(self, split: str) -> None:
        if split in self.open:
            handle, writer = self.open.pop(split)
            writer.close()
            handle.close()

    def close(self) -> None:
        for split in list(self.open):
            self._close(split)

    def shard_urls(self, split: str) -> list[str]:
        return [join(self.out, name) for name in self.names[split]]


def _json_bytes(record: dict) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode()


def _tokenizer_fields(config: Config) -> list[str]:
    return list(dict.fromkeys([*config.data.text_fields, *config.data.target_fields]))


def _write_tokenizer(out: str, texts: Path, config: Config) -> dict[str, Any]:
    """Learn the vocabulary from the training text written in pass 2 and save it as ``tokenizer.json``."""
    d = config.data
    with open(texts, encoding="utf-8") as handle:
        tokenizer = ReportTokenizer.train((json.loads(line) for line in handle), min_freq=d.min_token_freq)
    with open_binary(join(out, TOKENIZER_NAME), "wb") as handle:
        handle.write(tokenizer._tokenizer.to_str().encode())
    return {"file": TOKENIZER_NAME, "fields": _tokenizer_fields(config), "min_freq": d.min_token_freq,
            "vocab_size": tokenizer.vocab_size}  # fmt: skip


def _summary(manifest: Path, scan: _Scan, label_names: list[str], writers: _ShardWriters,
             label_counts_by_split: dict[str, Counter], patients: int) -> dict[str, Any]:  # fmt: skip
    """The keys of :meth:`Manifest.summary`, plus the label counts of each split."""
    return {
        "file": str(manifest),
        "rows_read": scan.rows_read,
        "rows_kept": len(scan.rows),
        "rows_skipped": len({p.row for p in scan.problems}),
        "problems_by_field": dict(Counter(p.field for p in scan.problems)),
        "missing_image": scan.missing_image,
        "missing_text": scan.missing_text,
        "with_boxes": scan.with_boxes,
        "label_counts": {name: scan.label_counts.get(name, 0) for name in label_names},
        "labels_outside_set": dict(scan.labels_outside_set),
        "split_counts": dict(writers.counts),
        "splits_assigned": scan.splits_assigned,
        "sites": dict(scan.sites),
        "patients": patients,
        "left_out_by_view": scan.left_out_by_view,
        "label_counts_by_split": {
            k: {n: v.get(n, 0) for n in label_names} for k, v in label_counts_by_split.items()
        },
    }


def _problem_dict(problem: RowProblem) -> dict[str, Any]:
    return {"file": problem.file, "row": problem.row, "field": problem.field, "message": problem.message,
            "study_id": problem.study_id}  # fmt: skip


def _problem_text(file: Path, problems: list[RowProblem], what: str) -> str:
    return problem_report(file, sorted(problems, key=lambda p: p.row), what)
