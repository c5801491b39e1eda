"""The Python API (medmodal/api.py, medmodal/__init__.py) and the example of docs/python-api.md."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

import medmodal
from medmodal.config import Config, ConfigError
from medmodal.data.manifest import read_manifest
from medmodal.models import registry

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- import and names
def test_import_medmodal_loads_neither_torch_nor_lightning():
    code = "import sys, medmodal; print(sorted(m for m in ('torch', 'lightning', 'medmodal.api') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_lazy_names_resolve_and_unknown_ones_fail():
    from medmodal import api

    assert medmodal.create_model is api.create_model and medmodal.load is api.load
    assert {"create_model", "list_models", "train", "load", "Predictor"} <= set(dir(medmodal))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = medmodal.nope


# ----------------------------------------------------------------- list_models / config
def test_list_models_presets_parts_and_filter():
    presets = medmodal.list_models()
    assert {"default", "tiny", "image_only"} <= set(presets) and presets == sorted(presets)
    assert medmodal.list_models(kind="fusion") == registry.available("fusion")
    assert medmodal.list_models("*net*", kind="image_encoder") == [
        n for n in registry.available("image_encoder") if "net" in n
    ]
    assert medmodal.list_models("ti*") == ["tiny"]
    with pytest.raises(ValueError, match="kind"):
        medmodal.list_models(kind="heads")


def test_every_preset_validates():
    for name in medmodal.list_models():
        assert isinstance(medmodal.get_config(name), Config)
    assert medmodal.get_config("tiny").model.embed_dim == 32
    assert medmodal.get_config("image_only").model.modalities == "image"


def test_the_readme_trains_the_demos_recipe_by_its_preset_name():
    """README's quick-start trains the demo's recipe with --preset; the name must stay the demo's."""
    import re
    from pathlib import Path

    from medmodal.cli.demo import DEEP_RECIPE

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    presets = re.findall(r"^\.venv/bin/medmodal train .*--preset (\w+)", readme, flags=re.MULTILINE)
    assert presets and set(presets) == {DEEP_RECIPE}


def test_get_config_from_config_dict_yaml_and_overrides(tmp_path):
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text("model:\n  embed_dim: 48\n")
    assert medmodal.get_config(yaml_path).model.embed_dim == 48
    assert medmodal.get_config(str(yaml_path)).model.embed_dim == 48
    assert medmodal.get_config({"model": {"embed_dim": 40}}).model.embed_dim == 40
    given = Config()
    resolved = medmodal.get_config(given, {"train.epochs": 3})
    assert resolved.train.epochs == 3 and given.train.epochs != 3


@pytest.mark.parametrize(
    ("source", "overrides", "message"),
    [
        ("tinyy", None, "neither a model preset"),
        ({"model": {"embed_dim": 2}}, None, "model.embed_dim"),
        ("tiny", {"model.embed_dim": -1}, "model.embed_dim"),
        ("tiny", {"model.nope": 1}, "nope"),
        ("missing.yaml", None, "not found"),
    ],
)
def test_bad_configs_name_the_field(source, overrides, message):
    with pytest.raises(ConfigError, match=message):
        medmodal.get_config(source, overrides)


# ----------------------------------------------------------------------- create_model
def test_create_model_predicts_the_named_labels():
    model = medmodal.create_model(
        "tiny", labels=["effusion", "nodule", "cardiomegaly"], texts=["small effusion"] * 2
    )
    assert model.label_names == ["effusion", "nodule", "cardiomegaly"]
    assert model.tokenizer.token_to_id("effusion") is not None
    batch = {
        "image": torch.zeros(2, 1, 64, 64), "has_image": torch.tensor([True, False]),
        "text_ids": torch.zeros(2, 5, dtype=torch.long), "text_mask": torch.ones(2, 5, dtype=torch.bool),
        "has_text": torch.tensor([True, True]),
    }  # fmt: skip
    assert model.eval()(batch).logits.shape == (2, 3)


def test_create_model_follows_the_config():
    model = medmodal.create_model("text_only", labels=["a"], overrides={"model.embed_dim": 16})
    assert model.image_encoder is None and model.text_encoder.out_dim == 16


@pytest.mark.parametrize("labels", [[], ["a", "a"], "effusion", ["ok", ""]])
def test_create_model_refuses_bad_labels(labels):
    with pytest.raises(ValueError, match="labels"):
        medmodal.create_model("tiny", labels=labels)


# ----------------------------------------------------------------------- studies in memory
def _study_key(s):
    return (s.id, s.image, s.labels, s.sections, s.split, s.site, s.boxes)


def _same_studies(a, b):
    assert [_study_key(s) for s in a] == [_study_key(s) for s in b]


def test_studies_and_dataframe_round_trip_through_the_manifest(tiny_data, tmp_path):
    import pandas as pd

    from medmodal.api import write_studies_manifest

    original = read_manifest(tiny_data / "manifest.csv").studies
    from_studies = write_studies_manifest(original, tmp_path / "a" / "studies.jsonl")
    _same_studies(read_manifest(from_studies, allow_outside_paths=True).studies, original)

    frame = pd.read_csv(tiny_data / "manifest.csv")
    frame["image"] = [str(tiny_data / p) if isinstance(p, str) else p for p in frame["image"]]
    from_frame = write_studies_manifest(frame, tmp_path / "b" / "studies.jsonl")
    _same_studies(read_manifest(from_frame, allow_outside_paths=True).studies, original)


# ----------------------------------------------------------------------- train / load
class EpochCounter(L.Callback):
    def __init__(self):
        self.epochs = 0

    def on_train_epoch_end(self, trainer, module):
        self.epochs += 1


@pytest.fixture(scope="module")
def api_run(tiny_data, tmp_path_factory):
    """The ``tiny`` preset trained one epoch from Study records, with a callback passed through."""
    studies = read_manifest(tiny_data / "manifest.csv").studies
    counter = EpochCounter()
    out = tmp_path_factory.mktemp("api") / "run"
    result = medmodal.train(studies, "tiny", out=out, callbacks=[counter])
    return out, result, counter


@pytest.fixture(scope="module")
def image(tiny_data):
    return np.asarray(Image.open(min((tiny_data / "images").glob("*.png"))))


def test_train_from_studies_runs_the_callbacks(api_run):
    out, result, counter = api_run
    assert counter.epochs == result.epochs_run == 1
    assert (out / "studies.jsonl").is_file() and (out / "checkpoints" / "best.ckpt").is_file()


def test_checkpoint_holds_labels_tokenizer_and_calibration(api_run):
    from medmodal.safeio import load_torch_file
    from medmodal.training.artifacts import ARTIFACTS_KEY

    out, _, _ = api_run
    state = load_torch_file(out / "checkpoints" / "best.ckpt", "checkpoint")  # weights_only=True
    stored = state[ARTIFACTS_KEY]
    assert stored["labels"] == json.loads((out / "labels.json").read_text())["labels"]
    assert json.loads(stored["tokenizer"]) == json.loads((out / "tokenizer.json").read_text())
    assert any(key.endswith("calibration.scale") for key in state["state_dict"])


def test_checkpoint_file_copied_alone_predicts_like_the_run(api_run, image, tmp_path):
    out, _, _ = api_run
    alone = tmp_path / "elsewhere" / "model.ckpt"
    alone.parent.mkdir()
    shutil.copy(out / "checkpoints" / "best.ckpt", alone)
    from_run, from_file = medmodal.load(out), medmodal.load(alone)
    assert from_file.labels == from_run.labels
    assert from_file.predict(image, "Cough.")["labels"] == from_run.predict(image, "Cough.")["labels"]


def _calibrated_copy(run: Path, dest: Path) -> Path:
    from medmodal.models.calibration import PlattScaling

    shutil.copytree(run, dest)
    labels = json.loads((dest / "labels.json").read_text())["labels"]
    n = len(labels)
    PlattScaling(labels=labels, scale=[0.5] * n, bias=[-1.0 + 0.1 * i for i in range(n)],
                 thresholds=[0.3] * n).save(dest / "calibration.json")  # fmt: skip
    return dest


def test_save_then_load_keeps_predictions_and_calibration(api_run, image, tmp_path):
    out, _, _ = api_run
    run = _calibrated_copy(out, tmp_path / "calibrated")
    calibrated, plain = medmodal.load(run), medmodal.load(out)
    assert calibrated.trained.calibrated
    before = calibrated.predict(image, "Cough.")
    assert before["labels"] != plain.predict(image, "Cough.")["labels"]
    state = calibrated.trained.model.state_dict()
    assert torch.equal(state["calibration.scale"], torch.full((len(calibrated.labels),), 0.5))

    saved = calibrated.save(tmp_path / "one-file" / "model.ckpt")
    shutil.rmtree(run)  # nothing of the run folder is needed any more
    again = medmodal.load(saved)
    after = again.predict(image, "Cough.")
    assert after["labels"] == before["labels"]
    assert after["threshold"] == before["threshold"] and after["calibrated"]


def test_checkpoint_without_artifacts_loads_from_its_run_folder_only(api_run, image, tmp_path):
    """A checkpoint written before labels, tokenizer and calibration were stored in it."""
    from medmodal.safeio import UnreadableFileError, load_torch_file
    from medmodal.training.artifacts import ARTIFACTS_KEY

    out, _, _ = api_run
    old_run = tmp_path / "old"
    shutil.copytree(out, old_run)
    best = old_run / "checkpoints" / "best.ckpt"
    state = load_torch_file(best, "checkpoint")
    del state[ARTIFACTS_KEY]
    state["state_dict"] = {k: v for k, v in state["state_dict"].items() if "calibration." not in k}
    torch.save(state, best)

    expected = medmodal.load(out).predict(image, "Cough.")["labels"]
    assert medmodal.load(old_run).predict(image, "Cough.")["labels"] == expected
    with pytest.raises(UnreadableFileError, match="run folder"):
        medmodal.load(best)


# ----------------------------------------------------------------------- the docs example
def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.DOTALL | re.MULTILINE)


def test_docs_example_runs(tmp_path, monkeypatch):
    blocks = python_blocks((REPO / "docs" / "python-api.md").read_text())
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "python_api_example"}
    for block in blocks:
        exec(compile(block, "docs/python-api.md", "exec"), namespace)  # noqa: S102
    assert namespace["result"].epochs_run == 1
    assert set(namespace["prediction"]["labels"]) == set(namespace["predictor"].labels)
