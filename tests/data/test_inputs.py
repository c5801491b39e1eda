"""The study of one prediction's inputs."""

from __future__ import annotations

import numpy as np

from medmodal.data.inputs import is_image_path, study_from_inputs


def test_a_path_is_kept_and_an_image_in_memory_is_not(tmp_path):
    assert (
        is_image_path("x.png") and is_image_path(tmp_path / "x.png") and not is_image_path(np.zeros((2, 2)))
    )
    assert study_from_inputs(tmp_path / "x.png", None, ["findings"]).image == (tmp_path / "x.png").resolve()
    assert study_from_inputs(np.zeros((2, 2)), None, ["findings"]).image is None


def test_text_becomes_sections():
    fields = ["indication", "findings"]
    assert study_from_inputs(None, "Cough.", fields).sections == {"indication": "Cough."}
    assert study_from_inputs(None, {"findings": "Clear.", "impression": ""}, fields).sections == {
        "findings": "Clear."
    }
    headed = study_from_inputs(None, "INDICATION: Cough.\nFINDINGS: Clear lungs.", fields).sections
    assert headed["indication"] == "Cough." and headed["findings"] == "Clear lungs."
    assert study_from_inputs(None, None, fields).sections == {}
