"""``medmodal explain RUN --image X [--text ...] --out DIR`` and ``medmodal faithfulness RUN --data DIR``
(docs/explain.md)."""

from __future__ import annotations

import argparse

from medmodal.errors import InputNotFoundError, UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain", help="explain one study: Grad-CAM, word weights, modality contributions, HTML page"
    )
    p.add_argument("run", help="trained run folder")
    p.add_argument("--image", default=None, help="image file (PNG / JPEG / DICOM)")
    p.add_argument("--text", default=None, help="report / indication text")
    p.add_argument("--out", required=True, help="output folder (case.html, PNGs, explanation.json)")
    p.add_argument(
        "--labels", default=None, help="comma-separated findings to explain (default: the predicted ones)"
    )
    p.add_argument("--text-method", default="auto", choices=["auto", "attention", "integrated_gradients"])
    p.add_argument("--image-method", default="gradcam", choices=["gradcam", "occlusion"])
    p.set_defaults(func=run_explain)

    f = sub.add_parser(
        "faithfulness", help="pointing game, deletion curves and text attention mass on built-in data"
    )
    f.add_argument("run", help="trained run folder")
    f.add_argument(
        "--data", required=True, help="synthetic dataset folder (manifest.csv + ground_truth.jsonl)"
    )
    f.add_argument("--split", default="test")
    f.add_argument("--max-studies", type=int, default=200, help="at most this many studies of the split")
    f.add_argument("--steps", type=int, default=20, help="deletion steps")
    f.add_argument(
        "--with-text",
        action="store_true",
        help="keep the text for the image measures (default: image-only, text replaced by its placeholder)",
    )
    f.add_argument("--image-method", default="gradcam", choices=["gradcam", "occlusion"])
    f.add_argument(
        "--out", default=None, help="write faithfulness.json here (default: RUN/faithfulness.json)"
    )
    f.set_defaults(func=run_faithfulness)


def run_explain(args: argparse.Namespace) -> None:
    from pathlib import Path

    from medmodal.explain.case import explain_study
    from medmodal.serving.predictor import Predictor

    if args.image is None and not args.text:
        raise UsageError("give --image, --text, or both")
    if args.image is not None and not Path(args.image).exists():
        raise InputNotFoundError(f"image not found: {args.image}")
    labels = [x.strip() for x in args.labels.split(",")] if args.labels else None
    case = explain_study(
        Predictor.from_run(args.run),
        args.image,
        args.text,
        args.out,
        labels=labels,
        text_method=args.text_method,
        image_method=args.image_method,
    )
    print(f"predicted: {', '.join(case['predicted']) or '(none)'}")
    for conflict in case.get("conflicts", []):
        print(
            f"CONFLICT {conflict['label']}: image-only {conflict['image_probability']:.2f}, "
            f"text-only {conflict['text_probability']:.2f}"
        )
    print(f"wrote {Path(args.out) / 'case.html'}")


def run_faithfulness(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from medmodal.explain.faithfulness import format_faithfulness, measure_faithfulness

    report = measure_faithfulness(
        args.run,
        args.data,
        split=args.split,
        max_studies=args.max_studies,
        steps=args.steps,
        with_text=args.with_text,
        image_method=args.image_method,
    )
    out = Path(args.out) if args.out else Path(args.run) / "faithfulness.json"
    out.write_text(json.dumps(report, indent=2))
    print(format_faithfulness(report))
    print(f"wrote {out}")
