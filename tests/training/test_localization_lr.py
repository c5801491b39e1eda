"""The localization head's own learning rate (train.localization_lr_scale)."""

from __future__ import annotations

from conftest import tiny_config

from medmodal.training.module import MultimodalModule


def _module(**overrides) -> MultimodalModule:
    config = tiny_config(**overrides)
    return MultimodalModule(
        config.model_dump(mode="json"), vocab_size=30, num_labels=3, pad_id=0, bos_id=1, eos_id=2
    )


def test_head_gets_the_scaled_rate_and_every_parameter_is_in_exactly_one_group():
    module = _module(**{"train.lr": 1e-3, "train.localization_lr_scale": 5.0})
    groups = module.parameter_groups()
    assert [g["lr"] for g in groups] == [1e-3, 5e-3]
    head = {id(p) for p in module.model.localizer.parameters()}
    assert {id(p) for p in groups[1]["params"]} == head
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(module.parameters()))


def test_without_a_localization_head_there_is_one_group():
    groups = _module(**{"model.heads.localization": False}).parameter_groups()
    assert len(groups) == 1 and groups[0]["lr"] == tiny_config().train.lr
