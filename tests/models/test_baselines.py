"""The scikit-learn baselines: each family's behaviour, settings errors, and the pickle-free run folder."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from medmodal.config import Config, ConfigError, apply_overrides
from medmodal.data.types import Box, Study
from medmodal.models.baselines.base import BaselineData, OneVsRestLogistic
from medmodal.models.registry import available, create

LABELS = ["effusion", "nodule", "never_seen"]


def _study(i: int, text: str, labels: list[str], split: str = "train", findings: str = "") -> Study:
    return Study(
        id=f"s{i}", row=i + 2, sections={"indication": text, "findings": findings}, labels=labels, split=split
    )


def _text_split(n: int, offset: int, split: str) -> BaselineData:
    """Texts that determine the labels: 'fluid' -> effusion, 'spot' -> nodule; 'never_seen' never occurs."""
    rng = np.random.default_rng(offset)
    studies = []
    for i in range(n):
        eff, nod = bool(rng.random() < 0.4), bool(rng.random() < 0.3)
        words = ["cough"] + (["fluid"] if eff else ["dry"]) + (["spot"] if nod else ["clear"])
        labels = [name for name, on in (("effusion", eff), ("nodule", nod)) if on]
        studies.append(_study(offset + i, " ".join(words), labels, split, findings=f"report {offset + i}"))
    return BaselineData(studies, LABELS)


def test_every_family_is_registered():
    assert set(available("baseline")) >= {
        "tfidf_logreg",
        "pixel_logreg",
        "linear_probe",
        "late_fusion",
        "mean_box",
        "nearest_report",
        "template_report",
    }


def test_unknown_setting_names_the_field():
    with pytest.raises(ConfigError, match="tfidf_logreg.*ngram_mx"):
        create("baseline", "tfidf_logreg", ngram_mx=3)


# ---------------------------------------------------------------- logistic regression
def test_logistic_survives_a_label_with_one_class_and_predicts_its_prior():
    x = np.random.default_rng(0).normal(size=(40, 3))
    y = np.zeros((40, 2), dtype=int)
    y[:, 0] = x[:, 0] > 0  # learnable; label 1 has no positive in train
    model = OneVsRestLogistic(c_grid=[0.1, 1.0])
    info = model.fit(x, y, x[:10], y[:10])
    probs = model.predict_proba(x)
    assert info["constant_labels"] == 1
    assert np.allclose(probs[:, 1], 0.5 / 41)
    assert ((probs[:, 0] > 0.5) == y[:, 0].astype(bool)).mean() > 0.9


def test_logistic_chooses_c_on_validation_auroc():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 20))
    y = (x[:, :1] + 0.5 * rng.normal(size=(200, 1)) > 0).astype(int)
    model = OneVsRestLogistic(c_grid=[1e-4, 1.0])
    info = model.fit(x[:150], y[:150], x[150:], y[150:])
    scores = info["val_auroc_macro_by_C"]
    best = max(scores, key=lambda k: scores[k])
    assert info["C"] == float(best)
    assert scores["1.0"] > scores["0.0001"]  # heavy regularisation loses here, and is not chosen


# --------------------------------------------------------------------------- text
def test_tfidf_logreg_learns_the_words_and_gives_the_prior_without_text():
    train, val, test = _text_split(80, 0, "train"), _text_split(30, 100, "val"), _text_split(40, 200, "test")
    model = create("baseline", "tfidf_logreg")
    model.fit(train, val)
    probs = model.predict(test)
    y = test.targets()
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y[:, 0], probs[:, 0]) > 0.99 and roc_auc_score(y[:, 1], probs[:, 1]) > 0.99
    hidden = model.predict(test, hide={"text": np.ones(len(test), dtype=bool)})
    prior = (train.targets().sum(axis=0) + 0.5) / (len(train) + 1)
    assert np.allclose(hidden, prior)


def test_nearest_report_by_text_copies_the_matching_training_report():
    train, val = _text_split(30, 0, "train"), _text_split(5, 100, "val")
    model = create("baseline", "nearest_report")
    model.fit(train, val)
    query = BaselineData([_study(999, train.studies[7].sections["indication"], [], "test")], LABELS)
    got = model.predict(query)[0]
    same_text = [
        s.sections["findings"]
        for s in train.studies
        if s.sections["indication"] == train.studies[7].sections["indication"]
    ]
    assert got == same_text[0]  # ties go to the earliest training study
    no_text = BaselineData([_study(998, "", [], "test")], LABELS)
    assert model.predict(no_text)[0] == model.reports[model.default]


# -------------------------------------------------------------------- boxes, reports
def test_mean_box_is_the_training_mean_per_finding(tmp_path):
    from PIL import Image

    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((100, 200), dtype=np.uint8)).save(path)
    true_boxes = [
        ("effusion", (0, 0, 100, 50)),
        ("effusion", (100, 50, 200, 100)),
        ("nodule", (20, 10, 40, 30)),
    ]
    studies = [
        Study(id=f"s{i}", row=i + 2, image=path, labels=[label], boxes=[Box(label, box)], split="train")
        for i, (label, box) in enumerate(true_boxes)
    ]
    model = create("baseline", "mean_box")
    model.fit(BaselineData(studies, LABELS), BaselineData([], LABELS))
    boxes = model.predict(BaselineData(studies[:2], LABELS))
    assert boxes.shape == (2, 3, 4)
    assert np.allclose(boxes[0, 0], [0.25, 0.25, 0.75, 0.75])
    assert np.allclose(boxes[1, 1], [0.1, 0.1, 0.2, 0.3])
    all_mean = np.mean([[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1], [0.1, 0.1, 0.2, 0.3]], axis=0)
    assert np.allclose(boxes[0, 2], all_mean)  # a finding without training boxes: the mean of all


def test_template_sentences_are_read_as_positive_findings_by_the_ce_labeler():
    from medmodal.labeling import default_labeler, to_binary
    from medmodal.models.baselines.template_report import NORMAL_REPORT, SENTENCES

    labeler = default_labeler()
    names = [n for n in SENTENCES if n in labeler.label_names]
    assert set(names) == set(labeler.findings)  # the table covers the labeler's findings
    found = to_binary(labeler.label_many([SENTENCES[n] for n in names]), names, "negative")
    assert (np.diag(found) == 1).all(), [n for n, ok in zip(names, np.diag(found)) if not ok]
    assert found.sum() == len(names)  # and nothing else
    assert to_binary(labeler.label_many([NORMAL_REPORT]), names, "positive").sum() == 0


def test_template_report_writes_the_findings_above_the_validation_thresholds():
    val = _text_split(30, 100, "val")
    model = create("baseline", "template_report")
    model.fit(BaselineData([], LABELS), val, val_probs=val.targets().astype(float) * 0.8 + 0.1)
    reports = model.predict(
        BaselineData(val.studies[:3], LABELS),
        probs=np.array([[0.9, 0.1, 0.1], [0.9, 0.9, 0.1], [0.1, 0.1, 0.1]]),
    )
    assert reports[0] == "There is a pleural effusion."
    assert reports[1] == "There is a pleural effusion. There is a pulmonary nodule."
    assert reports[2] == model.settings.normal


# ----------------------------------------------------------- runner and run folder
@pytest.fixture(scope="module")
def fused_run(tiny_data, tmp_path_factory):
    from conftest import tiny_config

    from medmodal.training.baselines import fit_baseline

    config = apply_overrides(
        tiny_config(),
        {
            "baseline.classifier": "late_fusion",
            "baseline.boxes": "mean_box",
            "baseline.report": "template_report",
            "baseline.kwargs": {"pixel_logreg": {"size": 16}, "tfidf_logreg": {"c_grid": [0.1, 1.0]}},
        },
    )
    out = tmp_path_factory.mktemp("baseline") / "run"
    return fit_baseline(tiny_data, config, out)


def test_fit_writes_a_pickle_free_run_that_reloads_to_the_same_predictions(fused_run, tiny_data):
    from medmodal.data.pipeline import read_dataset
    from medmodal.evaluation.evaluate_baseline import predict_baseline_split
    from medmodal.training.baselines import load_baseline

    root = fused_run.run.root
    assert {
        "config.yaml",
        "labels.json",
        "data_summary.json",
        "baseline.json",
        "baseline.npz",
        "training_done.json",
    } <= {p.name for p in root.iterdir()}
    assert fused_run.info["classifier"]["text"]["C"] in (0.1, 1.0)
    with np.load(root / "baseline.npz", allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)
    fitted = load_baseline(root)
    studies = read_dataset(tiny_data, fitted.config, labels=fitted.labels).split("test")
    preds = predict_baseline_split(fitted, studies)
    assert (
        preds.probs.shape == (len(studies), len(fitted.labels))
        and ((0 <= preds.probs) & (preds.probs <= 1)).all()
    )
    assert preds.boxes.shape == (len(studies), len(fitted.labels), 4)
    assert len(preds.generated) == len(studies)
    # late fusion = the mean of its parts where both modalities are present
    assert np.allclose(preds.probs, (preds.image_logits_probs + preds.text_logits_probs) / 2)
    no_image = predict_baseline_split(fitted, studies, hide={"image": np.ones(len(studies), dtype=bool)})
    assert np.allclose(no_image.probs, preds.text_logits_probs)


@pytest.mark.slow  # METEOR (Java) and the medspaCy labeler score the template reports
def test_evaluate_scores_a_baseline_run_like_a_deep_run(fused_run, tiny_data):
    from medmodal.evaluation.evaluate import evaluate_run

    metrics = evaluate_run(fused_run.run.root, tiny_data, split="test")
    assert {"classification", "localization", "generation"} <= set(metrics)
    assert metrics["classification"]["auroc_macro"] is not None
    assert "text_head_auroc_macro" in metrics["classification"]
    rows = [json.loads(line) for line in fused_run.run.predictions("test").read_text().splitlines()]
    assert len(rows) == metrics["n_studies"]
    assert {"id", "probs", "boxes", "generated", "reference", "labels"} <= set(rows[0])


def test_a_tampered_state_is_refused(fused_run, tmp_path):
    import shutil

    from medmodal.models.baselines.storage import BaselineStateError, load_arrays
    from medmodal.training.baselines import load_baseline

    copy = tmp_path / "run"
    shutil.copytree(fused_run.run.root, copy)
    np.savez(copy / "baseline.npz", **{"classifier/prior": np.array([{"x": 1}], dtype=object)})
    with pytest.raises(BaselineStateError, match="not a plain numeric type"):
        load_arrays(copy / "baseline.npz")
    # a member whose header claims a huge array is refused before its data is read
    header = (
        b"\x93NUMPY\x01\x00"
        + b"v\x00"
        + b"{'descr': '<f8', 'fortran_order': False, 'shape': (100000, 100000), }".ljust(118)
        + b"\n"
    )
    with zipfile.ZipFile(copy / "baseline.npz", "w") as z:
        z.writestr("classifier/prior.npy", header)
    with pytest.raises(BaselineStateError, match="bytes, more than"):
        load_baseline(copy)
    (copy / "baseline.json").write_text('{"format": 99}')
    with pytest.raises(BaselineStateError, match="format"):
        load_baseline(copy)


def test_configuration_errors_name_the_field():
    from medmodal.training.baselines import build_baselines

    def config(**overrides):
        return apply_overrides(Config(), overrides)

    with pytest.raises(ConfigError, match="baseline.classifier: unknown baseline 'tfidf'"):
        build_baselines(config(**{"baseline.classifier": "tfidf"}))
    with pytest.raises(ConfigError, match="baseline.boxes: 'tfidf_logreg' is a classification baseline"):
        build_baselines(config(**{"baseline.boxes": "tfidf_logreg"}))
    with pytest.raises(ConfigError, match="template_report writes the findings of baseline.classifier"):
        build_baselines(config(**{"baseline.report": "template_report"}))
    with pytest.raises(ConfigError, match="name at least one"):
        build_baselines(Config())


@pytest.mark.parametrize(
    "name, settings",
    [
        ("pixel_logreg", {"size": 8}),
        ("linear_probe", {"c_grid": [1.0], "size": 32}),
        ("nearest_report", {"by": "image", "size": 8}),
        ("nearest_report", {"by": "text"}),
    ],
)
def test_state_round_trip_gives_the_same_predictions(tiny_data, name, settings):
    from conftest import tiny_config

    from medmodal.data.pipeline import read_dataset
    from medmodal.models.baselines.storage import load_arrays, save_arrays

    config = tiny_config()
    manifest = read_dataset(tiny_data, config)
    train, val, test = (
        BaselineData.from_config(manifest.split(s), manifest.label_names, config)
        for s in ("train", "val", "test")
    )
    model = create("baseline", name, seed=3, **settings)
    model.fit(train, val)
    meta, arrays = model.state()
    save_arrays(tiny_data.parent / f"{name}.npz", arrays)
    restored = create("baseline", name, seed=99, **settings)  # another seed: everything comes from the state
    restored.load_state(
        json.loads(json.dumps(meta)), load_arrays(tiny_data.parent / f"{name}.npz"), len(train.labels)
    )
    before, after = model.predict(test), restored.predict(test)
    if name == "nearest_report":
        assert before == after and all(r in model.reports for r in after)
    else:
        assert np.allclose(before, after)
        hidden = restored.predict(test, hide={"image": np.ones(len(test), dtype=bool)})
        assert np.allclose(hidden, hidden[0])  # no image: the training prevalence for every study
