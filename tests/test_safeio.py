"""Torch files from others: loaded as weights only, every failure a clear error naming the file."""

from __future__ import annotations

import os
import pickle
import zipfile

import pytest
import torch

from medmodal.safeio import UnreadableFileError, UnsafeFileError, load_torch_file


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_tensors_and_plain_values_load(tmp_path):
    torch.save({"w": torch.ones(2), "epoch": 3, "name": "x", "sizes": [1, 2]}, tmp_path / "ok.pt")
    state = load_torch_file(tmp_path / "ok.pt")
    assert torch.equal(state["w"], torch.ones(2)) and state["epoch"] == 3


@pytest.mark.parametrize("zip_format", [True, False])
def test_a_pickled_call_is_refused_and_never_runs(tmp_path, zip_format):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(2), "x": _RunsCode(marker)}, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(UnsafeFileError, match=rf"{path}: refused .*posix.system"):
        load_torch_file(path, "checkpoint")
    assert not marker.exists()


def test_a_plain_pickle_is_not_read(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises((UnreadableFileError, UnsafeFileError), match=str(path)):
        load_torch_file(path)
    assert not marker.exists()


def test_truncated_empty_and_foreign_files_are_unreadable(tmp_path):
    torch.save({"w": torch.zeros(1000)}, tmp_path / "whole.pt")
    data = (tmp_path / "whole.pt").read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    for name in ("half.pt", "empty.pt", "notes.pt"):
        with pytest.raises(UnreadableFileError, match=rf"{tmp_path / name}: not a readable"):
            load_torch_file(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_torch_file(tmp_path / "missing.pt")


def test_an_archive_that_would_inflate_is_refused(tmp_path):
    torch.save({"w": torch.zeros(100_000)}, tmp_path / "plain.pt")
    bomb = tmp_path / "bomb.pt"
    with (
        zipfile.ZipFile(tmp_path / "plain.pt") as src,
        zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    assert bomb.stat().st_size < 10_000  # 400 kB of zeros in a few kB
    with pytest.raises(UnreadableFileError, match="compressed entries"):
        load_torch_file(bomb)
