"""A killed and resumed training reproduces the uninterrupted one, and says it was resumed."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_config

from medmodal.safeio import load_torch_file
from medmodal.training.module import MultimodalModule
from medmodal.training.reproducibility import EpochSeededItems, EpochSeededSampler
from medmodal.training.trainer import train

# Augmentation and dropout on: both draw random numbers that a resume must reproduce.
RESUME_CONFIG = {"train.epochs": 3, "train.limit_train_batches": 3, "data.augment.enabled": True,
                 "model.heads.generation": False}  # fmt: skip


class Killed(RuntimeError):
    """Stands for the process dying (SIGKILL) at the start of an epoch."""


def _kill_at_epoch(monkeypatch, epoch: int) -> None:
    def on_train_epoch_start(self):
        if self.current_epoch == epoch:
            raise Killed(f"killed at the start of epoch {epoch}")

    monkeypatch.setattr(MultimodalModule, "on_train_epoch_start", on_train_epoch_start)


def _final_state(run):
    return load_torch_file(run / "checkpoints" / "last.ckpt")["state_dict"]


@pytest.mark.slow
def test_killed_and_resumed_training_matches_the_uninterrupted_one(tiny_data, tmp_path, monkeypatch):
    config = tiny_config(**RESUME_CONFIG)
    whole = train(tiny_data, config, tmp_path / "whole")

    for epoch in (1, 2):  # killed twice, resumed twice
        with monkeypatch.context() as patch:
            _kill_at_epoch(patch, epoch)
            with pytest.raises(Killed):
                train(tiny_data, config, tmp_path / "killed")
        assert not (tmp_path / "killed" / "training_done.json").exists()
    resumed = train(tiny_data, config, tmp_path / "killed")

    assert resumed.epochs_run == whole.epochs_run == 3
    assert resumed.best_score == pytest.approx(whole.best_score, abs=1e-6)
    a, b = _final_state(tmp_path / "whole"), _final_state(tmp_path / "killed")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    done = json.loads((tmp_path / "killed" / "training_done.json").read_text())
    assert done["resumed"] is True and done["resumes"] == 2
    resumes = json.loads((tmp_path / "killed" / "resumes.json").read_text())
    assert [r["epoch"] for r in resumes] == [0, 1]  # checkpoints of the end of epochs 0 and 1
    whole_done = json.loads((tmp_path / "whole" / "training_done.json").read_text())
    assert whole_done["resumed"] is False and whole_done["resumes"] == 0


def test_epoch_order_depends_only_on_seed_and_epoch():
    sampler = EpochSeededSampler(50, seed=3)
    orders = []
    for epoch in (0, 1, 0):
        sampler.set_epoch(epoch)
        orders.append([index for index, _ in sampler])
    assert orders[0] == orders[2] and orders[0] != orders[1]
    assert sorted(orders[1]) == list(range(50))
    fresh = EpochSeededSampler(50, seed=3)
    fresh.set_epoch(1)  # a new process resuming at epoch 1
    assert [index for index, _ in fresh] == orders[1]
    assert {e for _, e in fresh} == {1}


class Draws(torch.utils.data.Dataset):
    """``size`` items, each a draw from the dataset's own generator (which ``set_random_state`` reseeds)."""

    def __init__(self, size: int):
        self.size = size
        self.generator = torch.Generator()

    def __len__(self):
        return self.size

    def set_random_state(self, seed):
        self.generator.manual_seed(seed)

    def __getitem__(self, index):
        return float(torch.rand(1, generator=self.generator))


class IndexedDraws(Draws):
    """Batchable items: the index and the draw."""

    def __getitem__(self, index):
        return {"index": torch.tensor(index), "draw": torch.rand(1, generator=self.generator)}


def test_items_are_reseeded_by_seed_epoch_and_index():
    items = EpochSeededItems(Draws(4), seed=0)
    first = [items[(i, 0)] for i in range(4)]
    assert [items[(i, 0)] for i in reversed(range(4))] == first[::-1]  # order / history does not matter
    assert items[(0, 1)] != first[0]  # another epoch, another draw
    assert len(set(first)) == 4


def test_loader_batches_do_not_depend_on_worker_processes():
    from medmodal.training.reproducibility import epoch_seeded_loader

    def epochs(num_workers):
        loader = epoch_seeded_loader(IndexedDraws(6), batch_size=4, seed=5, num_workers=num_workers)
        seen = []
        for epoch in (0, 1):
            loader.sampler.set_epoch(epoch)  # what Lightning does at every epoch start
            seen.append([(b["index"].tolist(), b["draw"].flatten().tolist()) for b in loader])
        return seen

    in_process = epochs(0)
    assert in_process[0] != in_process[1]
    assert epochs(2) == in_process
