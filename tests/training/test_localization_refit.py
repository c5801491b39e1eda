"""The localization refit (train.localization_refit_epochs, medmodal/training/localization_refit.py):
a fresh head fitted on the frozen features of the best checkpoint when training ends."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from medmodal.config import ConfigError
from medmodal.models.localization import LocalizationHead
from medmodal.training.checkpoints import read_checkpoint

REFIT = {
    "model.heads.generation": False,
    "model.localization.dilations": [2],
    "train.epochs": 1,
    "train.localization_refit_epochs": 3,
}


@pytest.fixture(scope="module")
def refit_run(tiny_data, tmp_path_factory):
    from medmodal.training.trainer import train

    out = tmp_path_factory.mktemp("refit") / "run"
    train(tiny_data, tiny_config(**REFIT), out)
    return out


def _weights(run, name: str) -> dict[str, torch.Tensor]:
    state = read_checkpoint(run / "checkpoints" / name)["state_dict"]
    return {k: v for k, v in state.items() if torch.is_tensor(v)}


def _training_set(run, data):
    from medmodal.data.pipeline import build_dataset, fit_splits, read_dataset
    from medmodal.data.tokenizer import ReportTokenizer

    config = tiny_config(**REFIT)
    manifest = read_dataset(data, config)
    train_studies, _ = fit_splits(manifest)
    tokenizer = ReportTokenizer.load(run / "tokenizer.json")
    return build_dataset(train_studies, tokenizer, manifest.label_names, config, train=False)


def test_only_the_head_changes_and_it_is_the_refit_of_the_best_weights(refit_run, tiny_data):
    from medmodal.training.loading import load_trained
    from medmodal.training.localization_refit import refit_localizer
    from medmodal.training.losses import MultitaskLoss

    best, last = _weights(refit_run, "best.ckpt"), _weights(refit_run, "last.ckpt")  # one epoch: same epoch
    head = [k for k in best if k.startswith("model.localizer.")]
    assert head and any(not torch.equal(best[k], last[k]) for k in head)
    assert all(torch.equal(best[k], last[k]) for k in best if k not in head)  # encoders, fusion, classifier
    # Refitting the loaded model by hand (from its joint-trained head's place) gives the same head.
    config = tiny_config(**REFIT)
    loaded = load_trained(refit_run)
    assert loaded.model.localizer is not None
    loaded.model.localizer.load_state_dict(
        {k.removeprefix("model.localizer."): v for k, v in last.items() if k in head}
    )
    loss = MultitaskLoss(config.train, len(loaded.labels), loaded.tokenizer.pad_id)
    losses = refit_localizer(loaded.model, loss, _training_set(refit_run, tiny_data), config.train)
    assert len(losses) == 3 and losses[-1] < losses[0]
    for name, value in loaded.model.localizer.state_dict().items():
        torch.testing.assert_close(value, best[f"model.localizer.{name}"], rtol=0, atol=1e-6)


def test_a_run_killed_during_the_refit_writes_the_same_head_again(refit_run, tiny_data, tmp_path):
    import shutil

    from medmodal.training.checkpoints import write_checkpoint_atomic
    from medmodal.training.trainer import train

    run = tmp_path / "run"
    shutil.copytree(refit_run, run)
    before = _weights(run, "best.ckpt")
    # killed after the fit, before the refit wrote its head: the joint head, no training_done.json
    state = read_checkpoint(run / "checkpoints" / "best.ckpt")
    last = _weights(run, "last.ckpt")
    for name in [k for k in state["state_dict"] if k.startswith("model.localizer.")]:
        state["state_dict"][name] = last[name]
    write_checkpoint_atomic(state, run / "checkpoints" / "best.ckpt")
    (run / "training_done.json").unlink()
    train(tiny_data, tiny_config(**REFIT), run)
    after = _weights(run, "best.ckpt")
    assert before.keys() == after.keys()
    for name in before:
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=1e-6, msg=name)


def test_the_kept_features_stop_at_the_memory_cap(refit_run, tiny_data):
    from medmodal.training.loading import load_trained
    from medmodal.training.localization_refit import KEPT, head_inputs

    model = load_trained(refit_run).model
    studies = _training_set(refit_run, tiny_data)
    everything = head_inputs(model, studies, batch_size=8)
    assert set(everything) == set(KEPT) and all(len(v) == len(studies) for v in everything.values())
    one_study = sum(v[0].element_size() * v[0].nelement() for v in everything.values())
    capped = head_inputs(model, studies, batch_size=8, max_bytes=10 * one_study)
    assert len(capped["grid"]) == 16  # the batch that crossed the cap is the last one kept
    torch.testing.assert_close(capped["vector"], everything["vector"][:16])
    assert not model.training


def test_reset_parameters_draws_the_head_as_built():
    torch.manual_seed(3)
    built = LocalizationHead(16, 8, 3, 16, stride=4, dilations=(2, 4))
    other = LocalizationHead(16, 8, 3, 16, stride=4, dilations=(2, 4))
    assert not torch.equal(built.grid_proj.weight, other.grid_proj.weight)
    torch.manual_seed(3)
    other.reset_parameters()
    for (name, a), b in zip(built.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), name
    assert float(other.film.weight.abs().sum()) == 0.0  # FiLM starts as the identity again


def test_dilated_convs_widen_the_trunk_and_keep_the_maps_shape():
    plain = LocalizationHead(16, 8, 3, 16, stride=4)
    dilated = LocalizationHead(16, 8, 3, 16, stride=4, dilations=(2, 4))
    assert len(dilated.trunk) == len(plain.trunk) + 2
    assert [m[0].dilation for m in dilated.trunk] == [(1, 1), (1, 1), (2, 2), (4, 4)]
    grid, context, image = torch.randn(2, 16, 4, 4), torch.randn(2, 8), torch.randn(2, 1, 64, 64)
    assert (
        dilated(grid, context, image).heatmaps.shape
        == plain(grid, context, image).heatmaps.shape
        == (2, 3, 16, 16)
    )


def test_a_zero_generation_weight_skips_the_decoder_in_training(tiny_data):
    from medmodal.data.dataset import collate
    from medmodal.data.pipeline import build_dataset, fit_splits, read_dataset, vocabulary_texts
    from medmodal.data.tokenizer import ReportTokenizer
    from medmodal.training.module import MultimodalModule

    retrieved = {
        "model.report_conditioning.reports": "retrieved",
        "model.report_conditioning.threshold": "val_micro_f1",
    }
    grads = {}
    for weight in (0.5, 0.0):
        config = tiny_config(**retrieved, **{"train.loss_weights.generation": weight})
        manifest = read_dataset(tiny_data, config)
        train_studies, _ = fit_splits(manifest)
        tokenizer = ReportTokenizer.train(vocabulary_texts(train_studies, config), min_freq=1)
        dataset = build_dataset(train_studies[:4], tokenizer, manifest.label_names, config, train=False)
        torch.manual_seed(0)
        module = MultimodalModule.for_tokenizer(config, tokenizer, len(manifest.label_names), None, None)
        module.log = lambda *args, **kwargs: None  # type: ignore[method-assign]
        module.training_step(collate([dataset[i] for i in range(4)]), 0).backward()
        assert module.model.decoder is not None
        grads[weight] = [p.grad for p in module.model.decoder.parameters()]
    assert all(g is not None for g in grads[0.5])
    assert all(g is None for g in grads[0.0])


def test_generated_reports_with_an_untrained_decoder_are_refused():
    with pytest.raises(ConfigError, match="train.loss_weights.generation"):
        tiny_config(**{"train.loss_weights.generation": 0.0})
    tiny_config(**{"train.loss_weights.generation": 0.0, "model.heads.generation": False})  # no decoder: fine


def test_the_refit_is_refused_on_prepared_data(tiny_data):
    from types import SimpleNamespace

    from medmodal.training.prepared_training import check_prepared_config

    config = tiny_config(**REFIT)
    index = SimpleNamespace(image_size=config.data.image_size, root=tiny_data)
    with pytest.raises(ConfigError, match="train.localization_refit_epochs"):
        check_prepared_config(index, config)  # type: ignore[arg-type]
