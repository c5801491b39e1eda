"""``medmodal vqa train|evaluate`` and ``medmodal segment train|evaluate`` (``import-vqa-rad`` is in cmd_import.py).

Each task trains into its own run folder (the layout of every medmodal run: checkpoints, logs,
resume after an interruption) and ``evaluate`` adds its metrics to ``RUN/metrics.json`` under
``vqa`` / ``segmentation`` (see ``docs/vqa-segmentation.md``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medmodal.cli.flags import add_budget_flags, add_progress_flag, add_run_flags, budget_overrides


def _threads(args: argparse.Namespace) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def _train_flags(p: argparse.ArgumentParser) -> None:
    add_run_flags(p, out_help="run folder (resumed if it holds an unfinished run of this config)")
    add_budget_flags(p, config_help="YAML with the task's settings (see docs/vqa-segmentation.md)")
    add_progress_flag(p)
    p.add_argument("--threads", type=int, help="torch intra-op threads (1 on a shared CPU)")


def _evaluate_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("run")
    p.add_argument("--data", help="dataset (default: the one the task was trained on)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--threads", type=int, help="torch intra-op threads")


def _task_config(args: argparse.Namespace, config_class: type, overrides: dict):
    """The task config of ``--config`` with the common flags and ``overrides`` applied."""
    from medmodal.tasks.config import load_task_config, with_overrides

    return with_overrides(
        load_task_config(config_class, args.config),
        {**budget_overrides(args, image_size="image_size"), **overrides},
    )


def _print_trained(what: str, result, score: str) -> None:
    print(
        f"trained {what} into {result.run.root} ({result.epochs_run} epochs, {result.seconds:.0f} s); "
        f"best validation {score} {result.best_score}"
    )


def cmd_vqa_train(args: argparse.Namespace) -> None:
    from medmodal.tasks.config import VQAConfig
    from medmodal.tasks.vqa import train_vqa

    _threads(args)
    config = _task_config(args, VQAConfig, {"fusion.name": args.fusion, "qa_file": args.qa_file,
                                            "use_image": False if args.question_only else None})  # fmt: skip
    _print_trained("VQA", train_vqa(args.data, args.out, config, force=args.force), "accuracy")


def cmd_vqa_evaluate(args: argparse.Namespace) -> None:
    from medmodal.tasks.vqa import evaluate_vqa, format_vqa_metrics

    _threads(args)
    metrics = evaluate_vqa(args.run, args.data, split=args.split)
    print(format_vqa_metrics(metrics))


def cmd_segment_train(args: argparse.Namespace) -> None:
    from medmodal.tasks.config import SegmentationConfig
    from medmodal.tasks.segmentation import train_segmentation

    _threads(args)
    config = _task_config(args, SegmentationConfig, {"conditioning": args.conditioning})
    result = train_segmentation(args.data, args.out, config, force=args.force)
    _print_trained(f"segmentation ({config.conditioning})", result, "Dice")


def cmd_segment_evaluate(args: argparse.Namespace) -> None:
    from medmodal.tasks.segmentation import evaluate_segmentation, format_segmentation_metrics

    _threads(args)
    print(format_segmentation_metrics(evaluate_segmentation(args.run, args.data, split=args.split)))


def cmd_segment_baseline(args: argparse.Namespace) -> None:
    import json

    from medmodal.runs import write_json_atomic
    from medmodal.tasks.segmentation import format_segmentation_metrics
    from medmodal.tasks.segmentation_baseline import evaluate_mean_mask_baseline

    metrics = evaluate_mean_mask_baseline(args.data, size=args.image_size, split=args.split)
    if args.out:
        write_json_atomic(args.out, metrics)
    print(format_segmentation_metrics(metrics))
    print("thresholds (chosen on val):", json.dumps(metrics["thresholds"]))


def register(sub: argparse._SubParsersAction) -> None:
    vqa = sub.add_parser(
        "vqa", help="visual question answering: train / evaluate (qa.jsonl next to the manifest)"
    )
    actions = vqa.add_subparsers(dest="vqa_command", required=True, metavar="ACTION")
    p = actions.add_parser("train", help="train image + question encoders, a fusion and an answer classifier")
    _train_flags(p)
    p.add_argument("--fusion", help="fusion layer by name: concat, gated, bilinear, cross_attention")
    p.add_argument("--question-only", action="store_true", help="hide the image (the question-only baseline)")
    p.add_argument("--qa-file", help="QA file relative to the data folder (default qa.jsonl)")
    p.set_defaults(func=cmd_vqa_train)
    p = actions.add_parser(
        "evaluate", help="closed / open accuracy vs the majority answer; writes metrics.json 'vqa'"
    )
    _evaluate_flags(p)
    p.set_defaults(func=cmd_vqa_evaluate)

    seg = sub.add_parser(
        "segment", help="text-guided lesion segmentation: train / evaluate (needs a mask column)"
    )
    actions = seg.add_subparsers(dest="segment_command", required=True, metavar="ACTION")
    p = actions.add_parser("train", help="train the U-Net, FiLM-conditioned on the report (or image-only)")
    _train_flags(p)
    p.add_argument(
        "--conditioning",
        choices=["film", "none"],
        help="film = text-guided (default), none = image-only U-Net",
    )
    p.set_defaults(func=cmd_segment_train)
    p = actions.add_parser("evaluate", help="per-class Dice / IoU; writes metrics.json 'segmentation'")
    _evaluate_flags(p)
    p.set_defaults(func=cmd_segment_evaluate)
    p = actions.add_parser(
        "baseline",
        help="the simple baseline: the report's findings painted with their mean training masks (same metrics)",
    )
    p.add_argument("--data", required=True, help="dataset folder or manifest (with a mask column)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument(
        "--image-size", type=int, default=64, help="size the maps are scored at (the U-Net's image_size)"
    )
    p.add_argument("--out", type=Path, help="also write the metrics to this JSON file")
    p.set_defaults(func=cmd_segment_baseline)
