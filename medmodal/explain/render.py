"""Rendering: saliency overlays as PNG (matplotlib, Agg backend), highlighted text as HTML, and
one self-contained HTML case page (images embedded as data URIs; no external files or scripts)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def overlay_png(
    image: np.ndarray,
    saliency: np.ndarray | None,
    title: str = "",
    box: Sequence[float] | None = None,
    alpha: float = 0.45,
) -> bytes:
    """PNG bytes of ``image`` [H, W] in [0, 1] in grey with ``saliency`` [H, W] (scaled to its
    maximum) as a 'jet' overlay, and an optional normalised box (x0, y0, x1, y1) outline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    height, width = image.shape
    figure, axis = plt.subplots(figsize=(3.2, 3.4), dpi=100)
    axis.imshow(image, cmap="gray", vmin=0.0, vmax=1.0)
    if saliency is not None:
        peak = float(np.max(saliency)) or 1.0
        axis.imshow(saliency / peak, cmap="jet", alpha=alpha, vmin=0.0, vmax=1.0)
    if box is not None:
        x0, y0, x1, y1 = box
        axis.add_patch(
            Rectangle(
                (x0 * width - 0.5, y0 * height - 0.5),
                (x1 - x0) * width,
                (y1 - y0) * height,
                fill=False,
                edgecolor="lime",
                linewidth=1.5,
            )
        )
    axis.set_title(title, fontsize=8)
    axis.axis("off")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def highlighted_text_html(tokens: Sequence[str], weights: Sequence[float], signed: bool = False) -> str:
    """Tokens as ``<span>``s whose background shows the weight (scaled to the largest |weight|):
    orange for positive, blue for negative (``signed``); the weight in the tooltip."""
    peak = max((abs(w) for w in weights), default=0.0) or 1.0
    spans = []
    for token, weight in zip(tokens, weights):
        strength = abs(weight) / peak
        colour = "255,140,0" if (weight >= 0 or not signed) else "30,110,255"
        spans.append(
            f'<span class="tok" title="{weight:.4f}" style="background:rgba({colour},{strength:.3f})">'
            f"{html.escape(token)}</span>"
        )
    return " ".join(spans)


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1100px;color:#222}
h1{font-size:1.4em} h2{font-size:1.1em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em} td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
td:first-child,th:first-child{text-align:left} .pos{color:#b35900} .neg{color:#1e5fd0}
.tok{padding:1px 2px;border-radius:3px;line-height:1.9} .maps img{margin:.3em;border:1px solid #eee}
.warn{background:#fff3cd;border:1px solid #e0b000;padding:.6em;border-radius:4px} .note{color:#666;font-size:.85em}
"""


def _signed(value: float) -> str:
    css = "pos" if value > 0 else "neg" if value < 0 else ""
    return f'<td class="{css}">{value:+.3f}</td>'


def case_page_html(case: dict[str, Any], images: dict[str, bytes]) -> str:
    """The HTML case page for one explained study.

    Args:
        case: the explanation record (see :func:`medmodal.explain.case.explain_study`).
        images: name -> PNG bytes, embedded inline.
    """
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>medmodal explanation</title><style>{_STYLE}</style></head><body>"
    ]
    parts.append("<h1>Why did the model decide?</h1>")
    parts.append(
        f"<p class='note'>run: {html.escape(str(case.get('run', '')))} &middot; "
        f"image: {html.escape(str(case.get('image') or '-'))} &middot; threshold {case['threshold']}</p>"
    )
    for conflict in case.get("conflicts", []):
        parts.append(
            f"<p class='warn'><b>Conflict on {html.escape(conflict['label'])}:</b> the image-only view says "
            f"{conflict['image_probability']:.2f}, the text-only view {conflict['text_probability']:.2f} "
            f"({html.escape(case.get('conflict_view', ''))} view). Review both sources.</p>"
        )
    parts.append("<h2>Predictions and modality contributions</h2>")
    contributions = {row["label"]: row for row in case.get("contributions", [])}
    header = "<tr><th>finding</th><th>probability</th>"
    if contributions:
        header += "<th>base (no input)</th><th>image</th><th>text</th>"
    parts.append("<table>" + header + "</tr>")
    for label, probability in case["labels"].items():
        mark = " <b>&#10003;</b>" if label in case["predicted"] else ""
        row = f"<tr><td>{html.escape(label)}{mark}</td><td>{probability:.3f}</td>"
        if label in contributions:
            c = contributions[label]
            row += f"<td>{c['base']:.3f}</td>{_signed(c['image'])}{_signed(c['text'])}"
        parts.append(row + "</tr>")
    parts.append("</table>")
    if contributions:
        parts.append(
            "<p class='note'>Shapley values over the two modalities: base + image + text = probability; "
            "a missing modality is replaced by the model's learned placeholder.</p>"
        )
    if "text" in case:
        parts.append("<h2>Text</h2>")
        for entry in case["text"]:
            title = f"{entry['method']}" + (f" for {entry['label']}" if entry.get("label") else "")
            parts.append(
                f"<p class='note'>{html.escape(title)}</p><p>"
                + highlighted_text_html(
                    entry["tokens"], entry["weights"], signed=entry["method"] != "attention"
                )
                + "</p>"
            )
    for section, prefix in (
        ("Image: saliency per finding", "saliency_"),
        ("Report: decoder attention per sentence", "sentence_"),
    ):
        names = [n for n in images if n.startswith(prefix)]
        if not names:
            continue
        parts.append(f"<h2>{section}</h2><div class='maps'>")
        parts.extend(f"<img alt='{html.escape(n)}' src='{data_uri(images[n])}'>" for n in names)
        parts.append("</div>")
    if case.get("report"):
        parts.append(f"<h2>Generated report</h2><p>{html.escape(case['report'])}</p>")
    if case.get("sentence_maps"):
        parts.append(f"<p><em>No sentence maps: {html.escape(case['sentence_maps'])}</em></p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_images(images: dict[str, bytes], out_dir: Path) -> list[Path]:
    """Write each PNG as ``out_dir/<name>.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, png in images.items():
        path = out_dir / f"{name}.png"
        path.write_bytes(png)
        paths.append(path)
    return paths
