"""Leave-one-site-out: how well a model trained without a site's labels does on that site.

For a held-out (target) site, each variant is trained with ``train.domain_adaptation.target_sites``
set to it, so the target site's labels are never used (its ``train``-split studies join
training unlabeled where the variant uses them, ``dann``). All variants are tested on the
same studies: the target site's ``val`` and ``test`` studies. Reported per variant: macro
AUROC with a bootstrap 95% CI over those studies (:mod:`medmodal.evaluation.stats`), and the
paired bootstrap difference to ``plain`` (same resampled studies for both models).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medmodal.config import Config, apply_overrides
from medmodal.data.pipeline import read_dataset
from medmodal.evaluation import stats
from medmodal.evaluation.evaluate import predict_split
from medmodal.training.loading import load_trained
from medmodal.training.trainer import train

# Variants: config overrides on top of the base config (target site added by site_transfer).
APPEARANCE_AUGMENTATION = {
    "data.augment.enabled": True,
    "data.augment.contrast_gamma": (0.7, 1.4),
    "data.augment.noise_std": 0.04,
    "data.augment.blur_sigma": (0.0, 1.2),
    "data.augment.intensity_shift": 0.1,
    "data.augment.intensity_scale": 0.2,
}
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "augment": APPEARANCE_AUGMENTATION,
    "dann": {"train.domain_adaptation.method": "dann"},
    "dann+augment": {"train.domain_adaptation.method": "dann", **APPEARANCE_AUGMENTATION},
}


def target_test_studies(data: str | Path, config: Config, labels: list[str], site: str) -> list:
    """The held-out site's ``val`` and ``test`` studies (never seen with labels in training)."""
    manifest = read_dataset(data, config, labels)
    studies = [s for s in manifest.studies if s.site == site and s.split in ("val", "test")]
    if not studies:
        raise ValueError(f"{manifest.path}: no val/test studies of site '{site}'")
    return studies


def site_transfer(
    data: str | Path,
    config: Config,
    out: str | Path,
    site: str,
    variants: list[str],
    *,
    force: bool = False,
    n_resamples: int = 2000,
) -> dict[str, Any]:
    """Train each variant with ``site`` held out, test on that site; writes ``out/site_transfer.json``."""
    import numpy as np

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; available: {', '.join(VARIANTS)}")
    if not variants:  # (none trained nothing, then failed on the missing test targets)
        raise ValueError(f"no variant to train; available: {', '.join(VARIANTS)}")
    out = Path(out)
    probs: dict[str, np.ndarray] = {}
    targets = None
    report: dict[str, Any] = {"site": site, "variants": {}}
    for name in variants:
        cfg = apply_overrides(config, {**VARIANTS[name], "train.domain_adaptation.target_sites": [site]})
        result = train(data, cfg, out / name, force=force)
        trained = load_trained(out / name)
        studies = target_test_studies(data, trained.config, trained.labels, site)
        preds = predict_split(
            trained, studies, beam_size=1, max_tokens=4, batch_size=64, generate=False, progress=False
        )
        probs[name], targets = preds.probs, preds.targets
        interval = stats.bootstrap_ci(preds.probs, preds.targets, "auroc_macro", n_resamples=n_resamples)
        report["variants"][name] = {
            "auroc_macro": interval.as_dict(),
            "train_seconds": round(result.seconds, 1),
        }
    assert targets is not None  # at least one variant was scored
    report["n_test_studies"] = int(targets.shape[0])
    if "plain" in probs:
        for name, variant_probs in probs.items():
            if name != "plain":
                diff = stats.paired_bootstrap(
                    variant_probs, probs["plain"], targets, "auroc_macro", n_resamples=n_resamples
                )
                report["variants"][name]["minus_plain"] = diff.as_dict()
    (out / "site_transfer.json").write_text(json.dumps(report, indent=2))
    return report


def format_report(report: dict[str, Any]) -> str:
    """A Markdown table of a :func:`site_transfer` report."""
    lines = [
        f"held-out site: {report['site']} ({report['n_test_studies']} test studies)",
        "",
        "| variant | macro AUROC [95% CI] | minus plain [95% CI] | p |",
        "|---|---|---|---|",
    ]

    def fmt(interval: dict) -> str:
        if interval["estimate"] is None:
            return "n/a"
        bounds = "n/a" if interval["low"] is None else f"{interval['low']:.3f}, {interval['high']:.3f}"
        return f"{interval['estimate']:.3f} [{bounds}]"

    for name, row in report["variants"].items():
        diff = row.get("minus_plain")
        diff_text = fmt(diff["difference"]) if diff else "-"
        p = f"{diff['p_value']:.3f}" if diff and diff["p_value"] is not None else "-"
        lines.append(f"| {name} | {fmt(row['auroc_macro'])} | {diff_text} | {p} |")
    return "\n".join(lines)
