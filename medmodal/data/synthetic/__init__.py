"""Synthetic chest radiographs with reports and full ground truth (the built-in demo data).

The generator draws a cohort of patients and studies (:mod:`.cohort`), renders
each study's image from its latent variables (:mod:`.anatomy`, :mod:`.lesions`,
:mod:`.render`), words its clinical history and report (:mod:`.history`,
:mod:`.report`), and writes everything in the manifest contract
(:mod:`.writers`, :func:`generate_dataset`). See ``docs/synthetic-data.md``.

Typical use::

    from medmodal.data.synthetic import generate_dataset
    summary = generate_dataset("data/synth", n=2000, seed=0)

Lower-level use (e.g. in tests)::

    studies = sample_cohort(20, seed=0, sites=default_sites(3))
    rendering = render_study(studies[0], image_size=128)     # pixels, label map, boxes
    rendering_without = render_study(studies[0].without("nodule"))
    report = write_report(studies[0])                        # indication, findings, impression
"""

from medmodal.data.synthetic.cohort import CohortSpec, sample_cohort
from medmodal.data.synthetic.generate import generate_dataset
from medmodal.data.synthetic.latent import Acquisition, Anatomy, Finding, StudyLatent
from medmodal.data.synthetic.render import Rendering, render_study
from medmodal.data.synthetic.report import Report, write_report
from medmodal.data.synthetic.sites import SiteProfile, default_sites
from medmodal.data.synthetic.vocabulary import (
    LABELS,
    NEGATION_CUES,
    NORMAL_HEART,
    SYNONYMS,
    UNCERTAINTY_CUES,
    mention_pattern,
)

__all__ = [
    "LABELS",
    "NEGATION_CUES",
    "NORMAL_HEART",
    "SYNONYMS",
    "UNCERTAINTY_CUES",
    "Acquisition",
    "Anatomy",
    "CohortSpec",
    "Finding",
    "Rendering",
    "Report",
    "SiteProfile",
    "StudyLatent",
    "default_sites",
    "generate_dataset",
    "mention_pattern",
    "render_study",
    "sample_cohort",
    "write_report",
]
