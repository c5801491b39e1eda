"""The named generator settings (``medmodal synth --preset``) and the lesion scale knobs."""

import pytest

from medmodal.data.synthetic import CohortSpec, default_sites, sample_cohort
from medmodal.data.synthetic.presets import PRESETS, preset_arguments


def findings(spec: CohortSpec, n_sites: int = 3, n: int = 300):
    studies = sample_cohort(n, 1, default_sites(n_sites, 1), spec)
    return [f for s in studies for f in s.findings], studies


def test_hard_preset_draws_smaller_fainter_and_more_subtle_findings():
    hard = PRESETS["hard"]
    easy_findings, _ = findings(CohortSpec())
    spec = CohortSpec(
        subtle_fraction=hard["subtle_fraction"],
        severity_scale=hard["severity_scale"],
        conspicuity_scale=hard["conspicuity_scale"],
    )
    hard_findings, studies = findings(spec, hard["n_sites"])
    mean = lambda xs: sum(xs) / len(xs)
    assert mean([f.severity for f in hard_findings]) < mean([f.severity for f in easy_findings])
    assert mean([f.conspicuity for f in hard_findings]) < mean([f.conspicuity for f in easy_findings])
    assert mean([f.subtle for f in hard_findings]) > mean([f.subtle for f in easy_findings])
    assert len({s.site for s in studies}) == 4  # a different site mix: a fourth site joins


def test_scale_one_keeps_the_demo_data_exactly():
    a, _ = findings(CohortSpec(), n=60)
    b, _ = findings(CohortSpec(severity_scale=1.0, conspicuity_scale=1.0), n=60)
    assert a == b


def test_preset_arguments_let_explicit_values_win_and_reject_unknown_names():
    assert preset_arguments("hard", n_sites=None)["n_sites"] == 4
    assert preset_arguments("hard", n_sites=2)["n_sites"] == 2
    assert preset_arguments("demo") == {}
    with pytest.raises(ValueError, match="unknown synthetic data preset 'easy'"):
        preset_arguments("easy")
    with pytest.raises(ValueError, match="severity_scale"):
        CohortSpec(severity_scale=0.0)
