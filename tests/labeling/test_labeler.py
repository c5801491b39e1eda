"""The report labeler on hand-written sentences: negation, uncertainty, laterality, aggregation."""

import numpy as np
import pytest

from medmodal.labeling import Mention, ReportLabeler, aggregate, to_binary


def status_of(labeler: ReportLabeler, text: str, finding: str) -> str:
    return labeler.label(text)[finding]


@pytest.mark.parametrize(
    "text, finding",
    [
        ("No pneumothorax.", "pneumothorax"),
        ("There is no pleural effusion or pneumothorax.", "pneumothorax"),
        ("Clear lungs without pleural effusion.", "effusion"),
        ("Negative for pneumonia.", "pneumonia"),
        ("No evidence of consolidation or effusion.", "consolidation"),
        ("No evidence of consolidation or effusion.", "effusion"),
        ("Pneumothorax is not seen.", "pneumothorax"),
        ("A pleural effusion is not identified.", "effusion"),
        ("Edema is absent.", "edema"),
        ("The right effusion has resolved.", "effusion"),
        ("Interval resolution of the left lower lobe atelectasis.", "atelectasis"),
        ("No focal consolidation, pleural effusion, or pneumothorax.", "pneumothorax"),
        ("IMPRESSION: No pleural effusion.", "effusion"),
        ("There is no focal airspace opacity to suggest pneumonia.", "pneumonia"),
        ("The nodule is no longer visualized.", "nodule"),
        ("Fracture: none.", "fracture"),
    ],
)
def test_negated(labeler, text, finding):
    assert status_of(labeler, text, finding) == "negative"


@pytest.mark.parametrize(
    "text, finding",
    [
        ("Possible pneumonia.", "pneumonia"),
        ("This may represent atelectasis.", "atelectasis"),
        ("Cannot exclude pneumonia.", "pneumonia"),
        ("Pneumonia cannot be excluded.", "pneumonia"),
        ("Cannot rule out a small pneumothorax.", "pneumothorax"),
        ("Suspicious for mass.", "mass"),
        ("Questionable nodule in the right upper lobe.", "nodule"),
        ("Atelectasis versus pneumonia.", "pneumonia"),
        ("Atelectasis versus pneumonia.", "atelectasis"),
        ("Findings concerning for pneumonia.", "pneumonia"),
        ("Evaluate for pneumonia.", "pneumonia"),  # a question (medspaCy's default would say negated)
        ("To exclude pneumothorax.", "pneumothorax"),
        ("A small effusion may be present.", "effusion"),
        ("Pneumonia is suspected.", "pneumonia"),
        ("Pneumonia is not excluded.", "pneumonia"),
        ("Differential diagnosis includes pneumonia.", "pneumonia"),
        ("Could be edema.", "edema"),
        ("Possibly early pneumonia.", "pneumonia"),
        ("Question of a small nodule.", "nodule"),
    ],
)
def test_uncertain(labeler, text, finding):
    assert status_of(labeler, text, finding) == "uncertain"


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


@pytest.mark.parametrize(
    "text, finding, side",
    [
        ("Small left pleural effusion.", "effusion", "left"),
        ("Right lower lobe consolidation.", "consolidation", "right"),
        ("Bilateral pleural effusions.", "effusion", "bilateral"),
        ("Bibasilar atelectasis.", "atelectasis", "bilateral"),
        ("Effusions in both lungs.", "effusion", "bilateral"),
        ("Opacity in the left lower lobe.", "opacity", "left"),
        ("Blunting of the right costophrenic angle.", "effusion", "right"),  # side word inside the phrase
        ("Small effusions, left greater than right.", "effusion", "bilateral"),
        ("Cardiomegaly.", "cardiomegaly", None),
    ],
)
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


@pytest.mark.parametrize(
    "text, finding",
    [
        ("Heart size is normal.", "cardiomegaly"),
        ("Normal heart size.", "cardiomegaly"),
        ("The cardiac silhouette is within normal limits.", "cardiomegaly"),
        ("The heart is normal in size.", "cardiomegaly"),
        ("Heart size and pulmonary vascularity appear within normal limits.", "cardiomegaly"),
        ("The heart is not enlarged.", "cardiomegaly"),
        ("Costophrenic angles are sharp.", "effusion"),
    ],
)
def test_normality_phrases_make_the_finding_negative(labeler, text, finding):
    assert status_of(labeler, text, finding) == "negative"


def test_enlargement_words_do_not_read_as_normal(labeler):
    # The "heart ... normal" pattern must not reach across a comma to another organ.
    assert status_of(labeler, "Heart size is increased, lungs normal.", "cardiomegaly") == "absent"
    assert status_of(labeler, "The heart is mildly enlarged.", "cardiomegaly") == "positive"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("No acute cardiopulmonary abnormality.", "positive"),
        ("The lungs are clear.", "positive"),
        ("No pneumothorax.", "positive"),  # CheXpert "No Finding": nothing positive or uncertain
        ("Lungs are clear. Stable cardiomegaly.", "negative"),
        ("Possible pneumonia. Otherwise no acute cardiopulmonary process.", "negative"),
        ("Lateral view obtained.", "absent"),
    ],
)
def test_normal_flag(labeler, text, expected):
    assert labeler.label(text)["normal"] == expected


@pytest.mark.parametrize(
    "text, finding",
    [
        ("Enlarged cardiac silhouette.", "cardiomegaly"),
        ("The heart is enlarged.", "cardiomegaly"),
        ("Cardiac enlargement.", "cardiomegaly"),
        ("Small pleural effusions.", "effusion"),
        ("Blunting of the costophrenic angles.", "effusion"),
        ("Pleural fluid at the right base.", "effusion"),
        ("Pulmonary nodules.", "nodule"),
        ("Interstitial edema.", "edema"),
        ("Airspace disease in the lingula.", "opacity"),
        ("Airspace consolidation in the lingula.", "consolidation"),
        ("Moderate hiatal hernia.", "hernia"),
        ("Calcified granulomas.", "granuloma"),
    ],
)
def test_synonyms(labeler, text, finding):
    assert status_of(labeler, text, finding) == "positive"


@pytest.mark.parametrize(
    "text, positive, absent",
    [
        # CheXpert's "Lung Opacity" and the MeSH headings Airspace Disease / Opacity (docs/labeler.md)
        ("Airspace opacity in the right lower lobe.", "opacity", "consolidation"),
        ("Bibasilar airspace disease.", "opacity", "consolidation"),
        ("Consolidative opacity in the right lower lobe.", "consolidation", "opacity"),
        # MeSH indexes a nodular opacity / density as Opacity/round, a named nodule as Nodule
        ("Nodular opacity in the left upper lobe.", "opacity", "nodule"),
        ("6 mm nodular density at the left lung base.", "opacity", "nodule"),
        ("Calcified nodules in the right upper lobe.", "nodule", "opacity"),
        ("Patchy opacity in the left lower lobe.", "opacity", "consolidation"),
        # vascular congestion is its own finding (MeSH Pulmonary Congestion), not edema
        ("Mild central pulmonary vascular congestion.", "congestion", "edema"),
        ("Interstitial pulmonary edema.", "edema", "congestion"),
    ],
)
def test_finding_groupings(labeler, text, positive, absent):
    labels = labeler.label(text)
    assert (labels[positive], labels[absent]) == ("positive", "absent")


@pytest.mark.parametrize(
    "text",
    [
        "Borderline cardiomegaly.",
        "Borderline heart size.",
        "Heart size borderline enlarged.",
        "The heart is borderline in size.",
        "The heart is large.",
        "Heart size XXXX large.",
        "There is stable enlargement of the heart.",
        "Heart size mildly enlarged for technique.",
    ],
)
def test_cardiomegaly_wordings_including_borderline(labeler, text):
    # "borderline" grades the heart size at its threshold; Open-i codes it Cardiomegaly/borderline
    assert status_of(labeler, text, "cardiomegaly") == "positive"


def test_upper_limits_of_normal_heart_is_not_a_normal_heart(labeler):
    assert status_of(labeler, "Heart size is upper limits normal or mildly enlarged.", "cardiomegaly") != "negative"
    assert status_of(labeler, "Heart size is normal.", "cardiomegaly") == "negative"


@pytest.mark.parametrize(
    "text, finding, status",
    [
        # negation with an adverb between "not" and the verb (Open-i dev half)
        ("The nodule is not well-seen on today's study.", "nodule", "negative"),
        ("The nodule is not definitely seen.", "nodule", "negative"),
        # hedges found in the Open-i development half
        ("Pulmonary nodule is not entirely excluded.", "nodule", "uncertain"),
        ("Pulmonary edema difficult to entirely exclude.", "edema", "uncertain"),
        ("This may be secondary to edema.", "edema", "uncertain"),
        ("The differential could include interstitial edema.", "edema", "uncertain"),
        ("Question edema or atypical infection?", "edema", "uncertain"),
        ("Question small right pleural effusion.", "effusion", "uncertain"),
        ("Small bilateral pleural effusions suspected.", "effusion", "uncertain"),
        ("Suspected left hilar mass.", "mass", "uncertain"),
        ("Aspiration or edema are also possible.", "edema", "uncertain"),
        ("Differential considerations include atelectasis and infiltrate.", "atelectasis", "uncertain"),
        ("Questionable small right midlung nodule.", "nodule", "uncertain"),
        ("Bony overlap could obscure a small pulmonary nodule.", "nodule", "uncertain"),
        # ... and the statements they must leave alone
        ("Small right pleural effusion.", "effusion", "positive"),
        ("No pneumothorax, possible small effusion.", "pneumothorax", "negative"),
    ],
)
def test_dev_half_negation_and_uncertainty(labeler, text, finding, status):
    assert status_of(labeler, text, finding) == status


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


@pytest.mark.parametrize(
    "text, finding",
    [
        ("Possible small effusion.", "effusion"),
        ("This may represent atelectasis.", "atelectasis"),
        ("Suggestive of atelectasis.", "atelectasis"),
        ("Questionable nodule.", "nodule"),
        ("Atelectasis versus pneumonia.", "pneumonia"),
    ],
)
def test_low_likelihood_hedges_stay_uncertain_with_probable_as_positive(probable_labeler, text, finding):
    assert status_of(probable_labeler, text, finding) == "uncertain"


def test_probable_does_not_cross_a_negation(probable_labeler):
    labels = probable_labeler.label("No effusion, likely atelectasis.")
    assert (labels["effusion"], labels["atelectasis"]) == ("negative", "positive")


def test_probable_as_is_checked():
    with pytest.raises(ValueError, match="probable_as"):
        ReportLabeler(probable_as="negative")


@pytest.mark.parametrize(
    "text, finding, status",
    [
        ("Lungs are clear of airspace disease.", "opacity", "negative"),
        ("Lungs are expanded and clear airspace disease.", "opacity", "negative"),
        ("The chest is free of effusion.", "effusion", "negative"),
        ("Left lung clear, right lower lobe consolidation.", "consolidation", "positive"),
        ("Prominence of the central pulmonary vasculature.", "congestion", "positive"),
        ("The pulmonary vasculature is persistently enlarged.", "congestion", "positive"),
        ("Mild cephalization.", "congestion", "positive"),
        ("Prominent central pulmonary arteries.", "congestion", "absent"),
    ],
)
def test_clear_of_and_congestion_signs(labeler, text, finding, status):
    assert labeler.label(text)[finding] == status
