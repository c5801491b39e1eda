"""ONNX export: parity with PyTorch, and the onnxruntime path of the service."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from medmodal.serving.app import create_app
from medmodal.serving.onnx_export import OnnxSession, export_onnx, onnx_trained_run
from medmodal.serving.predictor import Predictor

from .conftest import local_client


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    return export_onnx(tiny_run, out)


def test_export_writes_a_valid_graph_with_parity(exported):
    onnx.checker.check_model(onnx.load(str(exported.path)))
    assert exported.inputs == ["image", "has_image", "text_ids", "text_mask", "has_text"]
    assert {"logits", "probabilities", "boxes", "word_attention"} <= set(exported.outputs)
    assert exported.n_parity_studies >= 2
    assert max(exported.max_abs_diff.values()) < 1e-4
    meta = json.loads(exported.path.with_suffix(".json").read_text())
    assert meta["parity_max_abs_diff"] == exported.max_abs_diff


def test_dynamic_batch_size(exported, tiny_run):
    session = OnnxSession(exported.path)
    for batch in (1, 3):
        feed = {
            "image": np.zeros((batch, 1, 64, 64), np.float32),
            "has_image": np.ones(batch, bool),
            "text_ids": np.full((batch, 48), 5, np.int64),
            "text_mask": np.ones((batch, 48), bool),
            "has_text": np.ones(batch, bool),
        }
        out = session.run(feed)
        assert out["probabilities"].shape == (batch, 6)
        assert out["boxes"].shape == (batch, 6, 4)


def test_onnx_predictor_matches_torch(exported, predictor, tiny_data):
    from medmodal.data.manifest import read_manifest

    study = read_manifest(tiny_data / "manifest.csv").studies[0]
    onnx_predictor = Predictor(onnx_trained_run(predictor.trained, exported.path))
    text = study.sections["indication"]
    want = predictor.predict(study.image, text)
    got = onnx_predictor.predict(study.image, text)
    assert got["labels"] == pytest.approx(want["labels"], abs=1e-5)
    assert got["predicted"] == want["predicted"]
    assert got["report"] == want["report"]  # generation stays in PyTorch, same context
    assert [b["label"] for b in got.get("boxes", [])] == [b["label"] for b in want.get("boxes", [])]


def test_service_with_onnx_runtime(exported, tiny_run):
    with local_client(create_app(tiny_run, runtime="onnx", onnx_path=exported.path)) as client:
        assert client.get("/v1/health").json()["runtime"] == "onnx"
        response = client.post("/v1/predict", data={"text": "fever and cough"})
        assert response.status_code == 200 and set(response.json()["labels"]) == set(
            exported_labels(tiny_run)
        )


def exported_labels(run) -> list[str]:
    return json.loads((run / "labels.json").read_text())["labels"]


def test_export_cli(tiny_run, tmp_path, capsys):
    from medmodal.cli.main import main

    assert main(["export", str(tiny_run), "--onnx", str(tmp_path / "m.onnx")]) == 0
    assert "parity vs PyTorch" in capsys.readouterr().out
    assert (tmp_path / "m.onnx").stat().st_size > 10_000


@pytest.mark.slow
def test_cached_export_follows_the_calibration(tiny_run, tiny_data, tmp_path):
    """serve --runtime onnx re-exports when the run was calibrated (or un-calibrated) since."""
    import shutil

    from medmodal.experiments.calibrate import calibrate_run
    from medmodal.serving.app import load_predictor

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    plain = load_predictor(run, runtime="onnx")
    assert json.loads((run / "export" / "model.json").read_text())["calibrated"] is False
    calibrate_run(run, tiny_data)
    calibrated = load_predictor(run, runtime="onnx")
    assert json.loads((run / "export" / "model.json").read_text())["calibrated"] is True
    study_text = "fever and cough"
    want = load_predictor(run, runtime="torch").predict(text=study_text)["labels"]
    assert calibrated.predict(text=study_text)["labels"] == pytest.approx(want, abs=1e-5)
    assert plain.predict(text=study_text)["labels"] != pytest.approx(want, abs=1e-5)


def test_onnx_with_external_data_is_refused(exported, tiny_run, tmp_path):
    """A cached export in someone else's run folder must not make onnxruntime open other files."""
    import onnx

    from medmodal.serving.app import load_predictor
    from medmodal.serving.security import check_onnx_file

    check_onnx_file(exported.path)  # medmodal's own export passes
    model = onnx.load(str(exported.path))
    victim = model.graph.initializer[0]
    victim.ClearField("raw_data")
    victim.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", "../../../../etc/hostname"), ("offset", "0"), ("length", "8")):
        entry = victim.external_data.add()
        entry.key, entry.value = key, value
    hostile = tmp_path / "model.onnx"
    hostile.write_bytes(model.SerializeToString())
    with pytest.raises(ValueError, match="external data"):
        check_onnx_file(hostile)
    with pytest.raises(ValueError, match=str(hostile)):
        load_predictor(tiny_run, runtime="onnx", onnx_path=hostile)
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07not a model")
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        check_onnx_file(tmp_path / "junk.onnx")
