"""Toolkit overhead of a training step, and data-loader vs model throughput.

1. **Overhead**: medmodal's training step (``MultimodalModule`` through the Lightning ``Trainer``
   built by ``medmodal.training.engine.lightning_trainer``, the factory ``medmodal train`` uses,
   with a CSV logger, a checkpoint per epoch and the module's per-step logging) against a bare
   PyTorch loop over the same model (same initial weights), the same loss
   (``task_losses(module.loss, ...)``), the same optimiser and schedule (AdamW + OneCycleLR) and
   the **same pre-built batches**. Goal: Lightning / bare - 1 <= 10 %.
2. **Input pipeline**: samples/s of the training ``DataLoader`` alone (PNG decode, resize,
   augmentation, tokenisation, collation; ``epoch_seeded_loader`` as ``medmodal train`` builds it)
   against samples/s of the bare training step. Goal: loader >= 3x the model.

The two sides of each ratio alternate ``--repeats`` times in one process and the medians are
compared, so a machine busy with other work slows both sides alike.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/training_overhead.py --out /tmp/overhead.json
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch


def build(n: int, image_size: int, batch_size: int, workdir: Path, num_workers: int):
    """Synthetic data -> (module, training loader, pre-built batches, config) as ``medmodal train`` builds them."""
    from medmodal.config import Config, apply_overrides
    from medmodal.data.pipeline import build_dataset, label_matrix, read_dataset, vocabulary_texts
    from medmodal.data.synthetic import generate_dataset
    from medmodal.data.tokenizer import ReportTokenizer
    from medmodal.training.data_defaults import heads_for_data
    from medmodal.training.losses import positive_weights
    from medmodal.training.module import MultimodalModule
    from medmodal.training.reproducibility import epoch_seeded_loader

    data = workdir / "data"
    generate_dataset(data, n=n, seed=0, image_size=image_size)
    config = apply_overrides(
        Config(),
        {
            "data.image_size": image_size,
            "train.batch_size": batch_size,
            "train.progress_bar": False,
            "data.num_workers": num_workers,
        },
    )
    manifest = read_dataset(data, config)
    studies, labels = manifest.split("train"), manifest.label_names
    config = heads_for_data(config, studies)  # as `medmodal train`: no target text / boxes -> no such head
    tokenizer = ReportTokenizer.train(vocabulary_texts(studies, config), min_freq=config.data.min_token_freq)
    torch.manual_seed(0)
    module = MultimodalModule.for_tokenizer(
        config, tokenizer, len(labels), pos_weight=positive_weights(label_matrix(studies, labels))
    )
    loader = epoch_seeded_loader(
        build_dataset(studies, tokenizer, labels, config, train=True),
        batch_size,
        config.train.seed,
        num_workers=num_workers,
    )
    batches = list(loader)
    return module, loader, batches, config


def optimiser(module, steps: int, lr: float, weight_decay: float):
    """What ``MultimodalModule.configure_optimizers`` returns, for the bare loop."""
    opt = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)
    return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, steps), pct_start=0.15)


def bare_loop(module, batches: list[dict], epochs: int, config) -> float:
    """Seconds for ``epochs`` passes of a plain PyTorch training loop over ``batches``."""
    from medmodal.training.domain_adaptation import task_losses

    module.train()
    opt, sched = optimiser(module, epochs * len(batches), config.train.lr, config.train.weight_decay)
    start = time.perf_counter()
    for _ in range(epochs):
        for batch in batches:
            out = module.model(batch)
            loss = task_losses(module.loss, out, batch).total
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return time.perf_counter() - start


def lightning_loop(module, batches: list[dict], epochs: int, config, root: Path) -> float:
    """Seconds of ``Trainer.fit`` (medmodal's trainer factory) for ``epochs`` passes over ``batches``."""
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader

    from medmodal.training.engine import lightning_trainer, quiet_lightning

    quiet_lightning()
    t = config.train.model_copy(update={"epochs": epochs, "early_stopping_patience": 0})
    trainer = lightning_trainer(t, root, strategy="auto", callbacks=[], loggers=[CSVLogger(root, name="")])
    loader = DataLoader(batches, batch_size=None, shuffle=False)  # the pre-built batches as they are
    start = time.perf_counter()
    trainer.fit(module, loader)
    return time.perf_counter() - start


def loader_seconds(loader) -> float:
    """Seconds for one pass of the training loader (no model)."""
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


def add_workload_flags(
    parser: argparse.ArgumentParser, *, n: int, image_size: int, repeats_help: str
) -> None:
    """The workload of :func:`build` and the timed loops: studies, image size, batch size, epochs, repeats."""
    parser.add_argument("--n", type=int, default=n, help="synthetic studies (about 70 %% train)")
    parser.add_argument("--image-size", type=int, default=image_size)
    parser.add_argument("--batch-size", type=int, default=16, help="per process")
    parser.add_argument(
        "--epochs", type=int, default=2, help="epochs (passes over the batches) of each timed run"
    )
    parser.add_argument("--repeats", type=int, default=3, help=repeats_help)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_workload_flags(parser, n=400, image_size=128, repeats_help="bare / Lightning alternations")
    parser.add_argument("--num-workers", type=int, default=0, help="data.num_workers of the loader measured")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        module, loader, batches, config = build(
            args.n, args.image_size, args.batch_size, work, args.num_workers
        )
        samples = sum(len(b["id"]) for b in batches)
        initial = copy.deepcopy(module.state_dict())
        bare_loop(module, batches[:2], 1, config)  # warm-up (allocator, first-call paths)
        bare, light, load = [], [], []
        for r in range(args.repeats):
            module.load_state_dict(initial)
            bare.append(bare_loop(module, batches, args.epochs, config))
            module.load_state_dict(initial)
            light.append(lightning_loop(module, batches, args.epochs, config, work / f"pl{r}"))
            load.append(loader_seconds(loader))
        b, lt, ld = statistics.median(bare), statistics.median(light), statistics.median(load)
        result = {
            "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}",
            "model": f"{config.model.image_encoder.name} + {config.model.text_encoder.name} + "
            f"{config.model.fusion.name}, heads: generation={config.model.heads.generation}",
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "batches": len(batches),
            "epochs": args.epochs,
            "repeats": args.repeats,
            "num_workers": args.num_workers,
            "bare_seconds": bare,
            "lightning_seconds": light,
            "loader_seconds": load,
            "lightning_overhead": lt / b - 1,
            "model_samples_per_s": samples * args.epochs / b,
            "loader_samples_per_s": samples / ld,
            "loader_vs_model": (samples / ld) / (samples * args.epochs / b),
        }
    print(json.dumps(result, indent=2))
    print(f"\nLightning overhead vs bare loop: {result['lightning_overhead']:+.1%} (goal <= +10 %)")
    print(
        f"data loader {result['loader_samples_per_s']:.0f} samples/s vs model {result['model_samples_per_s']:.0f} "
        f"samples/s: {result['loader_vs_model']:.1f}x (goal >= 3x)"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
