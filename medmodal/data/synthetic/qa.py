"""Question–answer pairs about a synthetic study, read off its ground truth (for visual question answering).

Every answer is a fact of the study's latent variables (:class:`~.latent.StudyLatent`),
i.e. of what the image shows, not of what the report says (a subtle finding the
report hedges on is still answered "yes"). Per study, with the wording of each
question picked from a few templates:

==================  ========  ===================================================  ===========================
question_type       answer    asked                                                answers
==================  ========  ===================================================  ===========================
``presence``        closed    every present finding, and as many absent ones       ``yes`` / ``no``
                              (at least one), so yes and no are balanced
``normality``       closed    once                                                 ``yes`` / ``no``
``which_finding``   closed    when at most one finding is present                  a label name or ``none``
``laterality``      closed    each present effusion, nodule, pneumothorax,         ``right`` / ``left`` /
                              consolidation (patient's side)                       ``bilateral``
``size``            open      each present finding (its grade)                     e.g. ``small``, ``marked``,
                                                                                   ``patchy``, ``8 mm``
``location``        open      a present consolidation (its lobe)                   e.g. ``right lower lobe``
==================  ========  ===================================================  ===========================

:func:`questions_for_study` is a pure function of the study (its random choices
draw from a generator seeded by the study's ``text_seed``), so the same data set
always gets the same questions.
"""

from __future__ import annotations

import numpy as np

from medmodal.data.qa import QARecord
from medmodal.data.synthetic.latent import Finding, StudyLatent
from medmodal.data.synthetic.vocabulary import LABELS

QA_STREAM = 11  # sub-stream of the study's text seed used for question wording
SIDED_LABELS = ("effusion", "nodule", "pneumothorax", "consolidation")  # edema is always bilateral

# How a finding is named in a question: (with an article, bare noun).
FINDING_PHRASES: dict[str, tuple[tuple[str, str], ...]] = {
    "cardiomegaly": (("cardiomegaly", "cardiomegaly"), ("an enlarged heart", "cardiac enlargement")),
    "effusion": (("a pleural effusion", "pleural effusion"), ("pleural fluid", "effusion")),
    "nodule": (("a pulmonary nodule", "nodule"), ("a nodule", "pulmonary nodule")),
    "pneumothorax": (("a pneumothorax", "pneumothorax"),),
    "consolidation": (("consolidation", "consolidation"), ("airspace consolidation", "airspace opacity")),
    "edema": (("pulmonary edema", "pulmonary edema"), ("edema", "edema")),
}
PRESENCE = ("Is there {a}?", "Does the image show {a}?", "Is {a} present?", "Do you see {a}?")
NORMALITY = ("Is this chest radiograph normal?", "Is the study normal?", "Is this a normal chest x-ray?")
WHICH_FINDING = ("Which finding is present?", "What is the abnormality?", "What abnormality is seen?")
LATERALITY = (
    "Which side is the {noun} on?",
    "On which side is the {noun}?",
    "Is the {noun} on the right or the left?",
)
SIZE = {
    "cardiomegaly": ("How severe is the {noun}?", "What is the degree of {noun}?"),
    "effusion": ("How large is the {noun}?", "What is the size of the {noun}?"),
    "nodule": ("How large is the {noun}?", "What is the size of the {noun}?"),
    "pneumothorax": ("How large is the {noun}?", "What is the size of the {noun}?"),
    "consolidation": ("How dense is the {noun}?", "Is the {noun} patchy or dense?"),
    "edema": ("How severe is the {noun}?", "What is the degree of {noun}?"),
}
LOCATION = ("Where is the {noun}?", "In which lobe is the {noun}?")
NO_FINDING = "none"


def questions_for_study(study: StudyLatent) -> list[QARecord]:
    """All question–answer pairs of one study (see the module docstring for what is asked)."""
    rng = np.random.default_rng([study.text_seed, QA_STREAM])
    records = presence_questions(study, rng)
    records.append(
        _record(study, _pick(NORMALITY, rng), "no" if study.findings else "yes", "closed", "normality")
    )
    if len(study.findings) <= 1:
        answer = study.findings[0].label if study.findings else NO_FINDING
        records.append(_record(study, _pick(WHICH_FINDING, rng), answer, "closed", "which_finding"))
    for finding in sorted(study.findings, key=lambda f: LABELS.index(f.label)):
        records.extend(finding_questions(study, finding, rng))
    return records


def presence_questions(study: StudyLatent, rng: np.random.Generator) -> list[QARecord]:
    """``presence`` questions: each present label (``yes``) and as many absent labels, at least one (``no``)."""
    present = [label for label in LABELS if study.finding(label) is not None]
    absent = [label for label in LABELS if label not in present]
    n_absent = min(len(absent), max(1, len(present)))
    asked_absent = [absent[i] for i in sorted(rng.choice(len(absent), size=n_absent, replace=False))]
    records = []
    for label in sorted(present + asked_absent, key=LABELS.index):
        article, _ = _pick(FINDING_PHRASES[label], rng)
        question = _pick(PRESENCE, rng).format(a=article)
        records.append(
            _record(
                study,
                question[0].upper() + question[1:],
                "yes" if label in present else "no",
                "closed",
                "presence",
            )
        )
    return records


def finding_questions(study: StudyLatent, finding: Finding, rng: np.random.Generator) -> list[QARecord]:
    """``laterality``, ``size`` and ``location`` questions about one present finding."""
    _, noun = _pick(FINDING_PHRASES[finding.label], rng)
    records = []
    if finding.label in SIDED_LABELS and finding.side:
        records.append(
            _record(study, _pick(LATERALITY, rng).format(noun=noun), finding.side, "closed", "laterality")
        )
    if finding.grade:
        records.append(
            _record(study, _pick(SIZE[finding.label], rng).format(noun=noun), finding.grade, "open", "size")
        )
    lobe = finding.params.get("lobe")
    if finding.label == "consolidation" and lobe:
        records.append(_record(study, _pick(LOCATION, rng).format(noun=noun), str(lobe), "open", "location"))
    return records


def questions_for_studies(studies: list[StudyLatent]) -> list[QARecord]:
    """The questions of every study, in study order."""
    return [record for study in studies for record in questions_for_study(study)]


def _pick(options: tuple, rng: np.random.Generator):
    return options[int(rng.integers(len(options)))]


def _record(study: StudyLatent, question: str, answer: str, answer_type: str, question_type: str) -> QARecord:
    return QARecord(study.id, question, answer, answer_type, question_type)
