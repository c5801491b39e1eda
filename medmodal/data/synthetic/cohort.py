"""The cohort: patients, their studies, which findings each study has, and what its history says.

Generative model (all draws seeded):

1. **Sites** (:mod:`.sites`) differ in look, patient share, number of follow-up
   studies and prevalence (a logit shift per finding).
2. **Patients** get a site, age, sex, a heart-failure history (rate
   ``heart_failure_rate``), a body geometry, and the *chronic* findings
   (cardiomegaly, nodule) which persist unchanged over their 1-3 studies.
3. **Studies** get the *acute* findings (effusion, pneumothorax, consolidation,
   edema) drawn anew. Each finding is present with probability
   ``sigmoid(intercept + site shift + parent effects)`` where the parents are
   heart failure and cardiomegaly (:data:`PARENT_EFFECTS`). The intercepts are
   solved so the expected prevalence over the site mix equals
   ``spec.prevalence`` exactly (:func:`solve_intercepts`).
4. Each present finding is **subtle** with probability ``subtle_fraction``
   (small and faint; :mod:`.lesions`), otherwise obvious.
5. **History** (:func:`choose_history`): a present finding is hinted by a
   related history item with probability ``hint_rate`` on average, higher for
   subtle and lower for obvious findings (difference ``hint_shift``); an absent
   finding gets a misleading related item with probability ``misleading_rate``;
   heart-failure patients mention it with probability ``chf_mention_rate``.
6. **Splits** are assigned per patient (:func:`assign_splits`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from medmodal.data.synthetic.history import HISTORY_ITEMS, items_for, neutral_item, related_labels, split_key
from medmodal.data.synthetic.latent import Anatomy, Finding, StudyLatent
from medmodal.data.synthetic.lesions import sample_finding
from medmodal.data.synthetic.sites import SiteProfile, sample_acquisition
from medmodal.data.synthetic.vocabulary import LABELS

PREVALENCE: dict[str, float] = {
    "cardiomegaly": 0.20,
    "effusion": 0.15,
    "nodule": 0.10,
    "pneumothorax": 0.06,
    "consolidation": 0.12,
    "edema": 0.08,
}
CHRONIC = ("cardiomegaly", "nodule")  # drawn per patient, persistent over follow-up studies
# Logit increments of a finding's probability given its parents (heart failure, cardiomegaly).
PARENT_EFFECTS: dict[str, dict[str, float]] = {
    "cardiomegaly": {"heart_failure": 1.8},
    "effusion": {"heart_failure": 1.0, "cardiomegaly": 0.9},
    "edema": {"heart_failure": 1.6, "cardiomegaly": 1.0},
}
HINT_RATE: dict[str, float] = {
    "cardiomegaly": 0.40,
    "effusion": 0.50,
    "nodule": 0.50,
    "pneumothorax": 0.60,
    "consolidation": 0.55,
    "edema": 0.50,
}
MISLEADING_RATE: dict[str, float] = {
    "cardiomegaly": 0.05,
    "effusion": 0.06,
    "nodule": 0.05,
    "pneumothorax": 0.05,
    "consolidation": 0.08,
    "edema": 0.05,
}
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class CohortSpec:
    """Tunable parameters of the cohort (defaults give the documented demo data)."""

    prevalence: Mapping[str, float] = field(default_factory=lambda: dict(PREVALENCE))
    subtle_fraction: float = 0.38
    # Multipliers of every finding's drawn severity (size) and conspicuity (contrast); < 1 = harder.
    severity_scale: float = 1.0
    conspicuity_scale: float = 1.0
    heart_failure_rate: float = 0.15
    hint_rate: Mapping[str, float] = field(default_factory=lambda: dict(HINT_RATE))
    hint_shift: float = 0.25  # hint probability of a subtle finding minus that of an obvious one
    misleading_rate: Mapping[str, float] = field(default_factory=lambda: dict(MISLEADING_RATE))
    chf_mention_rate: float = 0.45
    followup_nodule_hint_rate: float = 0.8  # a known nodule is usually the reason for the follow-up
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)

    def __post_init__(self) -> None:
        for name in ("prevalence", "hint_rate", "misleading_rate"):
            table = getattr(self, name)
            if set(table) != set(LABELS):
                raise ValueError(f"{name} must give a value for each of {list(LABELS)}, got {sorted(table)}")
            bad = {k: v for k, v in table.items() if not 0.0 < v < 1.0}
            if bad:
                raise ValueError(f"{name} values must be strictly between 0 and 1, got {bad}")
        if not 0.0 <= self.subtle_fraction <= 1.0:
            raise ValueError(f"subtle_fraction must be in [0, 1], got {self.subtle_fraction}")
        for name in ("severity_scale", "conspicuity_scale"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if any(f < 0 for f in self.split_fractions) or abs(sum(self.split_fractions) - 1.0) > 1e-6:
            raise ValueError(f"split_fractions must be >= 0 and sum to 1, got {self.split_fractions}")


@dataclass(frozen=True)
class Patient:
    """Persistent traits of one patient."""

    id: str
    site: SiteProfile
    age: int
    sex: str
    heart_failure: bool
    anatomy: Anatomy
    n_visits: int
    chronic: tuple[Finding, ...]


# --------------------------------------------------------------------------- intercepts
def solve_intercepts(spec: CohortSpec, sites: tuple[SiteProfile, ...]) -> dict[str, float]:
    """Per-finding logit intercepts giving ``spec.prevalence`` as the expected study-level prevalence.

    Expectation over the site mix (weighted by patient share x mean studies per
    patient), heart failure, and for effusion/edema the cardiomegaly state.
    """
    intercepts: dict[str, float] = {}
    for label in ("cardiomegaly", *[lab for lab in LABELS if lab != "cardiomegaly"]):
        low, high = -15.0, 15.0
        for _ in range(80):
            mid = 0.5 * (low + high)
            if _expected_prevalence(label, mid, intercepts, spec, sites) < spec.prevalence[label]:
                low = mid
            else:
                high = mid
        intercepts[label] = 0.5 * (low + high)
    return intercepts


def _expected_prevalence(label, intercept, intercepts, spec, sites) -> float:
    weights = np.array([s.patient_share * s.expected_visits() for s in sites])
    weights /= weights.sum()
    total = 0.0
    for weight, site in zip(weights, sites):
        for heart_failure, p_hf in ((True, spec.heart_failure_rate), (False, 1 - spec.heart_failure_rate)):
            if "cardiomegaly" in intercepts:
                p_cardio = _probability(
                    "cardiomegaly", intercepts["cardiomegaly"], site, heart_failure, False
                )
            else:
                p_cardio = 0.0  # only while solving cardiomegaly itself, which does not depend on it
            for cardio, p_c in ((True, p_cardio), (False, 1 - p_cardio)):
                total += weight * p_hf * p_c * _probability(label, intercept, site, heart_failure, cardio)
    return total


def _probability(label, intercept, site: SiteProfile, heart_failure: bool, cardiomegaly: bool) -> float:
    effects = PARENT_EFFECTS.get(label, {})
    logit = (
        intercept
        + site.prevalence_logit_shift.get(label, 0.0)
        + effects.get("heart_failure", 0.0) * heart_failure
        + effects.get("cardiomegaly", 0.0) * cardiomegaly
    )
    return float(1.0 / (1.0 + np.exp(-logit)))


# ----------------------------------------------------------------------------- patients
def sample_anatomy(rng: np.random.Generator, sex: str) -> Anatomy:
    """A patient's body geometry (normal heart: cardiothoracic ratio 0.38-0.50)."""
    width = rng.normal(0.73 if sex == "male" else 0.70, 0.02)
    dome_right = rng.normal(0.42, 0.03)
    return Anatomy(
        thorax_half_width=round(float(width), 4),
        body_half_width=round(float(width + rng.normal(0.2, 0.03)), 4),
        apex_v=round(float(rng.normal(-0.68, 0.02)), 4),
        dome_v_right=round(float(dome_right), 4),
        dome_v_left=round(float(dome_right + rng.normal(0.05, 0.015)), 4),
        ctr=round(float(np.clip(rng.normal(0.45, 0.025), 0.38, 0.50)), 4),
        heart_center_v=round(float(dome_right + rng.normal(-0.05, 0.02)), 4),
        heart_half_height=round(float(rng.normal(0.24, 0.015)), 4),
        soft_tissue=round(float(rng.normal(0.5, 0.04)), 4),
        rib_phase=round(float(rng.uniform(0.0, 0.125)), 4),
        marking_density=round(float(rng.normal(0.09, 0.015)), 4),
    )


def jitter_anatomy(anatomy: Anatomy, rng: np.random.Generator) -> Anatomy:
    """The same patient on another day: depth of inspiration and soft tissue vary slightly."""
    shift = float(rng.normal(0.0, 0.015))
    return replace(
        anatomy,
        dome_v_right=round(anatomy.dome_v_right + shift, 4),
        dome_v_left=round(anatomy.dome_v_left + shift, 4),
        soft_tissue=round(anatomy.soft_tissue + float(rng.normal(0.0, 0.01)), 4),
    )


def sample_patient(
    index: int, rng: np.random.Generator, spec: CohortSpec, sites: tuple[SiteProfile, ...], intercepts
) -> Patient:
    """One patient with persistent traits and chronic findings."""
    shares = np.array([s.patient_share for s in sites])
    site = sites[int(rng.choice(len(sites), p=shares / shares.sum()))]
    sex = "male" if rng.random() < 0.5 else "female"
    heart_failure = bool(rng.random() < spec.heart_failure_rate)
    age = int(np.clip(rng.normal(66 if heart_failure else 55, 15), 18, 95))
    anatomy = sample_anatomy(rng, sex)
    n_visits = 1 + int(rng.choice(3, p=site.visits))
    chronic: list[Finding] = []
    for label in CHRONIC:
        if rng.random() < _probability(label, intercepts[label], site, heart_failure, False):
            subtle = bool(rng.random() < spec.subtle_fraction)
            chronic.append(
                sample_finding(label, rng, subtle, anatomy, _ctr(anatomy, chronic), *_scales(spec))
            )
    return Patient(f"p{index:05d}", site, age, sex, heart_failure, anatomy, n_visits, tuple(chronic))


def _scales(spec: CohortSpec) -> tuple[float, float]:
    """(severity_scale, conspicuity_scale) of the cohort, as :func:`sample_finding` takes them."""
    return spec.severity_scale, spec.conspicuity_scale


def _ctr(anatomy: Anatomy, findings) -> float:
    cardiomegaly = next((f for f in findings if f.label == "cardiomegaly"), None)
    return float(cardiomegaly.params["ctr"]) if cardiomegaly else anatomy.ctr


# ------------------------------------------------------------------------------ studies
def sample_study(
    study_id: str, patient: Patient, visit: int, rng: np.random.Generator, spec: CohortSpec, intercepts
) -> StudyLatent:
    """One study of a patient: acute findings, history, devices, acquisition."""
    anatomy = patient.anatomy if visit == 0 else jitter_anatomy(patient.anatomy, rng)
    has_cardiomegaly = any(f.label == "cardiomegaly" for f in patient.chronic)
    ctr = _ctr(anatomy, patient.chronic)
    findings = list(patient.chronic)
    for label in LABELS:
        if label in CHRONIC:
            continue
        p = _probability(label, intercepts[label], patient.site, patient.heart_failure, has_cardiomegaly)
        if rng.random() < p:
            subtle = bool(rng.random() < spec.subtle_fraction)
            findings.append(sample_finding(label, rng, subtle, anatomy, ctr, *_scales(spec)))
    findings.sort(key=lambda f: LABELS.index(f.label))
    history = choose_history(rng, spec, patient, visit, findings)
    line = next((side for key, side in map(split_key, history) if HISTORY_ITEMS[key].implies_line), None)
    if line is None and rng.random() < patient.site.central_line_rate:
        line = "right" if rng.random() < 0.8 else "left"
    return StudyLatent(
        id=study_id,
        patient_id=patient.id,
        visit=visit,
        site=patient.site.name,
        age=patient.age,
        sex=patient.sex,
        heart_failure=patient.heart_failure,
        anatomy=anatomy,
        acquisition=sample_acquisition(patient.site, rng),
        findings=tuple(findings),
        history=history,
        central_line=line,
        render_seed=int(rng.integers(2**62)),
        text_seed=int(rng.integers(2**62)),
    )


def hint_probability(spec: CohortSpec, finding: Finding, visit: int) -> float:
    """Chance that the history hints at a present finding (subtle ones more often)."""
    if finding.label == "nodule" and visit > 0:
        return spec.followup_nodule_hint_rate
    base = spec.hint_rate[finding.label]
    if finding.subtle:
        return float(np.clip(base + spec.hint_shift * (1 - spec.subtle_fraction), 0.0, 1.0))
    return float(np.clip(base - spec.hint_shift * spec.subtle_fraction, 0.0, 1.0))


def choose_history(
    rng: np.random.Generator, spec: CohortSpec, patient: Patient, visit: int, findings: list[Finding]
) -> tuple[str, ...]:
    """History entries (``"key"`` or ``"key:side"``) of a study's indication; a neutral one if nothing else."""
    present = {f.label: f for f in findings}
    entries: list[str] = []
    if patient.heart_failure and rng.random() < spec.chf_mention_rate:
        entries.append("chf")
    for label in LABELS:
        finding = present.get(label)
        p = hint_probability(spec, finding, visit) if finding else spec.misleading_rate[label]
        if rng.random() < p and label not in related_labels(tuple(entries)):
            entries.append(_hint_entry(rng, label, finding, visit))
    if not entries:
        entries.append(neutral_item(patient.site.name))
    return tuple(entries)


def _hint_entry(rng: np.random.Generator, label: str, finding: Finding | None, visit: int) -> str:
    """A history entry related to ``label``, with the finding's side where the wording names one."""
    if label == "nodule" and finding is not None and visit > 0 and rng.random() < 0.6:
        key = "known_nodule"
    else:
        keys, weights = items_for(label)
        key = keys[int(rng.choice(len(keys), p=weights))]
    if not HISTORY_ITEMS[key].needs_side:
        return key
    side = finding.side if finding is not None and finding.side in ("right", "left") else None
    return f"{key}:{side or ('right' if rng.random() < 0.5 else 'left')}"


# ------------------------------------------------------------------------------- cohort
def sample_cohort(
    n: int, seed: int, sites: tuple[SiteProfile, ...], spec: CohortSpec | None = None
) -> list[StudyLatent]:
    """``n`` studies of as many patients as needed (the last patient's follow-ups truncated), with splits.

    Patient ``i`` draws from its own generator ``default_rng([seed, 1, i])``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    spec = spec or CohortSpec()
    intercepts = solve_intercepts(spec, sites)
    width = max(5, len(str(n - 1)))
    studies: list[StudyLatent] = []
    patient_index = 0
    while len(studies) < n:
        rng = np.random.default_rng([seed, 1, patient_index])
        patient = sample_patient(patient_index, rng, spec, sites, intercepts)
        for visit in range(min(patient.n_visits, n - len(studies))):
            study_id = f"s{len(studies):0{width}d}"
            studies.append(sample_study(study_id, patient, visit, rng, spec, intercepts))
        patient_index += 1
    splits = assign_splits(
        [s.patient_id for s in studies], spec.split_fractions, np.random.default_rng([seed, 2])
    )
    return [replace(s, split=splits[s.patient_id]) for s in studies]


def assign_splits(
    patient_ids: list[str], fractions: tuple[float, float, float], rng: np.random.Generator
) -> dict[str, str]:
    """Patient -> split, so that each split holds about its fraction of the *studies*.

    Patients are shuffled, then filled into train, val and test in turn while the
    running study count is below each split's cumulative target.
    """
    counts: dict[str, int] = {}
    for pid in patient_ids:
        counts[pid] = counts.get(pid, 0) + 1
    order = sorted(counts)
    rng.shuffle(order)
    total = len(patient_ids)
    bounds = np.cumsum(fractions) * total
    assigned, running = {}, 0
    for pid in order:
        centre = running + counts[pid] / 2.0
        assigned[pid] = SPLITS[min(int(np.searchsorted(bounds, centre, side="right")), 2)]
        running += counts[pid]
    return assigned
