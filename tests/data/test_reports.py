"""Splitting free-text reports into sections."""

from __future__ import annotations

import pytest

from medmodal.data.reports import normalize_whitespace, split_report_sections


def test_multiline_report_with_standard_headers():
    report = """EXAMINATION: CHEST (PA AND LAT)

    INDICATION: ___F with cough and fever, evaluate for pneumonia.

    COMPARISON: Chest radiograph from ___.

    FINDINGS:
    PA and lateral views of the chest.  There is a new right lower lobe opacity.
    No pleural effusion or pneumothorax.

    IMPRESSION:
    Right lower lobe pneumonia.
    """
    assert split_report_sections(report) == {
        "indication": "___F with cough and fever, evaluate for pneumonia.",
        "findings": "PA and lateral views of the chest. There is a new right lower lobe opacity. "
        "No pleural effusion or pneumothorax.",
        "impression": "Right lower lobe pneumonia.",
    }


@pytest.mark.parametrize(
    ("text", "sections"),
    [
        pytest.param(
            "Clinical History: smoker. Findings: 8 mm nodule in the left upper lobe. Conclusion: Nodule, CT advised.",
            ("smoker.", "8 mm nodule in the left upper lobe.", "Nodule, CT advised."),
            id="synonyms-and-mixed-case",
        ),
        pytest.param(
            "Heart size normal. IMPRESSION: No acute disease. impression : Stable.",
            ("", "Heart size normal.", "No acute disease. Stable."),
            id="text-before-any-header-is-findings-and-repeated-headers-join",
        ),
    ],
)
def test_one_line_reports(text, sections):
    assert split_report_sections(text) == dict(zip(("indication", "findings", "impression"), sections))


def test_report_without_headers_or_text():
    assert split_report_sections("Lungs are clear.")["findings"] == "Lungs are clear."
    assert split_report_sections("") == {"indication": "", "findings": "", "impression": ""}
    assert split_report_sections(None) == {"indication": "", "findings": "", "impression": ""}


def test_header_words_inside_sentences_are_not_headers():
    text = "FINDINGS: No history of trauma; impression of the diaphragm is normal."
    assert split_report_sections(text)["findings"] == text[len("FINDINGS: ") :]


def test_normalize_whitespace():
    assert normalize_whitespace("  a\tb\n\n c\u00a0d  ") == "a b c d"
    assert normalize_whitespace(None) == ""
