"""``medmodal prepare DATA OUT``: validate, decode, resize each study once into WebDataset shards
(medmodal/data/prepare.py, docs/prepare.md); ``train`` / ``evaluate`` / ``benchmark`` then read OUT."""

from __future__ import annotations

import argparse

from medmodal.cli.flags import add_manifest_flags
from medmodal.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare", help="decode + resize every study once into WebDataset shards that train/evaluate read"
    )
    p.add_argument("data", help="dataset folder (with manifest.csv/.jsonl/.parquet) or manifest file")
    p.add_argument(
        "out", help="output folder, or an fsspec URL (s3://bucket/prefix; needs s3fs / gcsfs / ...)"
    )
    p.add_argument("--config", help="YAML config whose data section sets labels, views, splits, text fields")
    p.add_argument(
        "--image-size", type=int, help="side S of the stored square images (default: data.image_size)"
    )
    add_manifest_flags(p)
    p.add_argument("--studies-per-shard", type=int, default=5000, help="studies per tar shard (default 5000)")
    p.add_argument(
        "--chunk-rows", type=int, default=20_000, help="manifest rows validated at a time (default 20000)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from medmodal.config import apply_overrides, load_config
    from medmodal.data.prepare import prepare

    config = apply_overrides(load_config(args.config), {
        "data.image_size": args.image_size,
        "data.on_bad_row": args.on_bad_row,
        "data.allow_outside_paths": True if args.allow_outside_paths else None,
        "data.views": [v.strip() for v in args.views.split(",")] if args.views else None,
    })  # fmt: skip
    if args.studies_per_shard < 1 or args.chunk_rows < 1:
        raise UsageError("--studies-per-shard and --chunk-rows must be >= 1")
    result = prepare(args.data, args.out, config, studies_per_shard=args.studies_per_shard,
                     chunk_rows=args.chunk_rows, progress=True)  # fmt: skip
    skipped = len({p.row for p in result.problems})
    print(f"prepared {sum(result.studies.values())} studies into {result.out} "
          f"({', '.join(f'{k} {v} in {result.shards[k]} shard(s)' for k, v in result.studies.items())}); "
          f"{result.rows_read} rows read, {skipped} skipped; {result.seconds:.1f} s")  # fmt: skip
