"""Where the CPU time of a training step on prepared data goes, stage by stage, in one process.

On a prepared folder (``medmodal prepare``; e.g. the one ``benchmarks/prepare_memory.py`` makes)
and its config, ``--batches`` training batches are timed with ``time.process_time`` (CPU seconds
of this process, so other jobs on the machine do not count) through each stage separately:

1. **read**: shard members -> ``(Study, stored image)`` (tar headers, JSON, ``.npy``; ``shard_samples``);
2. **build**: ``(Study, image)`` -> batch item (labels, boxes, augmentation, tokenisation);
3. **collate**: items -> the batch dict;
4. **model**: forward + loss + backward + AdamW step of ``MultimodalModule``'s model (no Lightning).

Lightning's own overhead is measured by ``benchmarks/training_overhead.py``. ``--repeats`` passes
alternate the stages, medians are reported, per 256 studies.

    OMP_NUM_THREADS=1 python benchmarks/prepared_step_profile.py --data /tmp/pm/10k/prepared \\
        --config /tmp/pm/10k/config.yaml --batches 8 --out results/prepared_step_profile.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch


def setup(data: str, config_path: str):
    """(index, config, tokenizer, training item builder, module) as ``medmodal train`` builds them."""
    from medmodal.config import load_config
    from medmodal.data.prepared import item_builder, read_index
    from medmodal.training.module import MultimodalModule
    from medmodal.training.prepared_training import heads_for_prepared_data, prepared_tokenizer

    index = read_index(data)
    config = heads_for_prepared_data(load_config(config_path), index)
    tokenizer = prepared_tokenizer(index, None, config)
    builder = item_builder(
        tokenizer,
        index.label_names,
        config.data,
        train=True,
        seed=config.train.seed,
        targets=config.model.heads.generation,
    )
    torch.manual_seed(0)
    module = MultimodalModule.for_tokenizer(config, tokenizer, len(index.label_names))
    return index, config, builder, module


def timed(fn, *args):
    """(result of fn(*args), CPU seconds it took)."""
    start = time.process_time()
    result = fn(*args)
    return result, time.process_time() - start


def read_samples(index, n: int) -> list:
    from medmodal.data.prepared import shard_samples

    stream = (s for url in index.shard_urls("train") for s in shard_samples(url, index.image_size))
    return list(itertools.islice(stream, n))


def build_items(builder, samples: list) -> list:
    return [builder.item(study, stored) for study, stored in samples]


def collate_batches(items: list, batch_size: int) -> list:
    from medmodal.data.dataset import collate

    return [collate(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]


def model_steps(module, batches: list) -> None:
    from medmodal.training.domain_adaptation import task_losses

    module.train()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    for batch in batches:
        loss = task_losses(module.loss, module.model(batch), batch).total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def profile(data: str, config_path: str, batches: int, repeats: int) -> dict:
    index, config, builder, module = setup(data, config_path)
    batch_size = config.train.batch_size
    n = batches * batch_size
    seconds: dict[str, list[float]] = {"read": [], "build": [], "collate": [], "model": []}
    for _ in range(repeats):
        samples, t = timed(read_samples, index, n)
        seconds["read"].append(t)
        items, t = timed(build_items, builder, samples)
        seconds["build"].append(t)
        collated, t = timed(collate_batches, items, batch_size)
        seconds["collate"].append(t)
        _, t = timed(model_steps, module, collated)
        seconds["model"].append(t)
    per_256 = {k: round(statistics.median(v) * 256 / n, 4) for k, v in seconds.items()}
    total = sum(per_256.values())
    return {
        "data": data, "studies": n, "batch_size": batch_size, "repeats": repeats,
        "model": f"{config.model.image_encoder.name} + {config.model.text_encoder.name} + {config.model.fusion.name}, "
                 f"embed_dim {config.model.embed_dim}, {config.data.image_size} px",
        "cpu_seconds_per_256_studies": per_256,
        "share": {k: round(v / total, 3) for k, v in per_256.items()},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), torch {torch.__version__}, "
                   f"{torch.get_num_threads()} thread(s)",
        "load_average_at_end": os.getloadavg(),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a prepared folder")
    parser.add_argument("--config", required=True)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = profile(args.data, args.config, args.batches, args.repeats)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
