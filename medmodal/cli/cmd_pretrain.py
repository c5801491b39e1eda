"""CLI: ``medmodal pretrain``, ``search``, ``retrieval-eval``, ``zero-shot``, ``transfer``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medmodal.cli.flags import add_budget_flags, add_progress_flag, add_run_flags, budget_overrides
from medmodal.errors import UsageError


def _config(args: argparse.Namespace):
    from medmodal.config import apply_overrides, load_config

    overrides = {
        **budget_overrides(args, image_size="data.image_size"),
        "model.embed_dim": args.embed_dim,
        "pretrain.local_loss_weight": args.local_loss_weight,
    }
    return apply_overrides(load_config(args.config), overrides)


def cmd_pretrain(args: argparse.Namespace) -> None:
    from medmodal.training.pretrain import pretrain

    result = pretrain(args.data, _config(args), args.out, force=args.force)
    print(
        f"pretrained {result.run.root} ({result.epochs_run} epochs, {result.seconds:.0f} s); "
        f"best val/loss = {result.best_val_loss}"
    )
    for name, path in result.encoders.items():
        print(f"  {name}: {path}")


def cmd_search(args: argparse.Namespace) -> None:
    from medmodal.retrieval.search import StudySearch
    from medmodal.training.pretrain import load_pretrained_run

    if (args.image is None) == (args.text is None):
        raise UsageError("give exactly one of --image or --text")
    run = load_pretrained_run(args.run)
    search = StudySearch.for_dataset(run, args.data or run.data, kind=args.index)
    if args.image is not None:
        hits, query = search.by_image(args.image, k=args.k), {"image": str(args.image), "searched": "reports"}
    else:
        hits, query = search.by_text(args.text, k=args.k), {"text": args.text, "searched": "images"}
    print(json.dumps({"query": query, "results": hits}, indent=2))


def cmd_retrieval_eval(args: argparse.Namespace) -> None:
    from medmodal.retrieval.evaluate_pretrained import evaluate_retrieval

    m = evaluate_retrieval(args.run, args.data, split=args.split, hubness=args.hubness, bank_split=args.bank_split,
                           csls_k=args.csls_k)  # fmt: skip
    print(f"scores: {m['scores']}")
    for direction in ("image_to_text", "text_to_image"):
        s = m[direction]
        print(
            f"{direction:<14} R@1 {s['recall_at_1']:.3f} (chance {s['chance_recall_at_1']:.3f})  "
            f"R@5 {s['recall_at_5']:.3f} ({s['chance_recall_at_5']:.3f})  "
            f"R@10 {s['recall_at_10']:.3f} ({s['chance_recall_at_10']:.3f})  "
            f"median rank {s['median_rank']:.0f} of {s['n_items']}"
        )
    print("same findings as the query, precision@1/5/10 (chance):")
    for direction, groups in m.get("same_findings", {}).items():
        for group, s in groups.items():
            print(
                f"  {direction:<14} {group:<13} {s['precision_at_1']:.3f} / {s['precision_at_5']:.3f} / "
                f"{s['precision_at_10']:.3f} ({s['chance_precision_at_1']:.3f}), {s['n_queries']} queries"
            )
    section = "retrieval" if args.hubness == "none" else "retrieval_csls"
    print(f"metrics written to {Path(args.run).resolve() / 'metrics.json'} ({section})")


def cmd_zero_shot(args: argparse.Namespace) -> None:
    from medmodal.retrieval.evaluate_pretrained import evaluate_zero_shot

    m = evaluate_zero_shot(
        args.run, args.data, split=args.split, supervised=args.supervised, vocabulary=args.vocabulary
    )
    header = f"{'finding':<16}{'zero-shot':>10}" + "".join(
        f"{'sup.' + str(i + 1):>10}" for i in range(len(m["supervised"]))
    )
    print(header)
    fmt = lambda v: f"{v:>10.3f}" if v is not None else f"{'n/a':>10}"
    for name, auroc in [*m["per_label"].items(), ("macro", m["auroc_macro"])]:
        sup = [
            s["auroc_macro"] if name == "macro" else s["per_label"][name] for s in m["supervised"].values()
        ]
        print(f"{name:<16}{fmt(auroc)}" + "".join(fmt(v) for v in sup))
    for i, path in enumerate(m["supervised"]):
        print(f"sup.{i + 1} = {path}")
    print(f"metrics written to {Path(args.run).resolve() / 'metrics.json'} (zero_shot)")


def cmd_transfer(args: argparse.Namespace) -> None:
    from medmodal.experiments.transfer import run_transfer

    fractions = [float(f) for f in args.fractions.split(",")]
    table = run_transfer(args.data, args.pretrained, _config(args), args.out, fractions=fractions)
    print(json.dumps(table["rows"], indent=2))
    print(f"results written to {Path(args.out).resolve() / 'transfer.json'}")


def _add_training_flags(p: argparse.ArgumentParser) -> None:
    add_budget_flags(
        p, config_help="YAML config (the `pretrain` section and model.image_encoder / text_encoder)"
    )
    p.add_argument("--embed-dim", type=int, help="encoder output width (model.embed_dim)")
    p.add_argument("--local-loss-weight", type=float, help="GLoRIA word-region loss weight (0 = off)")
    add_progress_flag(p)


def register(sub) -> None:
    p = sub.add_parser(
        "pretrain", help="contrastive image-report pretraining (CLIP / ConVIRT, optional GLoRIA)"
    )
    add_run_flags(p)
    _add_training_flags(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("search", help="nearest studies to an image (by report) or a text (by image), as JSON")
    p.add_argument("run", help="a `medmodal pretrain` run folder")
    p.add_argument("--image", help="query image: returns the studies with the nearest reports")
    p.add_argument("--text", help="query text: returns the studies with the nearest images")
    p.add_argument("--data", help="dataset to search (default: the run's own)")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--index", choices=["flat", "ivf", "hnsw"], help="vector index (default: pretrain.index)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser(
        "retrieval-eval", help="image<->report Recall@1/5/10 and median rank; into metrics.json"
    )
    p.add_argument("run")
    p.add_argument("--data", help="dataset (default: the run's own)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument(
        "--hubness",
        default="none",
        choices=["none", "csls"],
        help="csls: re-rank with cross-domain similarity local scaling (hub penalties from --bank-split)",
    )
    p.add_argument("--bank-split", default="train", choices=["train", "val", "test"])
    p.add_argument("--csls-k", type=int, default=10, help="neighbours in the CSLS hub penalty")
    p.set_defaults(func=cmd_retrieval_eval)

    p = sub.add_parser("zero-shot", help="zero-shot AUROC per finding from text prompts; into metrics.json")
    p.add_argument("run")
    p.add_argument("--data", help="dataset (default: the run's own)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument(
        "--supervised", action="append", help="a `medmodal train` run to compare with (repeatable)"
    )
    p.add_argument(
        "--vocabulary", help="finding vocabulary YAML for the prompt synonyms (default: chest_xray)"
    )
    p.set_defaults(func=cmd_zero_shot)

    p = sub.add_parser("transfer", help="fine-tune with pretrained vs random encoders at label fractions")
    p.add_argument("--data", required=True)
    p.add_argument("--pretrained", required=True, help="a `medmodal pretrain` run folder")
    p.add_argument("--out", required=True, help="folder for the runs and transfer.json")
    p.add_argument("--fractions", default="0.1,0.25,1.0")
    _add_training_flags(p)
    p.set_defaults(func=cmd_transfer)
