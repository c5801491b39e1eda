"""CheXpert importer: 400 real rows of chexpert_train.csv from the wheel, with tiny JPEGs at their paths."""

from __future__ import annotations

import pytest

from medmodal.data.importers.chexpert import OBSERVATIONS, import_chexpert
from medmodal.data.importers.common import label_name

from .real_tables import needs_wheel, problem_cells, read_member, write_image

ROWS = 400


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("chexpert")
    table = read_member("chexpert_train.csv.gz", nrows=ROWS)
    folder = root / "CheXpert-v1.0-small"
    folder.mkdir()
    table.to_csv(folder / "train.csv", index=False)
    for path in table["Path"]:
        write_image(root / path, size=16)
    return root, folder, table


def _expected(table, policy):
    """Study -> positive labels, counted from the raw cells independently of the importer."""
    expected = {}
    for _, rec in table.iterrows():
        parts = rec["Path"].split("/")
        key = f"{parts[2]}_{parts[3]}"
        values = {c: rec[c] for c in OBSERVATIONS if c != "No Finding"}
        positive = {"1.0"} | ({"-1.0"} if policy == "positive" else set())
        expected.setdefault(key, sorted(label_name(c) for c, v in values.items() if v in positive))
    return expected


@needs_wheel
@pytest.mark.parametrize("policy", ["negative", "positive"])
def test_real_rows_one_study_per_row_group(release, tmp_path, policy):
    _, folder, table = release
    result = import_chexpert(folder, tmp_path / policy, uncertain=policy)
    assert result.problems == [] and result.source_rows == ROWS
    expected = _expected(table, policy)
    studies = {s.id: s for s in result.manifest.studies}
    assert set(studies) == set(expected) and result.rows_written == len(expected)
    assert {k: s.labels for k, s in studies.items()} == expected
    assert all(s.image is not None for s in studies.values())
    assert result.manifest.summary()["splits_assigned"] == len(expected)  # train.csv: the toolkit splits
    uncertain_cells = sum((table[c] == "-1.0").sum() for c in OBSERVATIONS if c != "No Finding")
    assert uncertain_cells > 0 and any(s.extra["uncertain"] for s in studies.values())


@needs_wheel
def test_frontal_view_is_the_image(release, tmp_path):
    _, folder, table = release
    result = import_chexpert(folder, tmp_path / "out")
    multi = table[table["Path"].str.contains("view2")]
    assert len(multi) > 0
    for path in multi["Path"]:
        parts = path.split("/")
        study = next(s for s in result.manifest.studies if s.id == f"{parts[2]}_{parts[3]}")
        assert "frontal" in study.image.name or "frontal" not in study.extra["image_ids"]
        assert path in study.extra["image_ids"].split(";")


def test_valid_split_and_bad_values(tmp_path):
    folder = tmp_path / "CheXpert-v1.0-small"
    header = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(OBSERVATIONS)
    blank = "," * (len(OBSERVATIONS) - 1)
    rows = [
        "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg,Male,73,Frontal,AP,1.0"
        + blank[: -0 or None],
        "CheXpert-v1.0-small/valid/patient64542/study1/view1_frontal.jpg,Male,70,Frontal,PA,,2.0" + blank[1:],
        "CheXpert-v1.0-small/valid/../../../etc/view1_frontal.jpg,Male,70,Frontal,PA"
        + "," * len(OBSERVATIONS),
        "../../outside/patient1/study1/view1_frontal.jpg,Male,70,Frontal,PA" + "," * len(OBSERVATIONS),
    ]
    folder.mkdir()
    (folder / "valid.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    write_image(tmp_path / "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg")
    write_image(tmp_path / "outside/patient1/study1/view1_frontal.jpg")
    result = import_chexpert(folder, tmp_path / "out")
    assert problem_cells(result) == {(3, "Enlarged Cardiomediastinum"), (4, "Path")}
    assert "'2.0' is not 1, 0, -1 or blank" in str(result.problems[0])
    studies = {s.id: s for s in result.manifest.studies}
    assert list(studies) == ["patient64541_study1"]  # the '..' path found no image: left out
    assert studies["patient64541_study1"].split == "val"
    assert result.without_image == 1
