"""Copy a stacked run (``model.wide.fit: stacked``) with its deep head switched off: the stacked
logistic regressions alone, to measure what the deep parts add on the same studies.

The copy's checkpoints get ``model.deep_weight = 0`` (in eval mode the model's logits are then the
stacked pathways' only; medmodal/training/wide_stacking.py); nothing else changes. Evaluate it like
any run, then compare with the paired bootstrap of ``baseline_cis.py``:

    .venv/bin/python benchmarks/stacked_only.py runs/demo/fused runs/demo/fused_stacked_only
    .venv/bin/medmodal evaluate runs/demo/fused_stacked_only --data runs/demo/data --split test
    .venv/bin/python benchmarks/baseline_cis.py runs/demo/fused runs/demo/fused_stacked_only \
        --versus fused:fused_stacked_only
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, help="a trained run folder with stacked wide pathways")
    parser.add_argument("out", type=Path, help="the copy to write (replaced if it exists)")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    shutil.copytree(args.run, args.out, ignore=shutil.ignore_patterns("metrics*.json", "predictions"))
    for checkpoint in sorted((args.out / "checkpoints").glob("*.ckpt")):
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        weights = state["state_dict"]
        if "model.deep_weight" not in weights:
            raise SystemExit(f"{args.run}: not a stacked run (no model.deep_weight in {checkpoint.name})")
        print(f"{checkpoint.name}: deep weight {float(weights['model.deep_weight']):g} -> 0")
        weights["model.deep_weight"] = torch.tensor(0.0)
        torch.save(state, checkpoint)


if __name__ == "__main__":
    main()
