"""``medmodal site-transfer DATA --site SITE --out DIR``: leave-one-site-out comparison of
plain training, appearance augmentation and DANN (docs/domain-adaptation.md)."""

from __future__ import annotations

import argparse

from medmodal.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "site-transfer",
        help="leave one site out: train plain / augment / dann without its labels, test on it (bootstrap CIs)",
    )
    p.add_argument("data", help="dataset folder (manifest with a 'site' column)")
    p.add_argument("--site", required=True, help="the held-out (target) site")
    p.add_argument("--out", required=True, help="folder for the variants' runs and site_transfer.json")
    p.add_argument(
        "--variants", default="plain,augment,dann", help="comma-separated: plain, augment, dann, dann+augment"
    )
    p.add_argument("--config", default=None, help="base YAML config")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override (YAML value), e.g. --set train.epochs=3; repeatable",
    )
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--force", action="store_true", help="retrain variants whose run folders exist")
    p.set_defaults(func=run)


def parse_overrides(pairs: list[str]) -> dict:
    """``["a.b=3", "c=[x]"]`` -> ``{"a.b": 3, "c": ["x"]}`` (values parsed as YAML)."""
    import yaml

    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--set expects KEY=VALUE, got '{pair}'")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def run(args: argparse.Namespace) -> None:
    from medmodal.config import apply_overrides, load_config
    from medmodal.experiments.site_transfer import format_report, site_transfer

    config = apply_overrides(load_config(args.config), parse_overrides(args.set))
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    report = site_transfer(
        args.data, config, args.out, args.site, variants, force=args.force, n_resamples=args.resamples
    )
    print(format_report(report))
