"""Acquisition sites: each has its own image look, patient mix and prevalence shifts.

Three sites are defined by hand (an outpatient clinic, an emergency department
and an intensive care unit, in that order); further sites, when asked for, are
drawn at random around them from the generator seed. A site's look is sampled
per study around its means (:func:`sample_acquisition`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from medmodal.data.synthetic.data_files import read_catalogue
from medmodal.data.synthetic.latent import Acquisition


@dataclass(frozen=True)
class SiteProfile:
    """One site: acquisition look (means and spreads), patient share, and prevalence shifts."""

    name: str
    patient_share: float  # relative share of patients
    visits: tuple[float, float, float]  # probability of 1, 2, 3 studies per patient
    gamma: float
    contrast: float
    brightness: float
    noise_std: float
    blur_px: float
    rotation_sd_deg: float
    shift_sd: float
    scale: float
    marker: str | None
    view: str
    prevalence_logit_shift: Mapping[str, float] = field(default_factory=dict)
    central_line_rate: float = 0.0  # share of studies with an (unmentioned) central line

    def expected_visits(self) -> float:
        """Mean number of studies per patient."""
        return float(np.dot(self.visits, (1, 2, 3)))


# outpatient clinic, emergency department, intensive care unit (sites.yaml)
BUILTIN_SITES: tuple[SiteProfile, ...] = tuple(read_catalogue("sites.yaml", list[SiteProfile]))


def default_sites(n_sites: int, seed: int = 0) -> tuple[SiteProfile, ...]:
    """The first ``n_sites`` built-in sites, plus random ones (seeded) beyond three."""
    if n_sites < 1:
        raise ValueError(f"n_sites must be >= 1, got {n_sites}")
    sites = list(BUILTIN_SITES[:n_sites])
    for index in range(len(BUILTIN_SITES), n_sites):
        sites.append(random_site(np.random.default_rng([seed, 9173, index]), f"site{index + 1}"))
    return tuple(sites)


def random_site(rng: np.random.Generator, name: str) -> SiteProfile:
    """A site with a look and prevalence shifts drawn around the built-in ones."""
    labels = ("cardiomegaly", "effusion", "nodule", "pneumothorax", "consolidation", "edema")
    return SiteProfile(
        name=name,
        patient_share=0.2,
        visits=(0.7, 0.2, 0.1),
        gamma=float(rng.uniform(0.75, 1.3)),
        contrast=float(rng.uniform(0.8, 1.05)),
        brightness=float(rng.uniform(0.0, 0.15)),
        noise_std=float(rng.uniform(0.02, 0.05)),
        blur_px=float(rng.uniform(0.4, 1.2)),
        rotation_sd_deg=float(rng.uniform(1.0, 4.0)),
        shift_sd=float(rng.uniform(0.01, 0.04)),
        scale=float(rng.uniform(0.95, 1.05)),
        marker=[None, "R", "L"][int(rng.integers(3))],
        view=["PA", "AP"][int(rng.integers(2))],
        prevalence_logit_shift={label: float(rng.normal(0.0, 0.4)) for label in labels},
        central_line_rate=float(rng.uniform(0.0, 0.3)),
    )


def sample_acquisition(site: SiteProfile, rng: np.random.Generator) -> Acquisition:
    """One study's acquisition: the site's look with per-study variation."""
    return Acquisition(
        rotation_deg=float(rng.normal(0.0, site.rotation_sd_deg)),
        shift_u=float(rng.normal(0.0, site.shift_sd)),
        shift_v=float(rng.normal(0.0, site.shift_sd)),
        scale=float(site.scale * np.exp(rng.normal(0.0, 0.02))),
        gamma=float(site.gamma * np.exp(rng.normal(0.0, 0.05))),
        contrast=float(site.contrast * np.exp(rng.normal(0.0, 0.04))),
        brightness=float(site.brightness + rng.normal(0.0, 0.02)),
        noise_std=float(site.noise_std * np.exp(rng.normal(0.0, 0.1))),
        blur_px=float(site.blur_px * np.exp(rng.normal(0.0, 0.1))),
        marker=site.marker,
        view=site.view,
    )
