"""``medmodal serve``, ``medmodal export`` and the reader-study commands (docs/serving.md).

* ``serve RUN [--host 127.0.0.1 --port 8000] [--data DATA] [--runtime onnx]``: the web service
  and, with ``--data``, the case-review page at ``/review/``.
* ``export RUN --onnx OUT.onnx``: the classification + localization graph as ONNX, with a parity
  check against PyTorch.
* ``ratings-export DB --out ratings.csv`` and ``ratings-summary DB``: the reader ratings.
"""

from __future__ import annotations

import argparse
import json
import os

from medmodal.errors import InputNotFoundError, UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a trained run over HTTP (predict API, case-review page)")
    p.add_argument("run", help="trained run folder")
    p.add_argument(
        "--host", default="127.0.0.1", help="bind address (default loopback; others need an API key)"
    )
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="environment variable holding the API key (required when --host is not loopback; "
        "at least 16 non-space characters)",
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host header value clients use for this server, besides localhost / 127.0.0.1 / ::1 "
        "and the --host address (repeatable; required with --host 0.0.0.0)",
    )
    p.add_argument(
        "--data", help="dataset for the review worklist (folder or manifest); no review page without it"
    )
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="worklist split")
    p.add_argument(
        "--ratings-db",
        help="SQLAlchemy URL or SQLite file for reader ratings (default RUN/review/ratings.db)",
    )
    p.add_argument(
        "--runtime",
        default="torch",
        choices=["torch", "onnx"],
        help="onnx: classification/localization in onnxruntime (report generation stays PyTorch)",
    )
    p.add_argument(
        "--onnx", help="ONNX file for --runtime onnx (default RUN/export/model.onnx, exported if missing)"
    )
    p.add_argument("--max-upload-mb", type=float, default=32.0, help="largest request body")
    p.add_argument(
        "--max-image-pixels", type=int, default=40_000_000, help="largest width x height of an upload"
    )
    p.add_argument("--max-text-chars", type=int, default=20_000, help="longest text field")
    p.add_argument(
        "--body-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds within which a request body must have arrived (else 408)",
    )
    p.add_argument(
        "--head-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds within which a connection must send its request line and headers",
    )
    p.add_argument(
        "--max-connections", type=int, default=1024, help="open connections beyond which new requests get 503"
    )
    p.add_argument("--threads", type=int, help="PyTorch intra-op threads (default: PyTorch's choice)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("export", help="export a trained run's inference graph (ONNX) with a parity check")
    p.add_argument("run", help="trained run folder")
    p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="output file")
    p.add_argument(
        "--tolerance", type=float, default=1e-4, help="largest allowed |ONNX - PyTorch| difference"
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("ratings-export", help="write the reader ratings as CSV")
    p.add_argument("db", help="SQLAlchemy URL or SQLite file (e.g. RUN/review/ratings.db)")
    p.add_argument("--out", required=True, help="CSV file")
    p.set_defaults(func=cmd_ratings_export)

    p = sub.add_parser(
        "ratings-summary", help="acceptance rate, error counts and Cohen's kappa of the reader ratings"
    )
    p.add_argument("db", help="SQLAlchemy URL or SQLite file")
    p.set_defaults(func=cmd_ratings_summary)


def cmd_serve(args: argparse.Namespace) -> None:
    import torch
    import uvicorn

    from medmodal.serving.app import create_app
    from medmodal.serving.security import ServingLimits, allowed_hosts, require_api_key_for, validate_api_key
    from medmodal.serving.server import uvicorn_config

    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise UsageError(f"--api-key-env {args.api_key_env}: that environment variable is empty or unset")
        try:
            validate_api_key(api_key)
        except ValueError as err:
            raise UsageError(f"--api-key-env {args.api_key_env}: {err}") from None
    require_api_key_for(args.host, api_key)
    hosts = allowed_hosts(args.host, args.allowed_host)
    if args.threads:
        torch.set_num_threads(args.threads)
    limits = ServingLimits(
        max_request_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_image_pixels=args.max_image_pixels,
        max_text_chars=args.max_text_chars,
        body_timeout_s=args.body_timeout,
        head_timeout_s=args.head_timeout,
        max_connections=args.max_connections,
    )
    app = create_app(
        args.run,
        data=args.data,
        split=args.split,
        ratings_url=args.ratings_db,
        api_key=api_key,
        limits=limits,
        runtime=args.runtime,
        onnx_path=args.onnx,
        allowed_hosts=hosts,
    )
    where = f"http://{args.host}:{args.port}"
    print(
        f"serving {args.run} ({args.runtime}) at {where}  (API docs {where}/docs"
        + (f", review page {where}/review/)" if args.data else ")")
    )
    print(f"answering Host: {', '.join(hosts)}")
    # access_log off: uvicorn's access lines are harmless (method, path, status) but the
    # service logs the same itself; no request body is ever logged.
    uvicorn.Server(
        uvicorn_config(app, args.host, args.port, limits, access_log=False, log_level="info")
    ).run()


def cmd_export(args: argparse.Namespace) -> None:
    from medmodal.serving.onnx_export import export_onnx

    result = export_onnx(args.run, args.onnx, tolerance=args.tolerance)
    print(json.dumps(result.summary(), indent=2))
    worst = max(result.max_abs_diff.values())
    print(
        f"exported {result.path}; parity vs PyTorch on {result.n_parity_studies} studies: max |diff| = {worst:.2e}"
    )


def cmd_ratings_export(args: argparse.Namespace) -> None:
    from medmodal.serving.ratings import RatingStore

    store = RatingStore(_existing_db(args.db))
    store.export_csv(args.out)
    print(f"{len(store.rows())} ratings written to {args.out}")


def cmd_ratings_summary(args: argparse.Namespace) -> None:
    from medmodal.serving.ratings import RatingStore

    print(json.dumps(RatingStore(_existing_db(args.db)).summary(), indent=2))


def _existing_db(db: str) -> str:
    """A ratings database that must already exist (a typo must not create an empty one)."""
    from pathlib import Path

    if "://" not in db and not Path(db).is_file():
        raise InputNotFoundError(f"{db}: no ratings database there")
    return db
