"""Stacked wide pathways (model.wide.fit: stacked, medmodal/training/wide_stacking.py): the fitted
regressions inside the model, their out-of-fold logits, the stacking weights, and a full run."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from conftest import tiny_config
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold

from medmodal.config import ConfigError
from medmodal.data.dataset import collate, make_dataloader
from medmodal.data.pipeline import build_dataset, fit_splits, label_matrix, read_dataset, vocabulary_texts
from medmodal.data.tokenizer import ReportTokenizer
from medmodal.models.multimodal import create_model
from medmodal.models.wide import OUT_OF_FOLD
from medmodal.training.wide_stacking import (
    STACKING_FILE,
    WithOutOfFold,
    _features,
    check_stacking,
    stack_wide_pathways,
)

STACKED = {
    "model.wide.pixels": 8,
    "model.wide.ngrams": True,
    "model.wide.fit": "stacked",
    "model.wide.folds": 3,
    "model.heads.localization": False,
    "model.heads.generation": False,
}


@pytest.fixture(scope="module")
def stacked(tiny_data):
    """(config, model with fitted pathways, out-of-fold columns, chosen, train / val studies, tokenizer, labels)."""
    config = tiny_config(**STACKED)
    manifest = read_dataset(tiny_data, config)
    labels = manifest.label_names
    train, val = fit_splits(manifest)
    tokenizer = ReportTokenizer.train(vocabulary_texts(train, config), min_freq=config.data.min_token_freq)
    torch.manual_seed(0)
    model = create_model(
        config.model,
        vocab_size=tokenizer.vocab_size,
        num_labels=len(labels),
        pad_id=tokenizer.pad_id,
        bos_id=tokenizer.bos_id,
        eos_id=tokenizer.eos_id,
    )
    train_set, val_set = (build_dataset(s, tokenizer, labels, config, train=True) for s in (train, val))
    columns, chosen = stack_wide_pathways(model, train_set, val_set, config)
    return config, model, columns, chosen, train, val, tokenizer, labels


def _batch(studies, tokenizer, labels, config):
    dataset = build_dataset(studies, tokenizer, labels, config, train=False)
    return collate([dataset[i] for i in range(len(dataset))])


def test_the_pixel_pathway_is_the_fitted_logistic_regression(stacked):
    config, model, _, chosen, train, val, tokenizer, labels = stacked
    pathways = {"image": model.wide_image}
    (x_train, present), (x_val, _) = (
        _features(pathways, build_dataset(s, tokenizer, labels, config, train=False))[0]["image"]
        for s in (train, val)
    )
    mean, var = x_train[present].mean(0), x_train[present].var(0)
    std = np.sqrt(var + 1e-5)
    y = label_matrix(train, labels).numpy()
    model.eval()
    batch = _batch(val, tokenizer, labels, config)
    with torch.no_grad():
        ours = model.wide_image(batch["image"])
    stacking = model.wide_image.stacking
    for c in np.flatnonzero(y.min(0) != y.max(0)):
        reference = LogisticRegression(C=chosen["image"]["C"], class_weight="balanced", max_iter=2000)
        reference.fit((x_train[present] - mean) / std, y[present, c])
        expected = reference.decision_function((x_val - mean) / std)
        scale, shift = float(stacking.scale[c]), float(stacking.shift[c])
        np.testing.assert_allclose(ours[:, c].numpy(), scale * expected + shift, rtol=1e-3, atol=1e-3)


def test_the_fitted_maps_and_stacking_weights_are_frozen(stacked):
    _, model, *_ = stacked
    for pathway in (model.wide_image, model.wide_text):
        assert not any(p.requires_grad for p in pathway.parameters())
        assert {"stacking.scale", "stacking.shift", "stacking.intercept"} <= set(pathway.state_dict())


def test_out_of_fold_logits_come_from_regressions_not_fitted_on_the_study(stacked):
    config, model, columns, chosen, train, _, tokenizer, labels = stacked
    oof = columns[OUT_OF_FOLD["text"]].numpy()
    assert oof.shape == (len(train), len(labels)) and np.isfinite(oof).all()
    # Refit the first fold by hand: its held-out rows must get exactly these logits.
    x, present = _features(
        {"text": model.wide_text}, build_dataset(train, tokenizer, labels, config, train=False)
    )[0]["text"]
    rows = np.flatnonzero(present)
    fit_part, held_out = next(KFold(3, shuffle=True, random_state=config.train.seed).split(rows))
    y = label_matrix(train, labels).numpy()
    c = int(np.flatnonzero(y[rows[fit_part]].min(0) != y[rows[fit_part]].max(0))[0])
    reference = LogisticRegression(C=chosen["text"]["C"], class_weight="balanced", max_iter=2000)
    reference.fit(x[rows[fit_part]], y[rows[fit_part], c])
    np.testing.assert_allclose(
        oof[rows[held_out], c], reference.decision_function(x[rows[held_out]]), atol=1e-6
    )
    # ... and they differ from the in-sample logits of the full fit (which has seen those rows).
    model.eval()
    with torch.no_grad():
        batch = _batch(train, tokenizer, labels, config)
        pathway = copy.deepcopy(model.wide_text)
        pathway.stacking.scale.fill_(1.0)
        pathway.stacking.shift.zero_()
        in_sample = pathway(batch["text_ids"], batch["text_mask"])
    assert not np.allclose(in_sample.numpy()[rows], oof[rows], atol=1e-3)


def test_training_mode_reads_the_out_of_fold_logits_eval_mode_the_fitted_map(stacked):
    config, model, columns, _, train, _, tokenizer, labels = stacked
    batch = _batch(train[:4], tokenizer, labels, config)
    oof = columns[OUT_OF_FOLD["image"]][:4]
    stacking = model.wide_image.stacking
    model.train()
    with torch.no_grad():
        read = model.wide_image(batch["image"], oof)
        torch.testing.assert_close(read, stacking.scale * oof + stacking.shift)
        model.eval()
        computed = model.wide_image(batch["image"], oof)  # eval: the batch's out-of-fold logits are ignored
        torch.testing.assert_close(computed, model.wide_image(batch["image"]))
    assert not torch.allclose(read, computed)


def test_before_training_the_model_is_the_stacked_regressions(stacked):
    config, model, _, chosen, _, val, tokenizer, labels = stacked
    model.eval()
    batch = _batch(val, tokenizer, labels, config)
    with torch.no_grad():
        logits = model(batch).logits
        expected = (
            model.wide_image(batch["image"]) * batch["has_image"][:, None]
            + model.wide_text(batch["text_ids"], batch["text_mask"]) * batch["has_text"][:, None]
        )
    torch.testing.assert_close(logits, expected)
    assert set(chosen) >= {"image", "text", "stacking_shift", "folds"}
    assert len(chosen["image"]["stacking_scale"]) == len(labels)


def test_the_training_set_carries_each_studys_out_of_fold_row(stacked):
    config, _, columns, _, train, _, tokenizer, labels = stacked
    dataset = WithOutOfFold(build_dataset(train, tokenizer, labels, config, train=True), columns)
    batch = next(iter(make_dataloader(dataset, batch_size=5)))
    for key, column in columns.items():
        torch.testing.assert_close(batch[key], column[:5])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model.wide.fit": "stacked"}, "model.wide.fit: stacked needs a wide pathway"),
        (
            {"model.wide.fit": "stacked", "model.wide.pixels": 8, "model.modalities": "text"},
            "model.modalities is text",
        ),
    ],
)
def test_stacking_without_a_pathway_of_the_model_is_a_config_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_stacking(tiny_config(**overrides))


def test_a_stacked_run_trains_evaluates_and_predicts(tiny_data, tmp_path):
    from medmodal.evaluation.evaluate import evaluate_run
    from medmodal.training.loading import load_trained
    from medmodal.training.trainer import train

    config = tiny_config(**{**STACKED, "train.epochs": 1})
    out = tmp_path / "run"
    result = train(tiny_data, config, out)
    # the result names the metric its best score is of (the CLI printed train.monitor's name beside
    # the validation loss); so does a finished run read back
    assert result.monitor == "val/loss" and config.train.monitor == "val/auroc_macro"
    again = train(tiny_data, config, out)
    assert (again.monitor, again.best_score) == ("val/loss", result.best_score)
    chosen = json.loads((out / STACKING_FILE).read_text())
    assert chosen["image"]["C"] > 0 and chosen["text"]["C"] > 0
    metrics = evaluate_run(out, tiny_data, split="test")
    assert 0.0 <= metrics["classification"]["auroc_macro"] <= 1.0
    # The loaded model computes the same wide logits as a fresh evaluation would (weights restored).
    loaded = load_trained(out)
    assert loaded.model.wide_image.stacking is not None
    assert float(loaded.model.wide_image.net[-1].weight.abs().sum()) > 0


def test_the_text_pathway_is_tfidf_with_binary_counts_and_its_fitted_regression(stacked):
    from sklearn.feature_extraction.text import TfidfTransformer

    from medmodal.training.wide_stacking import _idf, _tfidf

    config, model, _, chosen, train, val, tokenizer, labels = stacked
    bags = [
        _features({"text": model.wide_text}, build_dataset(s, tokenizer, labels, config, train=False))[0][
            "text"
        ][0]
        for s in (train, val)
    ]
    binary_train, binary_val = ((b > 0).astype(np.float64) for b in bags)
    reference_tfidf = TfidfTransformer(smooth_idf=True).fit(binary_train)
    train_x, val_x = _tfidf(bags[0], _idf(bags[0])), _tfidf(bags[1], _idf(bags[0]))
    np.testing.assert_allclose(
        train_x.toarray(), reference_tfidf.transform(binary_train).toarray(), atol=1e-12
    )
    y = label_matrix(train, labels).numpy()
    model.eval()
    batch = _batch(val, tokenizer, labels, config)
    with torch.no_grad():
        ours = model.wide_text(batch["text_ids"], batch["text_mask"])
    stacking = model.wide_text.stacking
    for c in np.flatnonzero(y.min(0) != y.max(0)):
        reference = LogisticRegression(C=chosen["text"]["C"], class_weight="balanced", max_iter=2000)
        reference.fit(reference_tfidf.transform(binary_train), y[:, c])
        expected = reference.decision_function(reference_tfidf.transform(binary_val))
        scale, shift = float(stacking.scale[c]), float(stacking.shift[c])
        np.testing.assert_allclose(ours[:, c].numpy(), scale * expected + shift, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(val_x.toarray(), reference_tfidf.transform(binary_val).toarray(), atol=1e-12)


def test_the_deep_weight_scales_the_deep_head_in_eval_mode_only(stacked):
    config, model, _, _, _, val, tokenizer, labels = stacked
    batch = _batch(val, tokenizer, labels, config)
    head = [m for m in model.classifier.modules() if isinstance(m, torch.nn.Linear)][-1]
    saved = copy.deepcopy(model.state_dict())
    try:
        torch.nn.init.normal_(head.weight, std=0.5)  # a deep head that says something
        model.eval()
        with torch.no_grad():
            model.deep_weight.fill_(1.0)
            full = model(batch)
            model.deep_weight.fill_(0.25)
            shrunk = model(batch)
            model.deep_weight.fill_(0.0)
            stacked_only = model(batch)
        torch.testing.assert_close(stacked_only.logits, full.stacked_logits)
        torch.testing.assert_close(
            shrunk.logits, full.stacked_logits + 0.25 * (full.logits - full.stacked_logits)
        )
        assert not torch.allclose(full.logits, stacked_only.logits)
    finally:
        model.load_state_dict(saved)


def test_validation_chooses_the_deep_weight_with_the_best_auroc(tiny_data):
    from medmodal.training.module import DEEP_WEIGHTS, MultimodalModule

    module = MultimodalModule(
        tiny_config(**STACKED).model_dump(mode="json"),
        vocab_size=30,
        num_labels=2,
        pad_id=0,
        bos_id=1,
        eos_id=2,
    )
    labels = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0]])
    stacked_logits = torch.tensor([[2.0, -1.0], [-2.0, 1.0], [1.0, 0.5], [-1.0, -0.5]])  # ranks perfectly
    noise = torch.tensor(
        [[-9.0, 9.0], [9.0, -9.0], [-9.0, -9.0], [9.0, 9.0]]
    )  # a deep head that ranks backwards
    for weight, metric in zip(DEEP_WEIGHTS, module.val_auroc_by_deep_weight):
        metric.update(torch.sigmoid(stacked_logits + weight * noise), labels)
    module.log = lambda *args, **kwargs: None
    auroc, chosen = module._choose_deep_weight(torch.tensor(0.0))
    assert float(auroc) == 1.0 and DEEP_WEIGHTS[chosen] == 0.0
    assert float(module.model.deep_weight) == 0.0


def test_report_thresholds_come_from_the_chosen_deep_weights_probabilities():
    from medmodal.training.finding_thresholds import BestF1Thresholds
    from medmodal.training.module import DEEP_WEIGHTS, MultimodalModule

    config = tiny_config(**{**STACKED, "model.heads.generation": True})
    module = MultimodalModule(
        config.model_dump(mode="json"), vocab_size=30, num_labels=2, pad_id=0, bos_id=1, eos_id=2
    )
    assert module.model.condition_on_findings and module.val_thresholds_by_deep_weight is not None
    labels = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0], [0, 0], [1, 0]])
    stacked_logits = torch.tensor(
        [[2.0, -1.0], [-2.0, 1.0], [1.0, 0.5], [-1.0, -0.5], [-3.0, -2.0], [0.5, -1.5]]
    )
    noise = torch.tensor([[-9.0, 9.0], [9.0, -9.0], [-9.0, -9.0], [9.0, 9.0], [5.0, 5.0], [-5.0, 5.0]])
    for i, weight in enumerate(DEEP_WEIGHTS):
        probs = torch.sigmoid(stacked_logits + weight * noise)
        module.val_auroc_by_deep_weight[i].update(probs, labels)
        module.val_thresholds_by_deep_weight[i].update(probs, labels.float())
    module.val_auroc.update(torch.sigmoid(stacked_logits + noise), labels)  # (the run's own, at weight 1)
    expected = BestF1Thresholds()
    expected.update(torch.sigmoid(stacked_logits), labels.float())
    module.log = lambda *args, **kwargs: None
    module.on_validation_epoch_end()
    assert float(module.model.deep_weight) == 0.0
    torch.testing.assert_close(module.model.finding_thresholds, expected.compute().reshape(-1))


def test_a_stacked_run_chooses_its_checkpoint_by_validation_loss_unless_told_otherwise():
    from medmodal.training.wide_stacking import checkpoint_monitor

    assert checkpoint_monitor(tiny_config()) == ("val/auroc_macro", "max")
    assert checkpoint_monitor(tiny_config(**STACKED)) == ("val/loss", "min")
    assert checkpoint_monitor(tiny_config(**STACKED, **{"train.monitor": "val/f1"})) == ("val/f1", "max")
