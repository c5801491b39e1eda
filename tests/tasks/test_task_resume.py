"""VQA and segmentation run on the engine of every medmodal run: a run killed after an epoch resumes to
the result of the uninterrupted one, keeps the logs written before the kill and records the resume."""

from __future__ import annotations

import json

import pytest
import torch

from medmodal.safeio import load_torch_file
from medmodal.tasks.config import SegmentationConfig, VQAConfig, with_overrides
from medmodal.tasks.segmentation import SegmentationModule, train_segmentation
from medmodal.tasks.vqa import VQAModule, train_vqa

TINY_TRAIN = {
    "train.epochs": 2,
    "train.limit_train_batches": 3,
    "train.progress_bar": False,
    "train.batch_size": 8,
}
TASKS = {
    "vqa": (VQAModule, train_vqa, with_overrides(VQAConfig(), {
        **TINY_TRAIN, "embed_dim": 16, "image_size": 32,
        "image_encoder.kwargs": {"widths": [8, 16], "stem_width": 8},
    })),
    "segmentation": (SegmentationModule, train_segmentation, with_overrides(SegmentationConfig(), {
        **TINY_TRAIN, "embed_dim": 8, "image_size": 32, "features": [4, 4, 8, 8, 16, 4],
    })),
}  # fmt: skip


class Killed(RuntimeError):
    """Stands for the process dying (SIGKILL) at the start of an epoch."""


def _kill_at_epoch(monkeypatch, module_class, epoch: int) -> None:
    def on_train_epoch_start(self):
        if self.current_epoch == epoch:
            raise Killed(f"killed at the start of epoch {epoch}")

    monkeypatch.setattr(module_class, "on_train_epoch_start", on_train_epoch_start)


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(TASKS))
def test_killed_task_resumes_to_the_uninterrupted_result(task, tiny_data, tmp_path, monkeypatch):
    module_class, train, config = TASKS[task]
    whole = train(tiny_data, tmp_path / "whole", config)

    with monkeypatch.context() as patch:
        _kill_at_epoch(patch, module_class, 1)
        with pytest.raises(Killed):
            train(tiny_data, tmp_path / "killed", config)
    killed = tmp_path / "killed"
    assert (killed / "checkpoints" / "last.ckpt").exists() and not (killed / "training_done.json").exists()
    resumed = train(tiny_data, killed, config)

    assert resumed.epochs_run == whole.epochs_run == 2
    assert resumed.best_score == pytest.approx(whole.best_score, abs=1e-6)
    a = load_torch_file(tmp_path / "whole" / "checkpoints" / "last.ckpt")["state_dict"]
    b = load_torch_file(killed / "checkpoints" / "last.ckpt")["state_dict"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    assert (killed / "logs" / "csv" / "metrics.csv").exists()  # the epoch before the kill stays logged
    assert (killed / "logs" / "csv-resumed-1" / "metrics.csv").exists()
    done = json.loads((killed / "training_done.json").read_text())
    assert done["resumed"] is True and done["resumes"] == 1
