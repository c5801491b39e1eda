"""A segmentation run against the mean-mask baseline on the same studies, with bootstrap intervals.

Per study and class the Dice of the U-Net's argmax map and of the baseline's map (MONAI
``compute_dice``, background excluded, empty ground truth left out as ``segment evaluate`` does);
the mean Dice (over the studies that have each class, then over the classes) of both, their 95 %
percentile intervals and the paired difference over 1,000 resamples of the studies.

    python benchmarks/segmentation_vs_baseline.py RUN [--data D] [--split test]
"""

from __future__ import annotations

import argparse
import json
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from monai.metrics import compute_dice

from medmodal.evaluation.stats import bootstrap_ci, paired_bootstrap
from medmodal.tasks import common
from medmodal.tasks.segmentation import SegmentationModule, segmentation_dataset
from medmodal.tasks.segmentation_baseline import mean_mask_predictions


def per_study_dice(
    predicted: torch.Tensor, truth: torch.Tensor, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """([N, K-1] Dice per study and finding class, 0 where the study does not have the class;
    [N, K-1] 1 where it has it). The bootstrap helpers take values in [0, 1] and 0/1 targets."""
    one_hot = [F.one_hot(m, num_classes).permute(0, 3, 1, 2).float() for m in (predicted, truth)]
    dice = compute_dice(*one_hot, include_background=False, ignore_empty=True).numpy()
    has = ~np.isnan(dice)
    return np.where(has, dice, 0.0), has.astype(np.int64)


def mean_dice(dice: np.ndarray, has: np.ndarray) -> np.ndarray:
    """[..., N, C] Dice and case flags -> [...]: mean over the studies with each class, then over those classes."""
    cases = np.where(has > 0, dice, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # a resample without a class
        return np.nanmean(np.nanmean(cases, axis=-2), axis=-1)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--data")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    trained = common.load_task(args.run, SegmentationModule)
    config = trained.module.config
    data = args.data or trained.data
    baseline = mean_mask_predictions(data, size=config.image_size, split=args.split)
    manifest = common.read_task_manifest(data)
    dataset = segmentation_dataset(
        manifest.split(args.split), manifest, trained.tokenizer, trained.labels, config
    )
    trained.module.eval()
    unet = torch.cat([trained.module(batch).argmax(dim=1) for batch in common.eval_loader(dataset)])
    num_classes = len(baseline.class_names) + 1
    (unet_dice, has), (baseline_dice, _) = (
        per_study_dice(maps, baseline.truth, num_classes) for maps in (unet, baseline.predicted)
    )
    out = {"run": args.run, "split": args.split, "n_studies": len(unet)}
    for name, values in (("unet", unet_dice), ("baseline", baseline_dice)):
        interval = bootstrap_ci(values, has, mean_dice, seed=0)
        out[name] = {"dice_mean": interval.estimate, "ci_95": [interval.low, interval.high]}
    paired = paired_bootstrap(unet_dice, baseline_dice, has, mean_dice, seed=0)
    out["unet_minus_baseline"] = {
        "difference": paired.difference.estimate,
        "ci_95": [paired.difference.low, paired.difference.high],
        "p_value": paired.p_value,
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
