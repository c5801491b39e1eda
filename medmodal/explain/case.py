"""Everything explained for one study: ``medmodal explain RUN --image X [--text ...] --out DIR``.

Writes to ``DIR``:

- ``explanation.json``: the prediction (as ``medmodal predict`` gives it, with conflicts), the
  modality contributions, the word weights and the decoder's sentences;
- ``saliency_<finding>.png``: Grad-CAM (or occlusion) over the input image per explained finding;
- ``sentence_<k>.png``: decoder attention over the image for the k-th generated sentence (none, and
  ``sentence_maps`` saying why, when the report is retrieved or the decoder has no attention map);
- ``text.html``: the input text highlighted by word weight;
- ``case.html``: one self-contained page with all of the above.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medmodal.data.dataset import denormalize_image
from medmodal.data.inputs import study_from_inputs
from medmodal.explain.image import NoAttentionMap, decoder_attention_by_sentence, image_saliency
from medmodal.explain.modality import modality_contributions
from medmodal.explain.render import case_page_html, highlighted_text_html, overlay_png, write_images
from medmodal.explain.text import explain_text


def classes_to_explain(
    labels: Sequence[str],
    probabilities: dict[str, float],
    predicted: Sequence[str],
    requested: Sequence[str] | None,
) -> list[int]:
    """Indices of the findings to explain: ``requested`` if given, else the predicted ones,
    else the single most probable finding (so a negative study still gets a map)."""
    if requested:
        unknown = [r for r in requested if r not in labels]
        if unknown:
            raise ValueError(f"unknown finding(s) {unknown}; the run's labels are {list(labels)}")
        return [labels.index(r) for r in requested]
    if predicted:
        return [labels.index(p) for p in predicted]
    return [max(range(len(labels)), key=lambda i: probabilities[labels[i]])]


def explain_study(
    predictor: Any,
    image: str | Path | None,
    text: str | None,
    out_dir: str | Path,
    *,
    labels: Sequence[str] | None = None,
    text_method: str = "auto",
    image_method: str = "gradcam",
) -> dict[str, Any]:
    """Explain one study with a :class:`~medmodal.serving.predictor.Predictor`; returns the record
    written to ``explanation.json`` (files listed in the module docstring)."""
    trained = predictor.trained
    model, tokenizer, names = trained.model, trained.tokenizer, trained.labels
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    case: dict[str, Any] = {
        "run": str(trained.run.root),
        "image": str(image) if image else None,
        **predictor.predict(image=image, text=text),
    }
    study = study_from_inputs(image, text, trained.config.data.text_fields)
    batch = predictor.batch_for(study)
    explained = classes_to_explain(names, case["labels"], case["predicted"], labels)
    case["explained"] = [names[c] for c in explained]
    has_image, has_text = bool(batch["has_image"][0]), bool(batch["has_text"][0])
    images: dict[str, bytes] = {}

    if model.modalities == "both":
        case["contributions"] = modality_contributions(model, batch).as_rows(names)
    if has_text and model.text_encoder is not None:
        entries = explain_text(model, batch, tokenizer, names, explained, method=text_method)
        case["text"] = [vars(e) for e in entries]
        (out_dir / "text.html").write_text(
            "<!doctype html><meta charset='utf-8'>\n"
            + "\n".join(
                f"<p>{e.method}{' for ' + e.label if e.label else ''}: "
                f"{highlighted_text_html(e.tokens, e.weights, signed=e.method != 'attention')}</p>"
                for e in entries
            )
        )
    if has_image and model.image_encoder is not None:
        picture = denormalize_image(batch["image"][0, 0]).clamp(0, 1).cpu().numpy()
        maps = image_saliency(model, batch, explained, image_method)[0].cpu().numpy()
        for k, c in enumerate(explained):
            title = f"{image_method}: {names[c]} (p={case['labels'][names[c]]:.2f})"
            images[f"saliency_{names[c]}"] = overlay_png(picture, maps[k], title)
        if model.decoder is not None:
            cfg = trained.config.evaluate
            try:
                sentences = decoder_attention_by_sentence(
                    model, batch, tokenizer, max_len=cfg.max_generate_tokens
                )[0]
            except NoAttentionMap as err:  # the report is in case["report"]; say why it has no maps
                sentences = []
                case["sentence_maps"] = str(err)
            case["sentences"] = [s.text for s in sentences]
            for k, sentence in enumerate(sentences):
                images[f"sentence_{k + 1:02d}"] = overlay_png(
                    picture, sentence.attention.cpu().numpy(), _wrap(sentence.text)
                )
    write_images(images, out_dir)
    (out_dir / "case.html").write_text(case_page_html(case, images))
    (out_dir / "explanation.json").write_text(json.dumps(case, indent=2))
    return case


def _wrap(text: str, width: int = 42) -> str:
    """Break a title into lines of at most ``width`` characters (matplotlib does not wrap)."""
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])
