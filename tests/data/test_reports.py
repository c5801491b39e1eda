"""Splitting free-text reports into sections."""

from __future__ import annotations

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


def test_one_line_report_with_synonyms_and_mixed_case():
    text = "Clinical History: smoker. Findings: 8 mm nodule in the left upper lobe. Conclusion: Nodule, CT advised."
    assert split_report_sections(text) == {
        "indication": "smoker.",
        "findings": "8 mm nodule in the left upper lobe.",
        "impression": "Nodule, CT advised.",
    }


def test_text_before_any_header_is_findings_and_repeated_headers_join():
    text = "Heart size normal. IMPRESSION: No acute disease. impression : Stable."
    assert split_report_sections(text) == {
        "indication": "",
        "findings": "Heart size normal.",
        "impression": "No acute disease. Stable.",
    }


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
