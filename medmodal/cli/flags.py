"""Command-line flags shared by several commands, defined once (same names, types and help everywhere)."""

from __future__ import annotations

import argparse


def add_run_flags(p: argparse.ArgumentParser, *, out_help: str = "run folder (resumed if it exists)") -> None:
    """``--data`` (required), ``--out`` (required) and ``--force``: a command that trains into a run folder."""
    p.add_argument(
        "--data", required=True, help="dataset folder (with manifest.csv/.jsonl/.parquet) or manifest file"
    )
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--force", action="store_true", help="discard an existing run in --out and start over")


def add_budget_flags(p: argparse.ArgumentParser, *, config_help: str) -> None:
    """``--config`` plus the training budget: epochs, batch size, seed, learning rate, image size."""
    p.add_argument("--config", help=config_help)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--image-size", type=int)


def budget_overrides(args: argparse.Namespace, *, image_size: str) -> dict:
    """The flags of :func:`add_budget_flags` and :func:`add_progress_flag` as dotted config overrides
    (flags not given are None and ignored); ``image_size`` names where the config keeps the image size."""
    return {
        "train.epochs": args.epochs,
        "train.batch_size": args.batch_size,
        "train.seed": args.seed,
        "train.lr": args.lr,
        image_size: args.image_size,
        "train.progress_bar": False if args.no_progress else None,
    }


def add_manifest_flags(p: argparse.ArgumentParser) -> None:
    """How a manifest is read: bad rows, image paths outside the data folder, views."""
    p.add_argument("--on-bad-row", choices=["skip", "error"])
    p.add_argument("--allow-outside-paths", action="store_true",
                   help="accept manifest image paths outside the dataset folder (absolute, '..', symlinks out)")  # fmt: skip
    p.add_argument(
        "--views", help="keep only rows with these views, comma-separated: frontal, lateral or names (PA,AP)"
    )


def add_progress_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
