"""Vocabulary loading: the shipped one, custom YAML files, and errors that name the bad key."""

import pytest

from medmodal.labeling import (
    ReportLabeler,
    VocabularyError,
    available_vocabularies,
    expand_phrase,
    load_vocabulary,
    vocabulary_from_dict,
)


def test_expand_phrase():
    assert expand_phrase("pleural effusion(s)") == ["pleural effusion", "pleural effusions"]
    assert expand_phrase("Mass(es)") == ["mass", "masses"]
    assert expand_phrase("nodule(s) in lung(s)") == [
        "nodule in lung", "nodule in lungs", "nodules in lung", "nodules in lungs",
    ]  # fmt: skip
    assert expand_phrase("  enlarged   heart ") == ["enlarged heart"]


def test_shipped_vocabulary():
    assert "chest_xray" in available_vocabularies()
    vocab = load_vocabulary()
    assert vocab.name == "chest_xray"
    for finding in (
        "cardiomegaly",
        "effusion",
        "nodule",
        "mass",
        "pneumothorax",
        "consolidation",
        "edema",
        "atelectasis",
        "opacity",
        "pneumonia",
        "emphysema",
        "granuloma",
        "fracture",
        "hernia",
        "scoliosis",
    ):
        assert finding in vocab.findings
    assert "normal" not in vocab.finding_names
    assert load_vocabulary("chest_xray") == vocab
    assert load_vocabulary(vocab) is vocab


def write(tmp_path, text):
    path = tmp_path / "vocab.yaml"
    path.write_text(text)
    return path


def test_custom_vocabulary_file(tmp_path):
    path = write(
        tmp_path,
        """
name: tiny
findings:
  fracture:
    phrases: [fracture(s), broken bone]
    patterns:
      - [{LOWER: bone}, {LOWER: is}, {LOWER: broken}]
    negative_phrases: [bones are intact]
normal:
  phrases: [normal study]
""",
    )
    labeler = ReportLabeler(path)
    assert labeler.findings == ("fracture",)
    assert labeler.label("Two rib fractures.") == {"fracture": "positive", "normal": "negative"}
    assert labeler.label("The bone is broken.")["fracture"] == "positive"
    assert labeler.label("No broken bone.")["fracture"] == "negative"
    assert labeler.label("The bones are intact.")["fracture"] == "negative"
    assert labeler.label("Normal study.") == {"fracture": "absent", "normal": "positive"}
    assert labeler.label("Cardiomegaly.") == {"fracture": "absent", "normal": "absent"}


@pytest.mark.parametrize(
    "data, message",
    [
        ({"findings": {"edema": {"phrase": ["edema"]}}}, r"findings\.edema\.phrase: unknown key"),
        ({"findings": {"edema": {}}}, "finding 'edema' has neither phrases nor patterns"),
        ({"findings": {"Edema": {"phrases": ["edema"]}}}, "finding name 'Edema'"),
        ({"findings": {"normal": {"phrases": ["ok"]}}}, "'normal' is reserved"),
        ({"findings": {"edema": {"phrases": [""]}}}, r"findings\.edema\.phrases: item 0 is empty"),
        ({"findings": {"a": {"phrases": ["x(y)"]}}}, r"only '\(s\)' / '\(es\)'"),
        (
            {"findings": {"edema": {"phrases": ["fluid"]}, "effusion": {"phrases": ["fluid(s)"]}}},
            "phrase 'fluid' appears in both edema.phrases and effusion.phrases",
        ),
        (
            {"findings": {"edema": {"phrases": ["edema"], "negative_phrases": ["edema"]}}},
            "appears in both edema.phrases and edema.negative_phrases",
        ),
        (
            {"findings": {"edema": {"patterns": [[{"LOWR": "edema"}]]}}},
            r"findings\.edema\.patterns: pattern 0 is not a valid spaCy token pattern",
        ),
        (
            {"findings": {"edema": {"patterns": [[{"LOWER": {"NOT_IN": [False]}}]]}}},
            "quote them",
        ),
        ({"findings": {}}, "at least one finding"),
        ({"name": "x"}, r"findings: Field required"),
        (["edema"], "expected a mapping"),
    ],
)
def test_invalid_vocabularies_name_the_key(data, message):
    with pytest.raises(VocabularyError, match=message):
        vocabulary_from_dict(data, source="bad.yaml")


def test_errors_name_the_file(tmp_path):
    path = write(tmp_path, "findings:\n  edema:\n    phrases: [edema]\n    negatives: [x]\n")
    with pytest.raises(VocabularyError, match=r"vocab\.yaml:\n  findings\.edema\.negatives: unknown key"):
        load_vocabulary(path)
    with pytest.raises(VocabularyError, match="not valid YAML"):
        load_vocabulary(write(tmp_path, "findings: [unclosed"))
    with pytest.raises(VocabularyError, match="not found"):
        load_vocabulary(tmp_path / "missing.yaml")
    with pytest.raises(VocabularyError, match="chest_xray"):
        load_vocabulary("chest_ct")
