"""label_reports_file: a manifest / CSV in, one row of labels per report out (the CLI's function)."""

import json

import pandas as pd
import pytest

from medmodal.labeling import label_reports_file


@pytest.fixture()
def manifest(tmp_path):
    path = tmp_path / "manifest.csv"
    pd.DataFrame(
        {
            "id": ["s1", "s2", "s3"],
            "findings": ["No pneumothorax.", "", "Possible pneumonia."],
            "impression": ["Small left effusion.", "Lungs are clear.", ""],
        }
    ).to_csv(path, index=False)
    return path


def test_status_style(labeler, manifest, tmp_path):
    out = tmp_path / "out" / "labels.csv"
    table = label_reports_file(manifest, out, labeler=labeler)
    assert out.exists()
    written = pd.read_csv(out, keep_default_na=False)
    assert list(written.columns) == ["id", *labeler.label_names]
    assert written["id"].tolist() == ["s1", "s2", "s3"]
    assert written["effusion"].tolist() == ["positive", "absent", "absent"]
    assert written["pneumothorax"].tolist() == ["negative", "absent", "absent"]
    assert written["pneumonia"].tolist() == ["absent", "absent", "uncertain"]
    assert written["normal"].tolist() == ["negative", "positive", "negative"]
    assert table.shape == (3, 1 + len(labeler.label_names))


def test_chexpert_style_fields_and_jsonl(labeler, tmp_path):
    path = tmp_path / "reports.jsonl"
    rows = [
        {"findings": "No pneumothorax.", "impression": "Small left effusion."},
        {"findings": "Possible pneumonia.", "impression": None},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "labels.csv"
    table = label_reports_file(path, out, fields="findings", labeler=labeler, style="chexpert")
    assert table["row"].tolist() == [1, 2]  # no id column: 1-based row numbers
    assert table.loc[0, "pneumothorax"] == 0.0
    assert table.loc[1, "pneumonia"] == -1.0
    assert pd.isna(table.loc[0, "effusion"])  # impression not read: absent -> empty


def test_missing_column_is_named(labeler, manifest, tmp_path):
    with pytest.raises(ValueError, match=r"no column\(s\) \['report'\]"):
        label_reports_file(manifest, tmp_path / "x.csv", fields=["report"], labeler=labeler)
    with pytest.raises(FileNotFoundError):
        label_reports_file(tmp_path / "none.csv", tmp_path / "x.csv", labeler=labeler)


def test_dataset_folder_report_column_and_default_fields(labeler, tmp_path):
    # A dataset folder with manifest.csv; "Report" (any case) holds the whole text for row 2,
    # whose INDICATION must not be read with the default fields (findings + impression).
    folder = tmp_path / "dataset"
    folder.mkdir()
    pd.DataFrame(
        {
            "ID": ["a", "b"],
            "Findings": ["Cardiomegaly.", ""],
            "Report": [
                "",
                "INDICATION: Evaluate for pneumonia.\nFINDINGS: No pneumonia.\nIMPRESSION: Normal.",
            ],
        }
    ).to_csv(folder / "manifest.csv", index=False)
    table = label_reports_file(folder, tmp_path / "labels.csv", fields=None, labeler=labeler)
    assert table["id"].tolist() == ["a", "b"]
    assert table["cardiomegaly"].tolist() == ["positive", "absent"]
    assert table["pneumonia"].tolist() == ["absent", "negative"]
