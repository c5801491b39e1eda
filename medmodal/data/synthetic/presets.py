"""Named settings of the generator (``medmodal synth --preset NAME``).

- ``demo``: the documented demo data (the defaults of :func:`generate_dataset`).
- ``hard``: a second, harder configuration for checking that a result is not tuned to the
  demo data: more findings drawn subtle (55 % instead of 38 %), every finding smaller
  (severity x 0.7) and fainter (conspicuity x 0.8), and a different site mix (a fourth,
  randomly drawn site with its own look and prevalence shifts joins the three built-in ones).
  Use it with another seed than the demo's, e.g. ``medmodal synth OUT --preset hard --seed 1``.

A preset holds keyword arguments of :func:`~medmodal.data.synthetic.generate.generate_dataset`;
arguments given explicitly override the preset's.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "demo": {},
    "hard": {"subtle_fraction": 0.55, "severity_scale": 0.7, "conspicuity_scale": 0.8, "n_sites": 4},
}


def preset_arguments(name: str, **explicit: Any) -> dict[str, Any]:
    """The preset's ``generate_dataset`` keywords, overridden by the ``explicit`` ones that are not None."""
    if name not in PRESETS:
        raise ValueError(f"unknown synthetic data preset {name!r}; presets: {', '.join(PRESETS)}")
    return {**PRESETS[name], **{k: v for k, v in explicit.items() if v is not None}}
