"""``medmodal calibrate RUN --data DIR``: per-label Platt scaling of a trained run's probabilities,
fitted on the validation split (medmodal/experiments/calibrate.py, docs/benchmark.md)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="fit per-label Platt scaling on the validation split; later evaluate/predict/serve use it",
    )
    p.add_argument("run", help="trained run folder")
    p.add_argument(
        "--data", required=True, help="dataset folder (the run's data, or another with the same labels)"
    )
    p.add_argument("--fit-split", default="val", help="split to fit on (default: val)")
    p.add_argument("--eval-split", default="test", help="split to report before/after on ('' for none)")
    p.add_argument(
        "--thresholds",
        choices=["none", "best_f1"],
        default="none",
        help="best_f1: also choose per-label decision thresholds on the fit split (default: keep evaluate.threshold)",
    )
    p.add_argument(
        "--remove", action="store_true", help="delete RUN/calibration.json (back to raw probabilities)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from medmodal.experiments.calibrate import calibrate_run
    from medmodal.models.calibration import CALIBRATION_FILE

    path = Path(args.run) / CALIBRATION_FILE
    if args.remove:
        path.unlink(missing_ok=True)
        print(f"removed {path}; the run reports uncalibrated probabilities again")
        return
    scaling = calibrate_run(args.run, args.data, fit_split=args.fit_split, eval_split=args.eval_split or None,
                            thresholds=args.thresholds)  # fmt: skip
    tuned = scaling.thresholds is not None
    print(
        "split        studies   ECE before -> after   F1 macro before -> after (same threshold)"
        + ("   F1 macro, tuned thresholds" if tuned else "")
    )
    for split in (args.fit_split, args.eval_split):
        s = scaling.details.get(split) if split else None
        if s:
            print(
                f"{split:<12} {s['n_studies']:>7}   {s['ece_before']:.4f} -> {s['ece_after']:.4f}       "
                f"{s['f1_macro_before']:.4f} -> {s['f1_macro_after']:.4f}"
                + (f"            {s['f1_macro_tuned_thresholds']:.4f}" if tuned else "")
            )
    if scaling.thresholds is not None:
        print("thresholds: " + ", ".join(f"{n} {t:.3f}" for n, t in zip(scaling.labels, scaling.thresholds)))
    identity = scaling.details.get("identity_labels") or []
    if identity:
        print(f"left uncalibrated (one class only in '{args.fit_split}'): {', '.join(identity)}")
    floored = scaling.details.get("at_scale_floor") or []
    if floored:
        print(
            f"no usable signal on '{args.fit_split}' (scale held at its floor, ranking kept): {', '.join(floored)}"
        )
    print(f"written to {path}; evaluate / predict / serve / export now apply it (--remove to undo)")
