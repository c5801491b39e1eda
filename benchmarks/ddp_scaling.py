"""Training samples/s: 1 process vs 2 data-parallel CPU processes (DDP, gloo), and bf16-mixed vs
32-true precision on the CPU.

- **DDP scaling**: ``medmodal train`` as a user runs it (a subprocess each), ``--devices 1`` and
  ``--devices 2 --strategy ddp`` on the CPU, the same data, config and epochs; ``train.batch_size`` is
  per process, so the 2-process run takes a global batch twice as large and half the steps. samples/s
  = training studies x epochs / the run's ``training_done.json`` seconds (end to end: data reading,
  tokenizer, per-epoch validation and checkpoints included). On a 2-core machine shared with other
  jobs this is only indicative: 2 processes cannot get more than the 2 cores, and any other work takes
  them away.
- **bf16-mixed vs 32-true**: the Lightning trainer of ``medmodal train`` on the same model and the same
  pre-built batches (``training_overhead.py``'s ``lightning_loop``), the two precisions alternating
  ``--repeats`` times in one process; the ratio of the medians.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ddp_scaling.py --out benchmarks/results/ddp_scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from training_overhead import add_workload_flags, build, lightning_loop


def train_run(data: Path, config: Path, out: Path, devices: int) -> dict:
    """One ``medmodal train`` subprocess; its ``training_done.json``."""
    command = [
        sys.executable,
        "-m",
        "medmodal.cli.main",
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--config",
        str(config),
        "--no-progress",
        "--accelerator",
        "cpu",
        "--devices",
        str(devices),
    ]
    if devices > 1:
        command += ["--strategy", "ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return json.loads((out / "training_done.json").read_text())


def ddp_scaling(work: Path, n: int, image_size: int, batch_size: int, epochs: int) -> dict:
    from medmodal.config import Config, apply_overrides, save_config
    from medmodal.data.pipeline import read_dataset
    from medmodal.data.synthetic import generate_dataset

    data = work / "ddp_data"
    generate_dataset(data, n=n, seed=0, image_size=image_size)
    config = apply_overrides(
        Config(),
        {
            "data.image_size": image_size,
            "train.batch_size": batch_size,
            "train.epochs": epochs,
            "train.early_stopping_patience": 0,
            "train.progress_bar": False,
        },
    )
    n_train = len(read_dataset(data, config).split("train"))
    path = work / "config.yaml"
    save_config(config, path)
    rows = {}
    for devices in (1, 2):
        done = train_run(data, path, work / f"run{devices}", devices)
        rows[f"{devices}_process"] = {
            "seconds": done["seconds"],
            "epochs": done["epochs_run"],
            "samples_per_s": n_train * done["epochs_run"] / done["seconds"],
        }
    rows["speedup_2_vs_1"] = rows["2_process"]["samples_per_s"] / rows["1_process"]["samples_per_s"]
    rows["train_studies"] = n_train
    return rows


def precision_ratio(work: Path, n: int, image_size: int, batch_size: int, repeats: int) -> dict:
    module, _, batches, config = build(n, image_size, batch_size, work / "bf16", num_workers=0)
    initial = {k: v.clone() for k, v in module.state_dict().items()}
    samples = sum(len(b["id"]) for b in batches)
    seconds: dict[str, list[float]] = {"32-true": [], "bf16-mixed": []}
    for r in range(repeats):
        for precision in ("32-true", "bf16-mixed"):
            module.load_state_dict(initial)
            cfg = config.model_copy(
                update={"train": config.train.model_copy(update={"precision": precision})}
            )
            seconds[precision].append(lightning_loop(module, batches, 1, cfg, work / f"p{r}{precision}"))
    med = {p: statistics.median(s) for p, s in seconds.items()}
    return {
        "seconds": seconds,
        "samples_per_s": {p: samples / s for p, s in med.items()},
        "bf16_vs_32_speed": med["32-true"] / med["bf16-mixed"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_workload_flags(parser, n=320, image_size=64, repeats_help="bf16 / fp32 alternations")
    parser.add_argument("--skip-ddp", action="store_true")
    parser.add_argument("--skip-precision", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args()
    result: dict = {
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "torch": torch.__version__,
        "n": args.n,
        "image_size": args.image_size,
        "batch_size_per_process": args.batch_size,
    }
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_ddp:
            result["ddp"] = ddp_scaling(Path(tmp), args.n, args.image_size, args.batch_size, args.epochs)
        if not args.skip_precision:
            result["precision"] = precision_ratio(
                Path(tmp), args.n, args.image_size, args.batch_size, args.repeats
            )
    result["load_average_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
