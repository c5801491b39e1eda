"""A tiny pretrain -> encoders -> search -> retrieval / zero-shot run."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_config  # tests/conftest.py (rootdir on sys.path under pytest)

PRETRAIN_OVERRIDES = {"model.embed_dim": 16, "pretrain.projection_dim": 16, "pretrain.local_loss_weight": 0.5,
                      "train.epochs": 1, "pretrain.max_text_tokens": 48}  # fmt: skip


@pytest.fixture(scope="module")
def pretrained(tiny_data, tmp_path_factory):
    from medmodal.training.pretrain import pretrain

    out = tmp_path_factory.mktemp("pretrain") / "run"
    result = pretrain(tiny_data, tiny_config(**PRETRAIN_OVERRIDES), out)
    return result


def test_pretraining_writes_encoders_that_load_into_the_supervised_model(pretrained, tiny_data):
    from medmodal.data.tokenizer import ReportTokenizer
    from medmodal.models.multimodal import create_model
    from medmodal.training.pretrain import load_pretrained_run

    run = pretrained.run
    assert (run.root / "pretraining_done.json").exists() and run.tokenizer.exists()
    tokenizer = ReportTokenizer.load(run.tokenizer)
    cfg = tiny_config(**PRETRAIN_OVERRIDES).model
    cfg = cfg.model_copy(update={
        "image_encoder": cfg.image_encoder.model_copy(update={"pretrained_path": str(pretrained.encoders["image_encoder"])}),
        "text_encoder": cfg.text_encoder.model_copy(update={"pretrained_path": str(pretrained.encoders["text_encoder"])}),
    })  # fmt: skip
    model = create_model(cfg, vocab_size=tokenizer.vocab_size, num_labels=6, pad_id=0, bos_id=2, eos_id=3)
    loaded = load_pretrained_run(run.root)
    for name in ("image_encoder", "text_encoder"):
        mine, theirs = getattr(model, name).state_dict(), getattr(loaded.model, name).state_dict()
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_search_cli_returns_nearest_studies_as_json(pretrained, tiny_data, capsys):
    from medmodal.cli.main import main

    image = min((tiny_data / "images").glob("*.png"))
    assert main(["search", str(pretrained.run.root), "--image", str(image), "--k", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["query"]["searched"] == "reports" and len(result["results"]) == 3
    assert [h["rank"] for h in result["results"]] == [1, 2, 3]
    scores = [h["score"] for h in result["results"]]
    assert scores == sorted(scores, reverse=True)
    assert (pretrained.run.root / "index" / "meta.json").exists()  # cached for the next query
    assert (
        main(["search", str(pretrained.run.root), "--text", "large left pleural effusion", "--k", "2"]) == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["query"]["searched"] == "images" and len(result["results"]) == 2
    assert main(["search", str(pretrained.run.root)]) == 2  # neither --image nor --text: clean error


def test_retrieval_and_zero_shot_write_their_metrics_sections(pretrained, tiny_data, tiny_run):
    from medmodal.retrieval.evaluate_pretrained import evaluate_retrieval, evaluate_zero_shot

    retrieval = evaluate_retrieval(pretrained.run.root, tiny_data)
    for direction in ("image_to_text", "text_to_image"):
        scores = retrieval[direction]
        assert 0 <= scores["recall_at_1"] <= scores["recall_at_5"] <= scores["recall_at_10"] <= 1
        assert 1 <= scores["median_rank"] <= scores["n_items"]
    zero_shot = evaluate_zero_shot(pretrained.run.root, tiny_data, supervised=[tiny_run])
    assert set(zero_shot["per_label"]) == set(json.loads((tiny_data / "labels.json").read_text()))
    assert len(zero_shot["supervised"]) == 1
    assert "same_findings" in retrieval and retrieval["scores"] == "cosine"
    csls = evaluate_retrieval(pretrained.run.root, tiny_data, hubness="csls", csls_k=5)
    assert csls["scores"].startswith("CSLS, k=5")
    assert csls["n_studies"] == retrieval["n_studies"]
    metrics = json.loads(pretrained.run.metrics.read_text())
    assert {"retrieval", "retrieval_csls", "zero_shot"} <= set(metrics)


def test_transfer_config_initialises_only_the_pretrained_arm(pretrained):
    from medmodal.experiments.transfer import transfer_config

    base = tiny_config()
    pre = transfer_config(base, pretrained.run.root, "pretrained", 0.25)
    rand = transfer_config(base, pretrained.run.root, "random", 0.25)
    assert pre.model.image_encoder.pretrained_path == str(pretrained.encoders["image_encoder"])
    assert (
        rand.model.image_encoder.pretrained_path is None and rand.model.text_encoder.pretrained_path is None
    )
    for cfg in (pre, rand):
        assert cfg.data.train_fraction == 0.25 and cfg.model.embed_dim == 16
        assert cfg.data.tokenizer_path == str(pretrained.run.tokenizer)


def test_rerunning_a_finished_pretraining_keeps_its_record(pretrained, tiny_data):
    from medmodal.training.pretrain import DONE_FILE, pretrain

    done = pretrained.run.root / DONE_FILE
    before, mtime = done.read_text(), done.stat().st_mtime_ns
    encoder_mtime = pretrained.encoders["image_encoder"].stat().st_mtime_ns
    again = pretrain(tiny_data, tiny_config(**PRETRAIN_OVERRIDES), pretrained.run.root)
    assert done.read_text() == before and done.stat().st_mtime_ns == mtime
    assert pretrained.encoders["image_encoder"].stat().st_mtime_ns == encoder_mtime
    assert again.epochs_run == json.loads(before)["epochs_run"]


class Killed(RuntimeError):
    """Stands for the process dying at the start of an epoch."""


def test_resumed_pretraining_keeps_earlier_logs_and_refuses_another_epoch_count(
    tiny_data, tmp_path, monkeypatch
):
    from medmodal.training.engine import RunConflictError
    from medmodal.training.pretrain import DONE_FILE, ContrastiveModule, pretrain

    config = tiny_config(**{**PRETRAIN_OVERRIDES, "train.epochs": 2, "pretrain.local_loss_weight": 0.0})
    out = tmp_path / "run"

    def killed_at_second_epoch(self):
        if self.current_epoch == 1:
            raise Killed("killed at the start of epoch 1")

    with monkeypatch.context() as patch:
        patch.setattr(ContrastiveModule, "on_train_epoch_start", killed_at_second_epoch)
        with pytest.raises(Killed):
            pretrain(tiny_data, config, out)
    first_log = (out / "logs" / "csv" / "metrics.csv").read_text()
    assert "val/loss" in first_log

    with pytest.raises(RunConflictError, match="train.epochs 2 -> 3"):
        pretrain(
            tiny_data,
            tiny_config(**{**PRETRAIN_OVERRIDES, "train.epochs": 3, "pretrain.local_loss_weight": 0.0}),
            out,
        )

    result = pretrain(tiny_data, config, out)
    assert result.epochs_run == 2 and (out / DONE_FILE).exists()
    assert (out / "logs" / "csv" / "metrics.csv").read_text() == first_log  # not wiped by the resume
    assert (out / "logs" / "csv-resumed-1" / "metrics.csv").exists()
    assert [r["epoch"] for r in json.loads((out / "resumes.json").read_text())] == [0]
    assert json.loads((out / DONE_FILE).read_text())["resumes"] == 1
