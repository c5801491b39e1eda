"""Share of a training step that the report decoder's teacher forcing takes, for the demo's fused
model, in one run: the median CPU time of a training step (forward + loss + backward, batch 32 at
128 px) with the decoder run, and with a zero generation weight (the decoder skipped, as the demo's
recipe trains since 2026-12-02). The model is the default fused model with retrieved reports, i.e.
the demo's recipe without the stacked regressions (those need their cross-fitting pass first; they
are a few small linear layers).

    OMP_NUM_THREADS=2 python benchmarks/decoder_step_share.py [--data D] [--repeats 6]

Without ``--data`` it writes 96 synthetic studies to a temporary folder. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from medmodal.config import Config, apply_overrides
from medmodal.data.dataset import collate
from medmodal.data.pipeline import build_dataset, fit_splits, read_dataset, vocabulary_texts
from medmodal.data.synthetic import generate_dataset
from medmodal.data.tokenizer import ReportTokenizer
from medmodal.training.module import MultimodalModule

RETRIEVED = {
    "model.report_conditioning.reports": "retrieved",
    "model.report_conditioning.threshold": "val_micro_f1",
}


def step_seconds(module: MultimodalModule, batch: dict, repeats: int) -> float:
    """Median process time of ``training_step`` + backward over ``repeats`` (after one warm-up)."""
    module.log = lambda *args, **kwargs: None  # type: ignore[method-assign]
    times = []
    for i in range(repeats + 1):
        module.zero_grad(set_to_none=True)
        start = time.process_time()
        module.training_step(batch, 0).backward()
        if i:
            times.append(time.process_time() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "data"
            generate_dataset(data, n=96, seed=0, image_size=128)
        seconds = {}
        for name, weight in (("decoder_run", 0.5), ("decoder_skipped", 0.0)):
            config = apply_overrides(Config(), {**RETRIEVED, "train.loss_weights.generation": weight})
            manifest = read_dataset(data, config)
            train_studies, _ = fit_splits(manifest)
            tokenizer = ReportTokenizer.train(vocabulary_texts(train_studies, config), min_freq=1)
            dataset = build_dataset(train_studies[:32], tokenizer, manifest.label_names, config, train=False)
            batch = collate([dataset[i] for i in range(len(dataset))])
            torch.manual_seed(0)
            module = MultimodalModule.for_tokenizer(config, tokenizer, len(manifest.label_names))
            module.train()
            seconds[name] = step_seconds(module, batch, args.repeats)
    print(json.dumps({
        "cpu_seconds_per_step": {k: round(v, 3) for k, v in seconds.items()},
        "decoder_share_of_step": round(1 - seconds["decoder_skipped"] / seconds["decoder_run"], 3),
        "threads": torch.get_num_threads(),
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
