"""The report labeler on hand-written sentences: negation, uncertainty, laterality, aggregation."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from medmodal.labeling import Mention, ReportLabeler, aggregate, to_binary


def status_of(labeler: ReportLabeler, text: str, finding: str) -> str:
    return labeler.label(text)[finding]


def read_cases(name: str):
    """The cases of a YAML file next to this one."""
    return yaml.safe_load((Path(__file__).parent / name).read_text(encoding="utf-8"))


SENTENCES = read_cases("sentences.yaml")
SENTENCE_CASES = [
    pytest.param(group.get("labeler", "default"), text, expected, id=f"{name}-{i}")
    for name, group in SENTENCES.items()
    for i, (text, expected) in enumerate(group["cases"])
]


@pytest.mark.parametrize(("which", "text", "expected"), SENTENCE_CASES)
def test_sentence(labeler, probable_labeler, which, text, expected):
    """Each sentence of sentences.yaml gets the labels listed for it (groups say what they check)."""
    chosen = probable_labeler if which == "probable_as_positive" else labeler
    labels = chosen.label(text)
    assert {finding: labels[finding] for finding in expected} == expected, text


def test_likely_hedges_what_follows_not_what_precedes(labeler):
    labels = labeler.label("Right basilar opacity, likely atelectasis.")
    assert labels["opacity"] == "positive"
    assert labels["atelectasis"] == "uncertain"


def test_negation_and_uncertainty_end_each_other(labeler):
    labels = labeler.label("No pneumothorax, possible small effusion.")
    assert (labels["pneumothorax"], labels["effusion"]) == ("negative", "uncertain")
    labels = labeler.label("Possible small effusion, no pneumothorax.")
    assert (labels["pneumothorax"], labels["effusion"]) == ("negative", "uncertain")


@pytest.mark.parametrize(
    "text",
    [
        "No pneumothorax and there is a small effusion.",
        "No pneumothorax; small effusion.",
        "No pneumothorax, but there is a small effusion.",
        "No pneumothorax, whereas the small effusion is larger.",
        "No pneumothorax. Small effusion.",
        "No pneumothorax\n\nSmall effusion",  # blank line = sentence break
        "No pneumothorax [SEP] Small effusion",  # Study.text() separator
    ],
)
def test_negation_scope_ends(labeler, text):
    labels = labeler.label(text)
    assert (labels["pneumothorax"], labels["effusion"]) == ("negative", "positive")


def test_no_change_is_not_a_negation(labeler):
    assert status_of(labeler, "No change in the mild cardiomegaly.", "cardiomegaly") == "positive"


@pytest.mark.parametrize(("text", "finding", "side"), read_cases("laterality.yaml"))
def test_laterality(labeler, text, finding, side):
    (mention,) = [m for m in labeler.mentions(text) if m.finding == finding]
    assert mention.laterality == side


def test_laterality_of_two_findings_in_one_sentence(labeler):
    for text in (
        "Left effusion and right pneumothorax.",
        "Effusion on the left and pneumothorax on the right.",
    ):
        sides = {m.finding: m.laterality for m in labeler.mentions(text)}
        assert sides == {"effusion": "left", "pneumothorax": "right"}, text


def test_mention_fields(labeler):
    text = "Heart size is normal. No pneumothorax. Small left effusion."
    mentions = labeler.mentions(text)
    assert [m.finding for m in mentions] == ["cardiomegaly", "pneumothorax", "effusion"]
    effusion = mentions[2]
    assert isinstance(effusion, Mention)
    assert text[effusion.start : effusion.end] == effusion.text == "effusion"
    assert effusion.sentence == "Small left effusion."
    assert (effusion.status, effusion.laterality, effusion.source) == ("positive", "left", "finding")
    assert mentions[0].source == "negative" and mentions[0].status == "negative"
    assert "NEGATED_EXISTENCE" in mentions[1].modifiers


def test_multiple_mentions_aggregate_chexpert_style(labeler):
    # positive > uncertain > negative, whatever the order in the text
    assert status_of(labeler, "No effusion on the left. Small right effusion.", "effusion") == "positive"
    assert status_of(labeler, "Possible small effusion. No large effusion.", "effusion") == "uncertain"
    assert status_of(labeler, "No effusion. Effusion is not seen.", "effusion") == "negative"
    assert aggregate([]) == "absent"
    assert aggregate(["negative", "uncertain", "negative"]) == "uncertain"
    assert aggregate(["uncertain", "positive"]) == "positive"


def test_enlargement_words_do_not_read_as_normal(labeler):
    # The "heart ... normal" pattern must not reach across a comma to another organ.
    assert status_of(labeler, "Heart size is increased, lungs normal.", "cardiomegaly") == "absent"
    assert status_of(labeler, "The heart is mildly enlarged.", "cardiomegaly") == "positive"


def test_upper_limits_of_normal_heart_is_not_a_normal_heart(labeler):
    assert (
        status_of(labeler, "Heart size is upper limits normal or mildly enlarged.", "cardiomegaly")
        != "negative"
    )
    assert status_of(labeler, "Heart size is normal.", "cardiomegaly") == "negative"


def test_pericardial_effusion_is_not_pleural_effusion(labeler):
    labels = labeler.label("Small pericardial effusion.")
    assert (labels["pericardial_effusion"], labels["effusion"]) == ("positive", "absent")


@pytest.mark.parametrize("text", ["", "   ", None, float("nan")])
def test_empty_text(labeler, text):
    assert labeler.mentions(text) == []
    labels = labeler.label(text)
    assert set(labels) == set(labeler.label_names)
    assert set(labels.values()) == {"absent"}


def test_non_text_is_an_error(labeler):
    with pytest.raises(TypeError, match="item 1"):
        labeler.label_many(["No effusion.", 3])


def test_label_many_equals_label(labeler):
    texts = ["No pneumothorax. Small left effusion.", "", "Possible pneumonia.", "Cardiomegaly."]
    assert labeler.label_many(texts) == [labeler.label(t) for t in texts]
    assert labeler.label_many(iter(texts), batch_size=2) == labeler.label_many(texts)


def test_to_binary():
    labels = [
        {"effusion": "positive", "edema": "uncertain", "pneumothorax": "negative"},
        {"effusion": "absent", "edema": "negative", "pneumothorax": "uncertain"},
    ]
    findings = ["effusion", "edema", "pneumothorax"]
    np.testing.assert_array_equal(to_binary(labels, findings), [[1, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(
        to_binary(labels, findings, uncertain_as="negative"), [[1, 0, 0], [0, 0, 0]]
    )
    assert to_binary([], findings).shape == (0, 3)
    with pytest.raises(KeyError, match="labels\\[0\\] has no finding 'mass'"):
        to_binary(labels, ["mass"])
    with pytest.raises(ValueError, match="uncertain_as"):
        to_binary(labels, findings, uncertain_as="ignore")


@pytest.mark.parametrize(
    "text, finding",
    [
        ("Probable small bilateral pleural effusions.", "effusion"),
        ("Right basilar opacity, likely atelectasis.", "atelectasis"),
        ("Atelectasis is likely.", "atelectasis"),
        ("Opacities most suggestive of pulmonary edema.", "edema"),
        ("Right basilar opacities favored to represent atelectasis.", "atelectasis"),
    ],
)
def test_probable_hedges(labeler, probable_labeler, text, finding):
    # CheXpert's convention by default (uncertain); positive with probable_as="positive"
    assert status_of(labeler, text, finding) == "uncertain"
    assert status_of(probable_labeler, text, finding) == "positive"


def test_probable_does_not_cross_a_negation(probable_labeler):
    labels = probable_labeler.label("No effusion, likely atelectasis.")
    assert (labels["effusion"], labels["atelectasis"]) == ("negative", "positive")


def test_probable_as_is_checked():
    with pytest.raises(ValueError, match="probable_as"):
        ReportLabeler(probable_as="negative")
