"""The ``medmodal`` command line.

Each sub-command is a small function that parses its flags and calls the
library; all real work lives in the package so it is usable from Python too.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from medmodal.cli.flags import (
    add_budget_flags,
    add_manifest_flags,
    add_progress_flag,
    add_run_flags,
    budget_overrides,
)
from medmodal.errors import MedmodalError, UsageError

log = logging.getLogger("medmodal")


# ------------------------------------------------------------------ sub-commands
def cmd_synth(args: argparse.Namespace) -> None:
    from medmodal.data.synthetic import generate_dataset
    from medmodal.data.synthetic.presets import preset_arguments

    settings = preset_arguments(args.preset, n_sites=args.sites)
    summary = generate_dataset(
        args.out,
        n=args.n,
        seed=args.seed,
        image_size=args.image_size,
        masks=not args.no_masks,
        dicom_fraction=args.dicom_fraction,
        progress=not args.quiet,
        **settings,
    )
    print(json.dumps(summary, indent=2, default=str))
    print(f"wrote {args.n} studies to {Path(args.out).resolve()}")


def config_overrides(args: argparse.Namespace) -> dict:
    """Command-line flags as dotted config overrides (flags not given are None and ignored)."""
    return {
        **budget_overrides(args, image_size="data.image_size"),
        "train.devices": _int_or_str(args.devices),
        "train.num_nodes": args.num_nodes,
        "train.strategy": args.strategy,
        "train.accelerator": args.accelerator,
        "data.on_bad_row": args.on_bad_row,
        "data.allow_outside_paths": True if getattr(args, "allow_outside_paths", False) else None,
        "data.views": [v.strip() for v in args.views.split(",")] if getattr(args, "views", None) else None,
        "model.modalities": args.modalities,
        "model.modality_dropout": args.modality_dropout,
    }


def _int_or_str(value: str | None):
    if value is None:
        return None
    return int(value) if value.isdigit() else value


def base_config(args: argparse.Namespace):
    """The config of ``--preset`` (a named recipe, medmodal/models/presets.py) or of ``--config``
    (a YAML file; the built-in defaults without either). The two are exclusive: a file holds a
    whole config, so a preset with changes is written out by ``medmodal config --preset NAME``."""
    from medmodal.config import ConfigError, load_config
    from medmodal.models.presets import preset_config

    preset = getattr(args, "preset", None)
    if preset is None:
        return load_config(args.config)
    if args.config is not None:
        raise ConfigError(
            f"--preset and --config are exclusive; write the preset out with `medmodal config --preset {preset} "
            "> my.yaml`, change it and pass --config my.yaml"
        )
    return preset_config(preset)


def resolve_config(args: argparse.Namespace):
    from medmodal.config import apply_overrides

    config = apply_overrides(base_config(args), config_overrides(args))
    parts = {
        "model.fusion": args.fusion,
        "model.image_encoder": args.image_encoder,
        "model.text_encoder": args.text_encoder,
    }
    for dotted, name in parts.items():
        if name is not None:
            config = apply_overrides(config, {dotted: {"name": name, "kwargs": {}, "pretrained_path": None}})
    return config


def cmd_train(args: argparse.Namespace) -> None:
    from medmodal.training.trainer import train

    config = resolve_config(args)
    result = train(args.data, config, args.out, force=args.force)
    if result.run.done.exists():
        print(
            f"trained {result.run.root} ({result.epochs_run} epochs, {result.seconds:.0f} s); "
            f"best {result.monitor or config.train.monitor} = {result.best_score}"
        )


def cmd_evaluate(args: argparse.Namespace) -> None:
    from medmodal.evaluation.evaluate import evaluate_run, format_metrics_table

    metrics = evaluate_run(
        args.run, args.data, split=args.split, beam_size=args.beam_size, progress=not args.quiet
    )
    print(format_metrics_table(metrics))
    name = "metrics.json" if args.split == "test" else f"metrics_{args.split}.json"
    print(f"metrics written to {Path(args.run).resolve() / name}")


def cmd_predict(args: argparse.Namespace) -> None:
    from medmodal.serving.predictor import Predictor

    if args.image is None and args.text is None:
        raise UsageError("give --image, --text, or both")
    result = Predictor.from_run(args.run).predict(args.image, args.text, beam_size=args.beam_size)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
        print(f"prediction written to {args.out}")
    else:
        print(text)


def cmd_label_reports(args: argparse.Namespace) -> None:
    from medmodal.labeling import label_reports_file

    fields = args.fields.split(",") if args.fields else None
    label_reports_file(args.input, args.out, fields=fields, vocabulary=args.vocabulary)
    print(f"labels written to {args.out}")


def cmd_config(args: argparse.Namespace) -> None:
    import yaml

    print(yaml.safe_dump(base_config(args).model_dump(mode="json"), sort_keys=False), end="")


def cmd_demo(args: argparse.Namespace) -> None:
    from medmodal.cli.demo import run_demo

    run_demo(Path(args.out), n=args.n, epochs=args.epochs, seed=args.seed)


# ----------------------------------------------------------------------- parser
def _add_preset_flag(p: argparse.ArgumentParser) -> None:
    from medmodal.models.presets import preset_names

    p.add_argument(
        "--preset",
        choices=preset_names(),
        help="a named recipe instead of --config (medmodal/models/presets.py); stacked_retrieved is the demo's",
    )


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    add_budget_flags(p, config_help="YAML config (default: built-in defaults; see `medmodal config`)")
    _add_preset_flag(p)
    p.add_argument("--modalities", choices=["image", "text", "both"])
    p.add_argument("--fusion", help="fusion layer by name: concat, late, gated, bilinear, cross_attention")
    p.add_argument(
        "--image-encoder",
        help="image encoder by name: small_cnn, resnet18, resnet50, densenet121, efficientnet_b0",
    )
    p.add_argument("--text-encoder", help="text encoder by name: bilstm_attention, transformer")
    p.add_argument(
        "--modality-dropout", type=float, help="probability of hiding one modality per training sample"
    )
    add_manifest_flags(p)
    p.add_argument("--accelerator", help="cpu, gpu, auto")
    p.add_argument("--devices", help="number of devices/processes, or 'auto'")
    p.add_argument("--num-nodes", type=int)
    p.add_argument("--strategy", help="auto, ddp, ddp_spawn, fsdp, ...")
    add_progress_flag(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medmodal", description=__doc__.splitlines()[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="less output")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="write the built-in synthetic chest X-ray + report dataset")
    p.add_argument("out")
    p.add_argument("--n", type=int, default=2000, help="number of studies")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument(
        "--sites", type=int, default=None, help="acquisition sites (default: the preset's, 3 for demo)"
    )
    p.add_argument(
        "--preset",
        choices=("demo", "hard"),
        default="demo",
        help="named generator settings (medmodal/data/synthetic/presets.py); hard: subtler, smaller "
        "findings and a different site mix",
    )
    p.add_argument("--dicom-fraction", type=float, default=0.0, help="share of images written as DICOM")
    p.add_argument("--no-masks", action="store_true", help="do not write lesion masks")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("train", help="train a model on a dataset folder")
    add_run_flags(p)
    _add_train_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score a trained run on a split; writes metrics.json")
    p.add_argument("run")
    p.add_argument("--data", help="dataset (default: the one the run was trained on)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--beam-size", type=int)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="predict one study: labels, boxes, report, word attention (JSON)")
    p.add_argument("run")
    p.add_argument("--image", help="PNG, JPEG or DICOM")
    p.add_argument("--text", help="report text (the model's input fields, e.g. the indication)")
    p.add_argument("--beam-size", type=int)
    p.add_argument("--out", help="write the JSON here instead of printing it")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "label-reports", help="extract findings (negation, uncertainty, laterality) from report text"
    )
    p.add_argument("input", help="a dataset folder / manifest, or a CSV with report columns")
    p.add_argument("out", help="output CSV")
    p.add_argument("--fields", help="comma-separated text columns (default: findings,impression)")
    p.add_argument("--vocabulary", help="finding vocabulary YAML (default: the built-in chest X-ray one)")
    p.set_defaults(func=cmd_label_reports)

    p = sub.add_parser("config", help="print a config with every default filled in")
    p.add_argument("config", nargs="?", help="YAML to validate and complete (default: the built-in defaults)")
    _add_preset_flag(p)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("demo", help="synthetic data + image-only, text-only and fused models + evaluation")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--n", type=int, default=1000, help="synthetic studies")
    p.add_argument("--epochs", type=int, default=6, help="epochs per model")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
    _register_command_modules(sub)
    return parser


def _register_command_modules(sub: argparse._SubParsersAction) -> None:
    """Sub-commands that live in their own module: ``medmodal/cli/cmd_<name>.py`` with ``register(sub)``.

    Each such module adds its parser(s) and sets ``func``; heavy imports belong inside the command
    function so ``medmodal --help`` stays fast.
    """
    import importlib
    import pkgutil

    import medmodal.cli as package

    for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if module.name.startswith("cmd_"):
            importlib.import_module(f"medmodal.cli.{module.name}").register(sub)


def _configure_logging(quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    _configure_logging(args.quiet)
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a clean message for user errors; a bug (or --debug) keeps its traceback
        if args.debug or not is_user_error(err, args):
            raise
        print(f"error: {user_message(err)}", file=sys.stderr)
        return 2
    return 0


# a missing or unusable file or folder (each an OSError with ``filename``)
PATH_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def is_user_error(err: BaseException, args: argparse.Namespace) -> bool:
    """A :class:`MedmodalError`, or an OS error about a path the user typed on the command line."""
    if isinstance(err, MedmodalError):
        return True
    return isinstance(err, PATH_ERRORS) and _about_user_path(err, args)


def user_message(err: BaseException) -> str:
    """The message shown for a user error: ``PATH: reason`` for an OS error about a path."""
    if isinstance(err, OSError) and not isinstance(err, MedmodalError) and err.filename is not None:
        return f"{err.filename}: {err.strerror}"
    return str(err)


def _about_user_path(err: OSError, args: argparse.Namespace) -> bool:
    names = [name for name in (err.filename, err.filename2) if isinstance(name, (str, os.PathLike))]
    named = {os.path.normpath(os.fspath(name)) for name in names}
    return bool(named & _user_paths(args))


def _user_paths(args: argparse.Namespace) -> set[str]:
    """Every string argument of the command line (flags and positionals), as a normalised path."""
    values: list = []
    for value in vars(args).values():
        values.extend(value if isinstance(value, (list, tuple)) else [value])
    return {os.path.normpath(value) for value in values if isinstance(value, str) and value}


if __name__ == "__main__":
    sys.exit(main())
