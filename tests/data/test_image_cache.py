"""Decode-once on-disk image cache of the raw path (data.image_cache_dir)."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import medmodal.data.dataset as dataset_module
from medmodal.data.dataset import StudyDataset
from medmodal.data.image_cache import DecodedImageCache
from medmodal.data.types import Study

from .fixtures import gradient, write_jpeg, write_png


def _studies(folder: Path) -> list[Study]:
    write_png(folder / "a.png")
    write_jpeg(folder / "b.jpg", gradient(300, 200))
    return _study_list(folder)


def _study_list(folder: Path) -> list[Study]:
    return [
        Study(id=f"s{i}", row=i + 2, image=folder / name)
        for i, name in enumerate(["a.png", "b.jpg", "a.png"])
    ]


def _entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*.bin") if not p.name.startswith(".tmp"))


def test_cached_images_equal_decoded_ones_and_are_read_without_decoding(tmp_path, monkeypatch):
    studies = _studies(tmp_path / "data")
    cache = tmp_path / "cache"
    plain = StudyDataset(studies, None, [], image_size=32, cache_images=False)
    first = StudyDataset(studies, None, [], image_size=32, cache_images=False, image_cache_dir=str(cache))
    expected = [plain.stored_image(i) for i in range(3)]
    written = [first.stored_image(i) for i in range(3)]
    assert len(_entries(cache)) == 2  # one entry per distinct file and size

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(dataset_module, "read_image", no_decoding)
    second = StudyDataset(studies, None, [], image_size=32, cache_images=False, image_cache_dir=str(cache))
    for want, got_first, got_second in zip(expected, written, (second.stored_image(i) for i in range(3))):
        assert torch.equal(want[0], got_first[0]) and torch.equal(want[0], got_second[0])
        assert want[1] == got_first[1] == got_second[1]


def test_changed_file_other_size_or_damaged_entry_is_a_miss(tmp_path):
    studies = _studies(tmp_path / "data")
    cache = DecodedImageCache(tmp_path / "cache")
    image = studies[0].image
    dataset = StudyDataset(
        studies[:1], None, [], image_size=32, cache_images=False, image_cache_dir=str(cache.root)
    )
    old = dataset.stored_image(0)
    assert cache.get(image, 32) is not None and cache.get(image, 16) is None
    write_png(image, 255 - gradient())
    os.utime(image, ns=(1, 1))  # another modification time
    assert cache.get(image, 32) is None
    new = dataset.stored_image(0)
    assert not torch.equal(old[0], new[0])
    entry = _entries(cache.root)[-1]
    for damaged in (entry.read_bytes()[:-1], b"XXXXX" + entry.read_bytes()[5:]):
        for path in _entries(cache.root):
            path.write_bytes(damaged)
        assert cache.get(image, 32) is None


def _fill(cache_root: str, folder: str) -> None:
    studies = _study_list(Path(folder))
    dataset = StudyDataset(studies, None, [], image_size=24, cache_images=False, image_cache_dir=cache_root)
    for _ in range(20):
        for i in range(len(studies)):
            dataset.stored_image(i)
            DecodedImageCache(cache_root).put(studies[i].image, 24, dataset.stored_image(i))


@pytest.mark.skipif(
    multiprocessing.get_start_method(allow_none=True) not in (None, "fork"), reason="fork only"
)
def test_processes_sharing_a_cache_leave_only_whole_entries(tmp_path):
    data = tmp_path / "data"
    _studies(data)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_fill, args=(str(tmp_path / "cache"), str(data))) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    assert len(_entries(tmp_path / "cache")) == 2
    assert not list((tmp_path / "cache").rglob(".tmp-*"))
    cache = DecodedImageCache(tmp_path / "cache")
    for name in ("a.png", "b.jpg"):
        pixels, _ = cache.get(data / name, 24)
        assert pixels.dtype == torch.uint8 and pixels.shape == (1, 24, 24) and np.asarray(pixels).any()
