"""Optimiser groups of the wide pathways (train.wide_lr_scale / wide_weight_decay) and weight
averaging (train.weight_averaging)."""

from __future__ import annotations

from conftest import tiny_config
from lightning.pytorch.callbacks import EMAWeightAveraging

from medmodal.training.module import MultimodalModule
from medmodal.training.weight_averaging import weight_averaging_callbacks


def _module(**overrides) -> MultimodalModule:
    config = tiny_config(**overrides)
    return MultimodalModule(
        config.model_dump(mode="json"), vocab_size=30, num_labels=3, pad_id=0, bos_id=1, eos_id=2
    )


def test_wide_pathways_get_their_own_rate_and_weight_decay():
    module = _module(
        **{
            "model.heads.localization": False,
            "model.wide.pixels": 4,
            "model.wide.ngrams": True,
            "train.lr": 1e-3,
            "train.wide_lr_scale": 10.0,
            "train.wide_weight_decay": 0.3,
        }
    )
    groups = module.parameter_groups()
    wide = {id(p) for part in (module.model.wide_image, module.model.wide_text) for p in part.parameters()}
    assert [g["lr"] for g in groups] == [1e-3, 1e-2, 1e-2]
    assert [g.get("weight_decay") for g in groups[1:]] == [0.3, 0.3]
    assert {id(p) for g in groups[1:] for p in g["params"]} == wide
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(module.parameters()))


def test_weight_averaging_adds_an_ema_callback_only_when_asked():
    assert weight_averaging_callbacks(tiny_config().train) == []
    (callback,) = weight_averaging_callbacks(
        tiny_config(**{"train.weight_averaging": "ema", "train.ema_decay": 0.9}).train
    )
    assert isinstance(callback, EMAWeightAveraging)


def test_a_supervised_run_gets_the_ema_callback_only_when_asked():
    from medmodal.training.callbacks import supervised_callbacks

    def has_ema(config) -> bool:
        callbacks = supervised_callbacks(config.train, ["a", "b"], tokenizer=None)
        return any(isinstance(c, EMAWeightAveraging) for c in callbacks)

    assert has_ema(tiny_config(**{"train.weight_averaging": "ema"}))
    assert not has_ema(tiny_config())
