"""MONAI's Transchex as registered parts (medmodal/models/peers/transchex.py): trains through our
trainer, predicts, loads BERT weights only from a local file, and never opens a network connection."""

from __future__ import annotations

import socket

import pytest
import torch

pytest.importorskip("transformers")

from medmodal.config import apply_overrides
from medmodal.models.peers.transchex import TranschexText

TRANSCHEX = {
    "model.image_encoder.name": "transchex_image",
    "model.image_encoder.kwargs": {
        "image_size": 64,
        "patch_size": 16,
        "num_attention_heads": 2,
        "num_vision_layers": 1,
    },
    "model.text_encoder.name": "transchex_text",
    "model.text_encoder.kwargs": {"num_attention_heads": 2, "num_language_layers": 1},
    "model.fusion.name": "transchex",
    "model.fusion.kwargs": {"num_attention_heads": 2, "num_mixed_layers": 1},
    "model.heads.localization": False,
    "model.heads.generation": False,
    "train.loss_weights.auxiliary": 0.0,
}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any socket connection fails the test (MONAI's own Transchex would fetch BERT from the hub)."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_transchex_trains_one_step_through_the_trainer_and_predicts(tiny_data, tmp_path):
    from conftest import tiny_config

    from medmodal.training.loading import load_trained
    from medmodal.training.trainer import train

    config = apply_overrides(tiny_config(), {**TRANSCHEX, "train.epochs": 1, "train.limit_train_batches": 1})
    train(tiny_data, config, tmp_path / "run")
    trained = load_trained(tmp_path / "run")
    assert trained.model.part_names == {"image_encoder": "transchex_image", "text_encoder": "transchex_text",
                                        "fusion": "transchex"}  # fmt: skip
    batch = {
        "image": torch.rand(3, 1, 64, 64), "has_image": torch.tensor([True, True, False]),
        "text_ids": torch.randint(4, len(trained.tokenizer), (3, 7)), "has_text": torch.tensor([True, False, True]),
        "text_mask": torch.tensor([[True] * 7, [True] * 3 + [False] * 4, [True] * 7]),
    }  # fmt: skip
    with torch.no_grad():
        logits = trained.model(batch).logits
    assert logits.shape == (3, len(trained.labels)) and torch.isfinite(logits).all()


def test_padding_does_not_change_the_language_tokens():
    encoder = TranschexText(
        vocab_size=20, out_dim=16, pad_id=0, num_attention_heads=2, num_language_layers=1
    ).eval()
    ids = torch.tensor([[5, 6, 7]])
    padded = torch.tensor([[5, 6, 7, 0, 0]])
    short = encoder(ids, torch.ones_like(ids, dtype=torch.bool))
    long = encoder(padded, padded != 0)
    assert long.sequence.shape == (1, 6, 16) and long.mask.tolist() == [
        [True] * 4 + [False] * 2
    ]  # [CLS] first
    torch.testing.assert_close(long.vector, short.vector)


def _fake_bert_file(path, hidden: int = 16, vocab: int = 50):
    """A BERT-style state dict (``bert.`` keys, old ``gamma``/``beta`` LayerNorm names) saved locally."""
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(hidden_size=hidden, num_attention_heads=2, num_hidden_layers=1,
                                intermediate_size=32, vocab_size=vocab))  # fmt: skip
    state = {f"bert.{k}".replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in bert.state_dict().items()}  # fmt: skip
    torch.save(state, path)
    return state


def test_bert_weights_load_from_a_local_file_only(tmp_path):
    from medmodal.config import PartConfig
    from medmodal.models.multimodal import build_part

    state = _fake_bert_file(tmp_path / "pytorch_model.bin")
    part = PartConfig(name="transchex_text", kwargs={"num_attention_heads": 2, "num_language_layers": 1},
                      pretrained_path=str(tmp_path / "pytorch_model.bin"))  # fmt: skip
    encoder = build_part(
        "text_encoder", part, wired={"vocab_size": 30, "pad_id": 0}, defaults={"out_dim": 16}
    )
    own = encoder.state_dict()
    torch.testing.assert_close(own["bert.embeddings.position_embeddings.weight"],
                               state["bert.embeddings.position_embeddings.weight"])  # fmt: skip
    torch.testing.assert_close(
        own["bert.embeddings.LayerNorm.weight"], state["bert.embeddings.LayerNorm.gamma"]
    )
    assert own["bert.embeddings.word_embeddings.weight"].shape == (
        31,
        16,
    )  # our vocabulary + [CLS]: BERT's skipped
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        encoder.load_local_weights("bert-base-uncased")  # a hub name is not a local file: no fetch


def test_peer_parts_are_named_by_configs_but_left_out_of_the_per_part_contract_lists():
    from medmodal.models.registry import available

    for kind, name in (
        ("image_encoder", "transchex_image"),
        ("text_encoder", "transchex_text"),
        ("fusion", "transchex"),
    ):
        assert name in available(kind) and name not in available(kind, standalone=True)
