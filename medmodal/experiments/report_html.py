"""One self-contained ``report.html`` of a benchmark (opens offline: images are embedded as base64).

Rendered with Jinja2 (autoescaped) from ``summary.json`` and the PNGs of
:mod:`medmodal.experiments.plots`. Sections: the comparison table (seed mean +- sd,
bootstrap CIs, difference to the best unimodal baseline with its CI and p-values),
missing-modality robustness, per-site and leave-one-site-out results, per-label
AUROC with prevalence, calibration, the data summary and the exact configs.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import jinja2
import yaml

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>medmodal benchmark: {{ grid.name }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;line-height:1.4}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}tr.best td{background:#eef6ee}.yes{color:#075e07;font-weight:bold}.no{color:#8a1c1c}
img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}pre{background:#f7f7f7;padding:0.8em;overflow:auto;font-size:0.8em}
.note{color:#555;font-size:0.9em}
</style></head><body>
<h1>Benchmark: {{ grid.name }}</h1>
<p>{{ grid.description }}</p>
<p class="note">Data: <code>{{ data }}</code> &middot; test studies: {{ n_test }} &middot; seeds: {{ grid.seeds|join(", ") }}
&middot; {{ "%.0f"|format(confidence * 100) }}% bootstrap intervals over test studies ({{ resamples }} resamples, {{ method }}).</p>

<h2>Does fusion help?</h2>
{% if verdicts %}<ul>{% for v in verdicts %}<li class="{{ 'yes' if v.both else 'no' }}">{{ v.text }}</li>{% endfor %}</ul>{% endif %}
<table><tr><th class="l">model</th><th class="l">inputs</th><th>AUROC macro<br>mean &plusmn; sd (seeds)</th><th>AUROC macro<br>{{ ci_label }}</th>
<th>F1 macro<br>mean &plusmn; sd</th><th>F1 macro<br>{{ ci_label }}</th><th>AUROC micro</th><th>ECE</th>
<th>&Delta; AUROC vs {{ best or "-" }}<br>{{ ci_label }}</th><th>bootstrap p</th><th>DeLong p<br>(max over seeds)</th></tr>
{% for r in table %}<tr class="{{ 'best' if r.model == best else '' }}"><td class="l">{{ r.model }}</td><td class="l">{{ r.role }}</td>
<td>{{ r.auroc }}</td><td>{{ r.auroc_ci }}</td><td>{{ r.f1 }}</td><td>{{ r.f1_ci }}</td><td>{{ r.micro }}</td><td>{{ r.ece }}</td>
<td>{{ r.diff }}</td><td>{{ r.p_boot }}</td><td>{{ r.p_delong }}</td></tr>{% endfor %}
</table>
<p class="note">Rows: one per model, condition "full" (both modalities where the model uses them). Intervals are of
the seed-averaged metric; &Delta; is fusion minus the best unimodal model (highest mean AUROC), paired over the same studies.
The row of the best unimodal model is shaded.</p>
{% if comparisons %}<details><summary>Every fusion model against every unimodal baseline</summary>
<table><tr><th class="l">fusion</th><th class="l">baseline</th><th>&Delta; AUROC macro ({{ ci_label }})</th><th>p (bootstrap)</th>
<th>&Delta; F1 macro ({{ ci_label }})</th><th>DeLong p per seed</th></tr>
{% for c in comparisons %}<tr><td class="l">{{ c.fusion }}</td><td class="l">{{ c.baseline }}</td><td>{{ c.auroc }}</td><td>{{ c.p }}</td>
<td>{{ c.f1 }}</td><td>{{ c.delong }}</td></tr>{% endfor %}</table></details>{% endif %}
<img src="data:image/png;base64,{{ images.roc }}" alt="ROC curves">

<h2>Missing modalities</h2>
<p class="note">The same trained models, evaluated with the image or the text hidden for a random fraction of the test studies
(the same studies for every model). AUROC macro, mean over seeds.</p>
{{ robustness_table }}
<img src="data:image/png;base64,{{ images.robustness }}" alt="robustness curves">

<h2>Sites</h2>
{{ site_table }}
{% if loso %}<h3>Leave one site out</h3>
<p class="note">Trained without the held-out site; in-site = test studies of the training sites, out-of-site = every study of
the held-out site.</p>
<table><tr><th class="l">model</th><th class="l">held-out site</th><th>in-site AUROC ({{ ci_label }})</th><th>out-of-site AUROC ({{ ci_label }})</th><th>in - out</th></tr>
{% for e in loso %}<tr><td class="l">{{ e.model }}</td><td class="l">{{ e.site }}</td><td>{{ e.ins }}</td><td>{{ e.outs }}</td><td>{{ e.drop }}</td></tr>{% endfor %}
</table>{% endif %}
<img src="data:image/png;base64,{{ images.per_site }}" alt="per-site results">

<h2>Per label (class imbalance)</h2>
{{ label_table }}

<h2>Calibration</h2>
<img src="data:image/png;base64,{{ images.reliability }}" alt="reliability diagram">

<h2>Data</h2>
<pre>{{ data_summary }}</pre>
<h2>Configurations</h2>
<details><summary>Grid</summary><pre>{{ grid_yaml }}</pre></details>
{% for name, text in configs.items() %}<details><summary>{{ name }}</summary><pre>{{ text }}</pre></details>{% endfor %}
<p class="note">Written by <code>medmodal benchmark</code>. Every number is in results.csv / summary.json next to this file.</p>
</body></html>
"""


def _f(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _mean_sd(entry: dict[str, Any]) -> str:
    if entry.get("mean") is None:
        return "–"
    return _f(entry["mean"]) + ("" if entry.get("sd") is None else f" &plusmn; {entry['sd']:.3f}")


def _ci(interval: dict[str, Any], signed: bool = False) -> str:
    est = interval.get("estimate")
    if est is None:
        return "–"
    fmt = "{:+.3f}" if signed else "{:.3f}"
    if interval.get("low") is None:
        return fmt.format(est)
    return f"{fmt.format(est)} [{fmt.format(interval['low'])}, {fmt.format(interval['high'])}]"


def _p(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2g}" if value >= 1e-4 else f"{value:.1e}"


def _main_table(summary: dict[str, Any]) -> list[dict[str, Any]]:
    best = summary["best_unimodal"]
    vs_best = {c["fusion"]: c for c in summary["comparisons"] if c["baseline"] == best}
    rows = []
    for model, e in summary["models"].items():
        full = e["conditions"]["full"]
        comp = vs_best.get(model)
        rows.append(
            {
                "model": model,
                "role": {"image": "image only", "text": "text only", "fusion": "image + text"}[e["role"]],
                "auroc": _mean_sd(full["auroc_macro"]),
                "auroc_ci": _ci(e["ci"]["auroc_macro"]),
                "f1": _mean_sd(full["f1_macro"]),
                "f1_ci": _ci(e["ci"]["f1_macro"]),
                "micro": _f(full["auroc_micro"]["mean"]),
                "ece": _f(full["ece"]["mean"]),
                "diff": _ci(comp["paired"]["auroc_macro"]["difference"], signed=True) if comp else "",
                "p_boot": _p(comp["paired"]["auroc_macro"]["p_value"]) if comp else "",
                "p_delong": _p(comp["delong_p_max"]) if comp else "",
            }
        )
    return rows


def _verdicts(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Per fusion model: does it beat every unimodal baseline with an AUROC CI excluding 0?"""
    by_fusion: dict[str, list[dict[str, Any]]] = {}
    for c in summary["comparisons"]:
        by_fusion.setdefault(c["fusion"], []).append(c)
    verdicts = []
    for fusion, comps in by_fusion.items():
        both = all(c["fusion_better"] for c in comps)
        parts = ", ".join(
            f"{_ci(c['paired']['auroc_macro']['difference'], signed=True)} vs {c['baseline']}" for c in comps
        )
        word = "beats" if both else "does not beat"
        verdicts.append(
            {
                "both": both,
                "text": f"{fusion} {word} every unimodal baseline with a CI above 0 (Δ AUROC macro {parts}).",
            }
        )
    return verdicts


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th{' class=l' if i == 0 else ''}>{h}</th>" for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f"<td{' class=l' if i == 0 else ''}>{c}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return jinja2.utils.markupsafe.Markup(f"<table><tr>{head}</tr>{body}</table>")


def _escape(text: str) -> str:
    return str(jinja2.utils.markupsafe.escape(text))


def _robustness_table(summary: dict[str, Any]) -> str:
    header, rows = ["model"], {m: [_escape(m)] for m in summary["models"]}
    for modality, curve in summary["robustness"].items():
        for i, p in enumerate(curve["fractions"]):
            header.append(f"no {modality}<br>p = {p:g}")
            for model, values in curve["models"].items():
                rows[model].append(_f(values["mean"][i]))
    return _html_table(header, list(rows.values()))


def _site_table(summary: dict[str, Any]) -> str:
    sites = sorted({s for v in summary["per_site"].values() for s in v})
    rows = [[_escape(m)] + [_f(v.get(s)) for s in sites] for m, v in summary["per_site"].items()]
    return _html_table(["model (AUROC macro per test site)"] + [_escape(s) for s in sites], rows)


def _label_table(summary: dict[str, Any]) -> str:
    pl = summary["per_label"]
    header = ["label", "test prevalence"] + [_escape(m) for m in pl["auroc"]]
    rows = [
        [_escape(lb), _f(pl["prevalence"][lb])] + [_f(pl["auroc"][m][lb]) for m in pl["auroc"]]
        for lb in pl["labels"]
    ]
    return _html_table(header, rows)


def _loso(summary: dict[str, Any]) -> list[dict[str, str]]:
    def cell(e: dict[str, Any] | None) -> str:
        if not e:
            return "–"
        return (
            _ci({"estimate": e["auroc_macro"], "low": e["ci_low"], "high": e["ci_high"]})
            + f" (n={e['n_studies']})"
        )

    return [
        {
            "model": e["model"],
            "site": e["held_out_site"],
            "ins": cell(e.get("in_site")),
            "outs": cell(e.get("out_of_site")),
            "drop": _f(e.get("drop")),
        }
        for e in summary["loso"]
    ]


def render_report(summary: dict[str, Any], plots_dir: Path) -> str:
    """The report HTML of a benchmark summary (see :func:`write_report`)."""
    settings = summary["grid"]["evaluation"]
    images = {
        k: base64.b64encode((plots_dir / name).read_bytes()).decode() for k, name in summary["plots"].items()
    }
    level = settings["confidence"]
    comparisons = [
        {
            "fusion": c["fusion"],
            "baseline": c["baseline"],
            "auroc": _ci(c["paired"]["auroc_macro"]["difference"], signed=True),
            "p": _p(c["paired"]["auroc_macro"]["p_value"]),
            "f1": _ci(c["paired"]["f1_macro"]["difference"], signed=True),
            "delong": ", ".join(_p(d["p_value"]) for d in c["delong_per_seed"]),
        }
        for c in summary["comparisons"]
    ]
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["format"] = lambda fmt, *a: fmt % a
    return env.from_string(TEMPLATE).render(
        grid=summary["grid"],
        data=summary["data"],
        confidence=level,
        resamples=settings["bootstrap_resamples"],
        method=settings["bootstrap_method"],
        ci_label=f"{level * 100:.0f}% CI",
        n_test=summary["data_summary"].get("split_counts", {}).get("test", "?"),
        best=summary["best_unimodal"],
        table=[{k: jinja2.utils.markupsafe.Markup(v) for k, v in r.items()} for r in _main_table(summary)],
        verdicts=_verdicts(summary),
        comparisons=comparisons,
        images=images,
        robustness_table=_robustness_table(summary),
        site_table=_site_table(summary),
        loso=_loso(summary),
        label_table=_label_table(summary),
        data_summary=json.dumps(summary["data_summary"], indent=2),
        grid_yaml=yaml.safe_dump(summary["grid"], sort_keys=False),
        configs={m: yaml.safe_dump(c, sort_keys=False) for m, c in summary["configs"].items()},
    )


def write_report(out: str | Path) -> Path:
    """Write ``out/report.html`` from ``out/summary.json`` and ``out/plots/``."""
    out = Path(out)
    summary = json.loads((out / "summary.json").read_text())
    path = out / "report.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(render_report(summary, out / "plots"), encoding="utf-8")
    tmp.replace(path)
    return path
