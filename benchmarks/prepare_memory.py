"""Peak memory (RSS) of `medmodal prepare` + one training epoch on prepared data, at N manifest rows.

The manifest repeats the rows of a small synthetic set (``--distinct`` studies, their images
reused) with unique study ids and two studies per patient, so N can reach 1M without 1M image
files. Each phase runs as its own ``medmodal`` process under ``/usr/bin/time -v``; its peak RSS
is that process's "Maximum resident set size".

    python benchmarks/prepare_memory.py --rows 10000 --out /tmp/pm10k
    python benchmarks/prepare_memory.py --rows 1000000 --out /tmp/pm1m --limit-train-batches 200

Writes ``OUT/prepare_memory.json`` (and appends it to ``benchmarks/results/prepare_memory.json``
with ``--record``). The training config: 16 px images, the default (tiny) model parts with
``model.embed_dim`` 32, batch 256, no report decoder, split fractions 0.98 / 0.01 / 0.01 so the
validation pass stays small; any batch limit is recorded in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

CONFIG = """\
data:
  image_size: {size}
  max_text_tokens: 24
  max_target_tokens: 24
  split_fractions: [0.98, 0.01, 0.01]
  check_images: true
model:
  embed_dim: 32
  heads:
    generation: false
train:
  epochs: 1
  batch_size: 256
  progress_bar: false
  early_stopping_patience: 0
  limit_train_batches: {limit}
"""


def build_manifest(out: Path, rows: int, distinct: int) -> Path:
    """A manifest of ``rows`` rows cycling over a ``distinct``-study synthetic set (ids made unique)."""
    from medmodal.data.synthetic import generate_dataset

    base = out / "data"
    if not (base / "manifest.csv").exists():
        generate_dataset(base, n=distinct, seed=0, image_size=64)
    source = pd.read_csv(base / "manifest.csv", dtype=str, keep_default_na=False)
    source = source.drop(columns=[c for c in ("split",) if c in source.columns])
    big = base / f"manifest_{rows}.csv"
    if big.exists():
        return big
    with open(big, "w") as handle:
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            block = source.iloc[[i % len(source) for i in range(start, start + n)]].copy()
            block["id"] = [f"r{i:07d}" for i in range(start, start + n)]
            block["patient_id"] = [f"p{i // 2:07d}" for i in range(start, start + n)]  # 2 studies per patient
            block.to_csv(handle, index=False, header=start == 0)
    return big


def run_phase(name: str, command: list[str], log: Path) -> dict:
    timer = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)
    full = [timer, "-v", *command] if timer else command
    start = time.time()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "w") as handle:
        code = subprocess.call(full, stdout=handle, stderr=subprocess.STDOUT, env=env)
    seconds = time.time() - start
    text = log.read_text()
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if code != 0:
        raise SystemExit(f"{name} failed (exit {code}); see {log}:\n{text[-3000:]}")
    return {"phase": name, "seconds": round(seconds, 1),
            "peak_rss_mb": round(int(match.group(1)) / 1024, 1) if match else None}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--distinct", type=int, default=200, help="distinct synthetic studies (image files)")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument(
        "--limit-train-batches", type=int, default=None, help="train batches (default: whole epoch)"
    )
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument(
        "--record", action="store_true", help="append to benchmarks/results/prepare_memory.json"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = build_manifest(args.out, args.rows, args.distinct)
    config = args.out / "config.yaml"
    config.write_text(CONFIG.format(size=args.image_size, limit=args.limit_train_batches or "null"))
    medmodal = [sys.executable, "-m", "medmodal.cli.main"]
    prepared, run = args.out / "prepared", args.out / "run"
    shutil.rmtree(prepared, ignore_errors=True)
    shutil.rmtree(run, ignore_errors=True)
    phases = [run_phase("prepare", [*medmodal, "--quiet", "prepare", str(manifest), str(prepared), "--config", str(config)],
                        args.out / "prepare.log")]  # fmt: skip
    if not args.skip_train:
        phases.append(run_phase("train", [*medmodal, "--quiet", "train", "--data", str(prepared), "--config", str(config),
                                          "--out", str(run)], args.out / "train.log"))  # fmt: skip
    index = json.loads((prepared / "prepared.json").read_text())
    result = {
        "rows": args.rows,
        "distinct_images": args.distinct,
        "image_size": args.image_size,
        "studies": {k: v["studies"] for k, v in index["splits"].items()},
        "limit_train_batches": args.limit_train_batches,
        "batch_size": 256,
        "phases": phases,
        "prepared_bytes": sum(p.stat().st_size for p in prepared.iterdir()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), Python {platform.python_version()}",
        "load_average_at_end": os.getloadavg(),
    }
    if (run / "training_done.json").exists():
        result["training_done"] = json.loads((run / "training_done.json").read_text())
    (args.out / "prepare_memory.json").write_text(json.dumps(result, indent=2))
    if args.record:
        path = Path(__file__).parent / "results" / "prepare_memory.json"
        existing = json.loads(path.read_text()) if path.exists() else []
        path.write_text(json.dumps([*existing, result], indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
