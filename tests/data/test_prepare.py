"""`medmodal prepare`: shards equal the raw path, train/evaluate read them, bad rows stream, tampering is refused."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

from medmodal.data.manifest import read_manifest
from medmodal.data.manifest_stream import stream_manifest
from medmodal.data.pipeline import build_dataset, read_dataset
from medmodal.data.prepare import prepare
from medmodal.data.prepared import (
    PreparedDataError,
    PreparedStudies,
    is_prepared,
    item_builder,
    read_index,
    shard_samples,
)
from medmodal.data.prepared_manifest import PreparedStudyDataset, read_prepared_manifest
from medmodal.data.tokenizer import ReportTokenizer

from .fixtures import row, write_csv, write_png


@pytest.fixture(scope="module")
def prepared(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "prep"
    prepare(tiny_data, str(out), tiny_config(), studies_per_shard=30, chunk_rows=37)
    return out


def _tokenizer(data) -> ReportTokenizer:
    return ReportTokenizer.train(
        [s.text(("indication", "findings", "impression")) for s in data.split("train")]
    )


def test_prepared_items_equal_raw_items(tiny_data, prepared):
    config = tiny_config()
    raw, prep = read_dataset(tiny_data, config), read_dataset(prepared, config)
    assert prep.label_names == raw.label_names
    for split in ("train", "val", "test"):  # the same patient-level splits as the raw path
        assert [s.id for s in prep.split(split)] == [s.id for s in raw.split(split)]
    tokenizer = _tokenizer(raw)
    studies_raw, studies_prep = raw.split("test"), prep.split("test")
    raw_set = build_dataset(studies_raw, tokenizer, raw.label_names, config, train=False)
    prep_set = build_dataset(studies_prep, tokenizer, prep.label_names, config, train=False)
    assert isinstance(prep_set, PreparedStudyDataset)
    for i in range(len(raw_set)):
        a, b = raw_set[i], prep_set[i]
        assert a.keys() == b.keys()
        for key in a:
            same = torch.equal(a[key], b[key]) if torch.is_tensor(a[key]) else a[key] == b[key]
            assert same, f"study {a['id']}: {key} differs"
    assert sum(bool(raw_set[i]["has_image"]) for i in range(len(raw_set))) > 0


def test_streamed_split_holds_each_study_once_in_a_seeded_order(tiny_data, prepared):
    config = tiny_config()
    index = read_index(prepared)
    assert len(index.splits["train"].shards) > 1  # 30 studies per shard
    tokenizer = _tokenizer(read_dataset(tiny_data, config))

    def ids(epoch, seed=0, shuffle=True):
        builder = item_builder(tokenizer, index.label_names, config.data, train=False, seed=0)
        stream = PreparedStudies(index, "train", builder, shuffle=shuffle, seed=seed, shuffle_buffer=16)
        stream.set_epoch(epoch)
        return [item["id"] for item in stream]

    raw_ids = [s.id for s in read_dataset(tiny_data, config).split("train")]
    assert ids(0, shuffle=False) == raw_ids
    first, again, second = ids(0), ids(0), ids(1)
    assert sorted(first) == sorted(raw_ids) and len(first) == len(raw_ids) == len(
        PreparedStudies(index, "train", None)
    )
    assert first == again and first != second and first != raw_ids


def test_loader_workers_split_shards_without_repeats(tiny_data, prepared):
    from medmodal.training.prepared_training import prepared_loader

    config = tiny_config(**{"data.num_workers": 2})
    index = read_index(prepared)
    tokenizer = _tokenizer(read_dataset(tiny_data, config))
    loader = prepared_loader(index, "train", tokenizer, config, train=True, batch_size=8)
    seen = [i for batch in loader for i in batch["id"]]
    assert len(seen) == index.splits["train"].studies == len(set(seen))
    assert next(iter(loader))["image"].shape == (8, 1, 64, 64)


@pytest.mark.slow
def test_train_and_evaluate_from_prepared_data(tiny_data, prepared, tmp_path):
    from medmodal.evaluation.evaluate import evaluate_run
    from medmodal.training.trainer import train

    config = tiny_config(**{"train.epochs": 1, "model.heads.generation": False})
    result = train(prepared, config, tmp_path / "run")
    assert result.epochs_run == 1 and result.best_score is not None
    summary = json.loads((tmp_path / "run" / "data_summary.json").read_text())
    assert summary["prepared"] is True and summary["rows_kept"] == 120
    on_prepared = evaluate_run(tmp_path / "run", prepared, progress=False)
    on_raw = evaluate_run(tmp_path / "run", tiny_data, progress=False)
    assert (
        on_prepared["n_studies"] == on_raw["n_studies"] == len(read_dataset(tiny_data, config).split("test"))
    )
    assert on_prepared["classification"]["auroc_macro"] == pytest.approx(
        on_raw["classification"]["auroc_macro"]
    )


def test_prepared_settings_that_cannot_apply_are_refused(prepared, tmp_path):
    from medmodal.config import ConfigError
    from medmodal.training.trainer import train

    with pytest.raises(ConfigError, match="prepared at 64"):
        train(prepared, tiny_config(**{"data.image_size": 32}), tmp_path / "run")
    with pytest.raises(PreparedDataError, match="prepared at 64"):
        read_dataset(prepared, tiny_config(**{"data.image_size": 32}))
    with pytest.raises(PreparedDataError, match="already holds prepared data"):
        prepare(prepared.parent / "unused", str(prepared), tiny_config())


def test_positive_weights_from_counts_match_the_matrix_version():
    from medmodal.training.losses import positive_weights
    from medmodal.training.prepared_training import positive_weights_from_counts

    matrix = (
        torch.rand(500, 6, generator=torch.Generator().manual_seed(0))
        < torch.tensor([0.5, 0.1, 0.01, 0, 0.9, 0.3])
    ).float()
    expected = positive_weights(matrix)
    assert positive_weights_from_counts(matrix.sum(0).long().tolist(), 500) == pytest.approx(expected)


# ------------------------------------------------------------------------ bad rows while streaming
def _manifest_with_bad_rows(folder: Path, n: int = 60) -> Path:
    write_png(folder / "img.png")
    rows = [row(f"s{i}", image="img.png", patient_id=f"p{i}") for i in range(n)]
    rows[5]["boxes"] = "not json"
    rows[41]["image"] = "../outside.png"
    rows[42]["id"] = "s3"  # duplicate of row 5 (s3 is the 4th study)
    rows[55]["split"] = "holdout"
    return write_csv(folder, rows)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_bad_rows_are_named_chunk_by_chunk_as_read_manifest_names_them(tmp_path, suffix):
    path = _manifest_with_bad_rows(tmp_path)
    if suffix != ".csv":
        import pandas as pd

        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        path = tmp_path / f"manifest{suffix}"
        frame.to_json(path, orient="records", lines=True) if suffix == ".jsonl" else frame.to_parquet(path)
        (tmp_path / "manifest.csv").unlink()
    chunks = stream_manifest(path, chunk_rows=20)
    first = next(chunks)  # only 20 rows read so far: the first chunk's bad row is already named
    assert [p.field for p in first.problems] == ["boxes"] and len(first.studies) == 19
    rest = list(chunks)
    streamed = first.problems + [p for c in rest for p in c.problems]
    whole = read_manifest(path).problems
    assert [(p.row, p.field, p.message) for p in streamed] == [(p.row, p.field, p.message) for p in whole]
    assert {p.field for p in streamed} == {"boxes", "image", "id", "split"}
    kept = [s.id for c in [first, *rest] for s in c.studies]
    assert kept == [s.id for s in read_manifest(path).studies]


def test_prepare_records_bad_rows_and_refuses_them_on_error(tmp_path):
    path = _manifest_with_bad_rows(tmp_path / "data")
    result = prepare(path, str(tmp_path / "prep"), tiny_config(), chunk_rows=16)
    index = read_index(tmp_path / "prep")
    assert len(result.problems) == 4 and sum(result.studies.values()) == 56
    assert {(p["row"], p["field"]) for p in index.problems} == {(p.row, p.field) for p in result.problems}
    with pytest.raises(ValueError, match="bad row"):
        prepare(path, str(tmp_path / "prep2"), tiny_config(**{"data.on_bad_row": "error"}))
    assert not is_prepared(tmp_path / "prep2")


# ------------------------------------------------------------------------ untrusted shards
def _rewrite_shard(shard: Path, change) -> None:
    """Rebuild ``shard`` with ``change(name, data) -> list of (name, data)`` applied to each member."""
    members = []
    with tarfile.open(shard) as tar:
        for info in tar:
            members += change(info.name, tar.extractfile(info).read())
    with tarfile.open(shard, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _copy(prepared: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(prepared, tmp_path / "copy"))


def _pickled_npy() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return buffer.getvalue()


@pytest.mark.parametrize("tamper, message", [
    (lambda n, d: [(n, _pickled_npy() if n.endswith(".npy") else d)], "not a readable .npy"),
    (lambda n, d: [("../escape.json" if n.endswith(".json") else n, d)], "not a member of a prepared shard"),
    (lambda n, d: [(n, d + b" " * (5 * 1024 * 1024) if n.endswith(".json") else d)], "more than the limit"),
    (lambda n, d: [(n, b'{"id": 3}' if n.endswith(".json") else d)], "field 'id'"),
    (lambda n, d: [(n, _npy(np.zeros((8, 8), np.uint16)) if n.endswith(".npy") else d)], "expected uint8"),
])  # fmt: skip
def test_tampered_shard_is_refused_with_shard_and_member_named(prepared, tmp_path, tamper, message):
    copy = _copy(prepared, tmp_path)
    shard = copy / "test-000000.tar"
    _rewrite_shard(shard, tamper)
    with pytest.raises(PreparedDataError, match=message) as err:
        list(shard_samples(str(shard), 64))
    assert "test-000000.tar" in str(err.value)
    with pytest.raises(PreparedDataError, match=message):
        manifest = read_prepared_manifest(copy)  # json problems found here, image ones when read
        dataset = PreparedStudyDataset(manifest.split("test"), None, manifest.label_names, image_size=64)
        [dataset.stored_image(i) for i in range(len(dataset))]


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def test_truncated_shard_and_hostile_index_are_refused(prepared, tmp_path):
    copy = _copy(prepared, tmp_path)
    shard = copy / "val-000000.tar"
    shard.write_bytes(shard.read_bytes()[:3000])
    with pytest.raises(PreparedDataError, match="val-000000.tar"):
        list(shard_samples(str(shard), 64))
    index = json.loads((copy / "prepared.json").read_text())
    for shard_name in ("pipe:rm -rf ~", "../train-000000.tar", "/etc/train-000000.tar", "val-000000.tar"):
        index["splits"]["train"]["shards"] = [shard_name]
        (copy / "prepared.json").write_text(json.dumps(index))
        with pytest.raises(PreparedDataError, match="is not train-NNNNNN.tar"):
            read_index(copy)
    (copy / "prepared.json").write_text('{"format": "medmodal-prepared", "version": 1, "image_size": "big"}')
    with pytest.raises(PreparedDataError, match="image_size"):
        read_index(copy)


def test_prepare_to_and_read_from_an_object_store_url(tiny_data):
    """fsspec's in-memory file system stands in for s3:// / gs:// (same code path, no network)."""
    url = "memory://medmodal-test/prep"
    prepare(tiny_data, url, tiny_config(), studies_per_shard=50)
    assert is_prepared(url)
    manifest = read_prepared_manifest(url)
    assert len(manifest.studies) == 120
    dataset = PreparedStudyDataset(
        manifest.split("val"), _tokenizer(manifest), manifest.label_names, image_size=64
    )
    assert dataset[0]["image"].shape == (1, 64, 64)


def test_heads_follow_the_prepared_training_split(prepared, tmp_path):
    """No target text / no boxes in the training split: no decoder / no localization head (as on raw data)."""
    import dataclasses

    from medmodal.training.prepared_training import heads_for_prepared_data

    index = read_index(prepared)
    assert heads_for_prepared_data(tiny_config(), index).model.heads.generation is True
    assert heads_for_prepared_data(tiny_config(), index).model.heads.localization is True
    bare = dataclasses.replace(index, summary={**index.summary, "sections_by_split": {"train": {"indication": 5}},
                                               "boxes_by_split": {"train": 0}})  # fmt: skip
    heads = heads_for_prepared_data(tiny_config(), bare).model.heads
    assert heads.generation is False and heads.localization is False
