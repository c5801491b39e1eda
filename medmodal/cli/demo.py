"""``medmodal demo``: the whole path on the built-in data, in a few minutes on a laptop CPU.

1. writes the synthetic dataset (``OUT/data``) unless it is there already;
2. trains an image-only, a text-only and a fused model with the same budget and the
   ``stacked_retrieved`` recipe (``OUT/image_only``, ``OUT/text_only``, ``OUT/fused``; each resumes if interrupted);
3. fits the simple scikit-learn baselines on the same splits (seconds; ``OUT/baseline_*``,
   docs/baselines.md): TF-IDF / pixel logistic regression, a linear probe on frozen encoder
   features, their late fusion, the mean training box and nearest / template reports;
4. evaluates each on the test split and writes ``OUT/comparison.md`` / ``.json``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from medmodal.config import Config, apply_overrides
from medmodal.models.presets import preset_config
from medmodal.runs import write_json_atomic

log = logging.getLogger(__name__)

VARIANTS = (("image_only", "image"), ("text_only", "text"), ("fused", "both"))
# The deep models' recipe: the default model with the logistic regressions stacked inside it
# (medmodal/training/wide_stacking.py), reports retrieved by their expected reading and a refitted
# box head (medmodal/models/report_bank.py, training/localization_refit.py); chosen on the validation
# split and independent synthetic draws (docs/diagnosis.md, rounds 3-6).
DEEP_RECIPE = "stacked_retrieved"
# (row / run folder, config overrides): each baseline row also carries a box and a report baseline
# where one applies, so every column of the table has a simple reference.
BASELINES = (
    (
        "baseline_text",
        {
            "baseline.classifier": "tfidf_logreg",
            "baseline.boxes": "mean_box",
            "baseline.report": "nearest_report",
        },
    ),
    ("baseline_image", {"baseline.classifier": "pixel_logreg", "baseline.boxes": "mean_box"}),
    ("baseline_probe", {"baseline.classifier": "linear_probe"}),
    (
        "baseline_fused",
        {
            "baseline.classifier": "late_fusion",
            "baseline.boxes": "mean_box",
            "baseline.report": "template_report",
        },
    ),
)
BASELINE_NOTE = (
    "Baselines (scikit-learn, fitted on the training split, C and report thresholds chosen on validation): "
    "baseline_text = TF-IDF 1-2-gram logistic regression on the indication + mean training box per finding "
    "+ nearest training report by TF-IDF cosine; baseline_image = logistic regression on 32x32 pixels + mean box; "
    "baseline_probe = logistic regression on frozen random small_cnn features; baseline_fused = mean of the "
    "text and pixel probabilities + mean box + template sentences of the predicted findings."
)
COLUMNS = (
    ("classification", "auroc_macro", "AUROC (macro)"),
    ("classification", "f1_macro", "F1 (macro)"),
    ("localization", "iou_mean", "IoU (mean)"),
    ("localization", "hit_at_0_5", "hit@0.5"),
    ("localization", "map_50", "mAP@0.5"),
    ("generation", "bleu_4", "BLEU-4"),
    ("generation", "rouge_l", "ROUGE-L"),
    ("generation", "cider", "CIDEr"),
    ("generation", "ce_f1", "CE F1"),
)


def comparison_table(results: dict[str, dict]) -> str:
    """Markdown table: one row per model, the headline metric of each task."""
    header = "| model | " + " | ".join(c[2] for c in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, metrics in results.items():
        cells = []
        for section, key, _ in COLUMNS:
            value = metrics.get(section, {}).get(key)
            cells.append("–" if value is None else f"{value:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_demo(out: Path, *, n: int = 1000, epochs: int = 6, seed: int = 0) -> dict[str, dict]:
    from medmodal.data.synthetic import generate_dataset
    from medmodal.evaluation.evaluate import evaluate_run
    from medmodal.training.baselines import fit_baseline
    from medmodal.training.trainer import train

    start = time.time()
    out = out.resolve()
    data = out / "data"
    if not (data / "manifest.csv").exists():
        print(f"[demo] writing {n} synthetic studies to {data}")
        generate_dataset(data, n=n, seed=seed, progress=True)
    results: dict[str, dict] = {}
    for name, modalities in VARIANTS:
        config = apply_overrides(
            preset_config(DEEP_RECIPE),
            {"model.modalities": modalities, "train.epochs": epochs, "train.seed": seed},
        )
        run = out / name
        if not (run / "training_done.json").exists():
            print(f"[demo] training {name} ({modalities}) -> {run}")
            train(data, config, run)
        print(f"[demo] evaluating {name} on the test split")
        results[name] = evaluate_run(run, data, split="test", progress=True)
    for name, overrides in BASELINES:
        config = apply_overrides(Config(), {**overrides, "train.seed": seed})
        run = out / name
        if not (run / "training_done.json").exists():
            print(f"[demo] fitting {name} ({overrides['baseline.classifier']}) -> {run}")
            fit_baseline(data, config, run, force=True)
        print(f"[demo] evaluating {name} on the test split")
        results[name] = evaluate_run(run, data, split="test", progress=True)
    table = comparison_table(results)
    (out / "comparison.md").write_text(
        f"Test split of the built-in data ({n} studies, seed {seed}), {epochs} epochs each.\n\n{table}\n\n{BASELINE_NOTE}\n"
    )
    write_json_atomic(
        out / "comparison.json",
        {
            k: {s: v.get(s) for s in ("classification", "localization", "generation")}
            for k, v in results.items()
        },
    )
    print("\n" + table)
    print(
        f"\n[demo] done in {time.time() - start:.0f} s. Results: {out}/comparison.md; "
        f"per-model metrics.json, predictions/test.jsonl, checkpoints and logs under {out}/<model>/"
    )
    print(
        f'[demo] try: medmodal predict {out}/fused --image {data}/images/<id>.png --text "History of heart failure."'
    )
    return results
