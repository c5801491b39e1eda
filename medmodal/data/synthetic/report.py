"""The reference report: ``findings`` (organ-system sentences) and ``impression``, plus the indication.

The grammar is data (template tables below) driven by one mechanism: a
template is picked at random and its slots (``{side}``, ``{grade}``, ``{loc}``,
``{noun}`` ...) are filled from the finding's latent variables. Findings are
named only with the synonyms of :mod:`.vocabulary`; each present finding is
stated affirmatively, except that a subtle one is hedged with an uncertainty
cue with probability ``UNCERTAIN_RATE``; absent findings are explicitly negated
with a per-finding probability (:data:`NEGATE_RATE`) and never affirmed.

Sentence order: heart, mediastinum (and devices), lungs, pleura, bones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medmodal.data.synthetic.history import write_indication
from medmodal.data.synthetic.latent import Finding, StudyLatent
from medmodal.data.synthetic.vocabulary import NORMAL_HEART

UNCERTAIN_RATE = 0.5  # share of subtle findings reported with an uncertainty cue
NEGATE_RATE = {
    "cardiomegaly": 0.85,
    "effusion": 0.6,
    "pneumothorax": 0.65,
    "consolidation": 0.5,
    "edema": 0.3,
    "nodule": 0.2,
}
SYSTEMS = {
    "heart": ("cardiomegaly",),
    "lungs": ("nodule", "consolidation", "edema"),
    "pleura": ("effusion", "pneumothorax"),
}
IMPRESSION_ORDER = ("pneumothorax", "consolidation", "edema", "effusion", "nodule", "cardiomegaly")

NOUNS = {
    "nodule": ("nodule", "pulmonary nodule", "nodular opacity", "nodular density"),
    "consolidation": ("consolidation", "airspace consolidation", "airspace opacity", "airspace disease"),
}
ADVERBS = {"mild": "mildly", "moderate": "moderately", "marked": "markedly", "severe": "severely"}

# Findings-section sentences, per label: (certain templates, uncertain templates).
FINDING_TEMPLATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "cardiomegaly": (
        (
            "{Grade} cardiomegaly.",
            "The heart is {adverb} enlarged.",
            "{Adverb} enlarged cardiac silhouette.",
            "There is {grade} cardiac enlargement.",
        ),
        (
            "Possible {grade} cardiomegaly.",
            "Questionable {grade} cardiac enlargement.",
            "Heart size is borderline; cannot exclude {grade} cardiomegaly.",
        ),
    ),
    "nodule": (
        (
            "There is a {mm} {noun} in the {loc}.",
            "{Loc} {noun} measuring {mm}.",
            "A {mm} {noun} projects over the {loc}.",
        ),
        (
            "Cannot exclude a small {noun} in the {loc}.",
            "Questionable {noun} in the {loc}.",
            "Possible {mm} {noun} in the {loc}.",
        ),
    ),
    "nodule_followup": (
        ("Again seen is a {mm} {noun} in the {loc}, unchanged.", "Stable {mm} {noun} in the {loc}."),
        ("Questionable {noun} in the {loc}, not clearly changed.", "Possible {noun} again in the {loc}."),
    ),
    "consolidation": (
        (
            "There is {grade} {noun} in the {lobe}{bronchograms}.",
            "{Grade} {noun} in the {lobe}{bronchograms}.",
            "{Lobe} {noun}{bronchograms}.",
        ),
        (
            "Possible {noun} in the {lobe}.",
            "Questionable {noun} in the {lobe}.",
            "Subtle hazy opacity in the {lobe} may represent early airspace disease.",
        ),
    ),
    "edema": (
        (
            "{Grade} pulmonary edema{lines}.",
            "There is {grade} interstitial edema{lines}.",
            "Perihilar haziness and vascular indistinctness, consistent with {grade} pulmonary edema{lines}.",
        ),
        (
            "Possible mild interstitial edema.",
            "Mildly prominent interstitial markings may represent mild interstitial edema.",
            "Questionable mild pulmonary edema.",
        ),
    ),
    "effusion": (
        (
            "{Grade} {side} pleural effusion{s}.",
            "{Grade} amount of {side} pleural fluid.",
            "Blunting of the {side} costophrenic angle{s}, compatible with {article}{grade} effusion{s}.",
        ),
        (
            "Possible small {side} pleural effusion{s}.",
            "Blunting of the {side} costophrenic angle{s} may represent {article}small effusion{s}.",
            "Cannot exclude {article}small {side} pleural effusion{s}.",
        ),
    ),
    "pneumothorax": (
        (
            "{Grade} {side} {apical}pneumothorax.",
            "There is a {grade} {side} {apical}pneumothorax.",
            "{Grade} {side} {apical}pneumothorax with a visible visceral pleural line.",
        ),
        (
            "Questionable small {side} apical pneumothorax.",
            "Cannot exclude a small {side} apical pneumothorax.",
            "Possible small {side} apical pneumothorax.",
        ),
    ),
}
IMPRESSION_TEMPLATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "cardiomegaly": (("{Grade} cardiomegaly", "Cardiomegaly"), ("Possible {grade} cardiomegaly",)),
    "nodule": (("{Mm} {loc} {noun}", "{Loc} {noun} measuring {mm}"), ("Questionable {noun} in the {loc}",)),
    "nodule_followup": (("Stable {mm} {loc} {noun}",), ("Possible {noun} in the {loc}",)),
    "consolidation": (("{Lobe} {noun}{interpretation}",), ("Possible {lobe} {noun}",)),
    "edema": (("{Grade} pulmonary edema",), ("Possible mild interstitial edema",)),
    "effusion": (("{Grade} {side} pleural effusion{s}",), ("Possible small {side} pleural effusion{s}",)),
    "pneumothorax": (
        ("{Grade} {side} {apical}pneumothorax",),
        ("Possible small {side} apical pneumothorax",),
    ),
}
NEGATED_NOUNS = {
    "effusion": ("pleural effusion", "effusion"),
    "pneumothorax": ("pneumothorax",),
    "consolidation": ("focal consolidation", "airspace consolidation", "focal airspace disease"),
    "edema": ("pulmonary edema", "edema"),
    "nodule": ("suspicious pulmonary nodule", "pulmonary nodule"),
}
NEGATION_TEMPLATES = ("No {x}.", "No evidence of {x}.", "Negative for {x}.", "There is no {x}.")
NORMAL_SENTENCES = {
    "mediastinum": (
        "The mediastinal contours are normal.",
        "Mediastinal contours are unremarkable.",
        "Normal mediastinal silhouette.",
    ),
    "lungs_clear": ("The lungs are clear.", "Lungs are clear.", "The lungs are well expanded and clear."),
    "lungs_otherwise": ("The lungs are otherwise clear.", "Lungs are otherwise well aerated."),
    "angles": ("The costophrenic angles are sharp.",),
    "bones": (
        "The osseous structures are intact.",
        "No acute osseous abnormality.",
        "Visualized osseous structures are unremarkable.",
    ),
    "normal_impression": (
        "No acute cardiopulmonary abnormality.",
        "No acute cardiopulmonary process.",
        "No acute intrathoracic abnormality.",
        "Normal chest radiograph.",
    ),
}
CATHETER_SENTENCES = (
    "{Side} internal jugular central venous catheter with tip in the superior vena cava.",
    "{Side} IJ central line terminates in the SVC.",
)
INTERPRETATIONS = (", may represent pneumonia", ", suspicious for pneumonia", ", likely pneumonia")


@dataclass(frozen=True)
class Report:
    """The three text fields of a study, and which findings were written with uncertainty."""

    indication: str
    findings: str
    impression: str
    uncertain: tuple[str, ...]


def write_report(study: StudyLatent) -> Report:
    """Word the indication, findings and impression of a study (deterministic in ``study.text_seed``)."""
    rng = np.random.default_rng([study.text_seed, 0])
    uncertain = tuple(f.label for f in study.findings if f.subtle and rng.random() < UNCERTAIN_RATE)
    indication = write_indication(study.history, study.age, study.sex, rng)
    findings = " ".join(_findings_sentences(study, uncertain, rng))
    impression = _impression(study, uncertain, rng)
    return Report(indication=indication, findings=findings, impression=impression, uncertain=uncertain)


# ---------------------------------------------------------------------- findings
def _findings_sentences(study: StudyLatent, uncertain, rng) -> list[str]:
    present = {f.label: f for f in study.findings}
    sentences: list[str] = []
    if "cardiomegaly" in present:
        sentences.append(
            _describe(present["cardiomegaly"], study, "cardiomegaly" in uncertain, FINDING_TEMPLATES, rng)
        )
    elif rng.random() < NEGATE_RATE["cardiomegaly"]:
        sentences.append(_pick(NORMAL_HEART, rng))
    if rng.random() < 0.6:
        sentences.append(_pick(NORMAL_SENTENCES["mediastinum"], rng))
    if study.central_line:
        sentences.append(_fill(_pick(CATHETER_SENTENCES, rng), {"side": study.central_line}))
    sentences += _system_sentences("lungs", study, present, uncertain, rng)
    sentences += _system_sentences("pleura", study, present, uncertain, rng)
    if rng.random() < 0.6:
        sentences.append(_pick(NORMAL_SENTENCES["bones"], rng))
    return sentences


def _system_sentences(
    system: str, study: StudyLatent, present: dict[str, Finding], uncertain, rng
) -> list[str]:
    """Positive findings of one organ system, then (some) negations of its absent findings."""
    labels = SYSTEMS[system]
    positives = [
        _describe(present[label], study, label in uncertain, FINDING_TEMPLATES, rng)
        for label in labels
        if label in present
    ]
    absent = [label for label in labels if label not in present]
    negated = [label for label in absent if rng.random() < NEGATE_RATE[label]]
    sentences = list(positives)
    if system == "lungs" and "edema" not in present and rng.random() < 0.8:
        sentences.append(_pick(NORMAL_SENTENCES["lungs_otherwise" if positives else "lungs_clear"], rng))
    if system == "pleura" and "effusion" in absent and "effusion" not in negated and rng.random() < 0.3:
        sentences.append(_pick(NORMAL_SENTENCES["angles"], rng))
    if negated:
        sentences += _negations(negated, rng)
    return sentences


def _negations(labels: list[str], rng) -> list[str]:
    """Negation sentences: all labels in one list ("No a, b, or c.") or one sentence each."""
    groups = [labels] if len(labels) > 1 and rng.random() < 0.6 else [[label] for label in labels]
    sentences = []
    for group in groups:
        nouns = [_pick(NEGATED_NOUNS[label], rng) for label in group]
        sentences.append(_pick(NEGATION_TEMPLATES, rng).format(x=_join_or(nouns)))
    return sentences


def _join_or(items: list[str]) -> str:
    if len(items) <= 2:
        return " or ".join(items)
    return ", ".join(items[:-1]) + ", or " + items[-1]


# --------------------------------------------------------------------- impression
def _impression(study: StudyLatent, uncertain, rng) -> str:
    if not study.findings:
        return _pick(NORMAL_SENTENCES["normal_impression"], rng)
    present = {f.label: f for f in study.findings}
    ordered = [label for label in IMPRESSION_ORDER if label in present]
    phrases = [
        _describe(present[label], study, label in uncertain, IMPRESSION_TEMPLATES, rng) for label in ordered
    ]
    if _heart_failure_pattern(present, uncertain) and rng.random() < 0.5:
        phrases.append("Findings are consistent with congestive heart failure")
    if "nodule" in present and study.visit == 0 and "nodule" not in uncertain and rng.random() < 0.5:
        phrases.append("Recommend CT for further characterization of the nodule")
    if len(phrases) > 1 and rng.random() < 0.35:
        return " ".join(f"{i}. {p}." for i, p in enumerate(phrases, 1))
    return " ".join(f"{p}." for p in phrases)


def _heart_failure_pattern(present: dict[str, Finding], uncertain) -> bool:
    return "cardiomegaly" in present and "edema" in present and not {"cardiomegaly", "edema"} & set(uncertain)


# ------------------------------------------------------------------ slot filling
def _describe(finding: Finding, study: StudyLatent, hedged: bool, table, rng) -> str:
    """One finding as a sentence or phrase from ``table`` (certain or uncertain templates)."""
    key = "nodule_followup" if finding.label == "nodule" and study.visit > 0 else finding.label
    certain, uncertain = table[key]
    return _fill(_pick(uncertain if hedged else certain, rng), _slots(finding, study, rng))


def _slots(finding: Finding, study: StudyLatent, rng) -> dict[str, str]:
    """Values for every template slot of a finding (unused ones are ignored)."""
    bilateral = finding.side == "bilateral"
    params = finding.params
    slots = {
        "grade": finding.grade,
        "adverb": ADVERBS.get(finding.grade, "mildly"),
        "side": finding.side or "",
        "s": "s" if bilateral else "",
        "article": "" if bilateral else "a ",
        "mm": finding.grade,
        "apical": "apical " if int(params.get("apical", 0)) else "",
        "lines": " with Kerley B lines"
        if int(params.get("interstitial_lines", 0)) and rng.random() < 0.6
        else "",
        "bronchograms": " with air bronchograms" if not finding.subtle and rng.random() < 0.6 else "",
        "interpretation": _pick(INTERPRETATIONS, rng) if rng.random() < 0.5 else "",
        "lobe": str(params.get("lobe", "")),
        "noun": _pick(NOUNS[finding.label], rng) if finding.label in NOUNS else "",
        "loc": _nodule_location(finding, study, rng) if finding.label == "nodule" else "",
    }
    return slots


def _nodule_location(finding: Finding, study: StudyLatent, rng) -> str:
    anatomy = study.anatomy
    depth = (float(finding.params["v"]) - anatomy.apex_v) / anatomy.lung_height()
    zone = "upper" if depth < 0.35 else "mid" if depth < 0.65 else "lower"
    if zone != "mid" and rng.random() < 0.4:
        return f"{finding.side} {zone} lobe"
    return f"{finding.side} {zone} lung zone"


def _fill(template: str, slots: dict[str, str]) -> str:
    """Format a template; ``{Slot}`` gives the slot value with a capital first letter."""
    capitalised = {k[0].upper() + k[1:]: (v[:1].upper() + v[1:]) for k, v in slots.items()}
    text = template.format(**slots, **capitalised)
    return text[0].upper() + text[1:]


def _pick(options, rng):
    return options[int(rng.integers(len(options)))]
