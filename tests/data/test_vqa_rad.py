"""The VQA-RAD importer on a small file in the release's format."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from medmodal.data.importers.vqa_rad import VQARadFormatError, import_vqa_rad, read_vqa_rad_json
from medmodal.data.qa import read_qa


def _record(qid, image, question, answer, answer_type, question_type="PRES", phrase_type="freeform"):
    return {
        "qid": qid,
        "phrase_type": phrase_type,
        "qid_linked_id": f"link{qid}",
        "image_case_url": "https://medpix.nlm.nih.gov/case?id=x",
        "image_name": image,
        "image_organ": "CHEST",
        "evaluation": "not evaluated",
        "question": question,
        "question_rephrase": "NULL",
        "question_relation": "NULL",
        "question_frame": "NULL",
        "question_type": question_type,
        "answer": answer,
        "answer_type": answer_type,
    }


RECORDS = [
    _record(0, "synpic100.jpg", "Is there a pneumothorax?", "Yes", "CLOSED"),
    _record(1, "synpic100.jpg", "Which lung is affected?", "Right", "CLOSED ", "POS"),
    _record(2, "synpic200.jpg", "How many ribs are fractured?", 2, "OPEN", "COUNT", "test_freeform"),
    _record(3, "synpic200.jpg", "What is abnormal?", "Left  pleural effusion.", "OPEN", "ABN", "test_para"),
    _record(4, "synpic300.jpg", "Is this a CT?", "no", "CLOSED", "MODALITY"),
    _record(5, "synpic404.jpg", "Is the heart enlarged?", "yes", "CLOSED"),  # image not in the folder
]


@pytest.fixture()
def release(tmp_path):
    images = tmp_path / "VQA_RAD Image Folder"
    images.mkdir()
    for name in ("synpic100.jpg", "synpic200.jpg", "synpic300.jpg"):
        Image.fromarray(np.full((32, 40), 100, np.uint8)).save(images / name)
    source = tmp_path / "VQA_RAD Dataset Public.json"
    source.write_text(json.dumps(RECORDS))
    return source, images


def test_import_writes_manifest_and_qa(release, tmp_path):
    source, images = release
    result = import_vqa_rad(source, tmp_path / "out", images, val_fraction=0.0)
    assert result.missing_images == ["synpic404.jpg"]
    assert result.images == 3 and result.questions == 5
    assert sorted(s.id for s in result.manifest.studies) == ["synpic100", "synpic200", "synpic300"]
    assert all(s.image is not None and s.image.is_file() for s in result.manifest.studies)
    assert result.manifest.studies[0].extra["organ"] == "CHEST"
    qa = {r.qid: r for r in read_qa(tmp_path / "out")}
    assert set(qa) == {"0", "1", "2", "3", "4"}
    assert (qa["0"].study_id, qa["0"].answer, qa["0"].answer_type, qa["0"].split) == (
        "synpic100",
        "yes",
        "closed",
        "train",
    )
    assert (qa["1"].answer, qa["1"].answer_type, qa["1"].question_type) == ("right", "closed", "POS")
    assert (qa["2"].answer, qa["2"].answer_type, qa["2"].split) == ("2", "open", "test")
    assert (qa["3"].answer, qa["3"].split) == ("left pleural effusion", "test")
    assert result.split_counts == {"test": 2, "train": 3}


def test_validation_split_takes_whole_images(release, tmp_path):
    source, images = release
    result = import_vqa_rad(source, tmp_path / "out", images, val_fraction=0.4, seed=0)
    qa = read_qa(tmp_path / "out")
    val_images = {r.study_id for r in qa if r.split == "val"}
    assert len(val_images) == 1  # round(0.4 * 3) images
    assert not any(r.split == "train" and r.study_id in val_images for r in qa)
    assert all(r.split == "test" for r in qa if r.qid in ("2", "3"))
    assert sum(result.split_counts.values()) == 5


def test_malformed_records_are_named(tmp_path):
    bad = [dict(RECORDS[0]), dict(RECORDS[1]), dict(RECORDS[2]), "not an object"]
    del bad[0]["question"]
    bad[1]["answer_type"] = "MAYBE"
    bad[2]["image_name"] = ["a.jpg"]
    source = tmp_path / "bad.json"
    source.write_text(json.dumps(bad))
    with pytest.raises(VQARadFormatError) as caught:
        read_vqa_rad_json(source)
    found = {(p.row, p.field) for p in caught.value.problems}
    assert found == {(1, "question"), (2, "answer_type"), (3, "image_name"), (4, "<record>")}
    message = str(caught.value)
    assert "bad.json: row 1 (id 0), field 'question': missing or empty" in message
    assert "'MAYBE' is not CLOSED or OPEN" in message


@pytest.mark.parametrize(
    ("text", "message"), [('{"qid": 1}', "expected a JSON list"), ("[{", "not valid JSON")]
)
def test_not_a_list_and_bad_json(tmp_path, text, message):
    (tmp_path / "a.json").write_text(text)
    with pytest.raises(VQARadFormatError, match=message):
        read_vqa_rad_json(tmp_path / "a.json")


def test_command_line(release, tmp_path, capsys):
    from medmodal.cli.main import main

    source, images = release
    assert main(["-q", "import-vqa-rad", str(source), str(tmp_path / "out"), "--images", str(images)]) == 0
    assert json.loads(capsys.readouterr().out)["questions"] == 5
    (tmp_path / "bad.json").write_text(json.dumps([{"qid": 1, "image_name": "x.jpg"}]))
    assert (
        main(
            [
                "-q",
                "import-vqa-rad",
                str(tmp_path / "bad.json"),
                str(tmp_path / "o2"),
                "--images",
                str(images),
            ]
        )
        == 2
    )
    assert "field 'question': missing or empty" in capsys.readouterr().err
