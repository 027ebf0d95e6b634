"""A shareable report as one self-contained HTML file: `render_report(collect_report(...))`.

Sections, in order: the one-screen summary in plain words, the model and the data, the plan
as a table, per-layer error and size, the most damaged layers' histograms with their grids,
accuracy against size (Pareto front, float model, current plan, history), plan A against
plan B when a plan is pinned, the sensitivity heatmap and the fine-tune curve when they were
computed, and what reproduces the numbers. Figures come from the page builders in this room
(explore, tradeoffs, sensitivity, finetune, compare); the frame is `report_page`.

Every piece of text is escaped here (`esc`); the figures carry user strings only as JSON.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go

from lightviz.analysis.compare import setting_label
from lightviz.analysis.report import ReportData
from lightviz.plots import compare as compare_plots
from lightviz.plots.explore import layer_size_figure, layer_sqnr_figure, weight_histogram_figure
from lightviz.plots.finetune import add_finetuned_points, distill_figure, history_figure
from lightviz.plots.images import safe_filename
from lightviz.plots.report_page import CHART_WIDTH, GAP, esc, page
from lightviz.plots.sensitivity import sensitivity_heatmap
from lightviz.plots.tradeoffs import tradeoff_figure

HALF_WIDTH = (CHART_WIDTH - GAP) // 2


class _Charts:
    """Collects figures by element id and returns the placeholder each one is drawn into."""

    def __init__(self) -> None:
        self.figures: dict[str, go.Figure] = {}

    def add(self, fig: go.Figure, name: str, title: str | None = None, half: bool = False) -> str:
        chart_id = f"chart-{len(self.figures) + 1}"  # `fig` is changed in place: builders return new figures
        if title is not None:
            fig.update_layout(title_text=title)
        fig.update_layout(width=HALF_WIDTH if half else CHART_WIDTH)
        self.figures[chart_id] = fig
        label = title or (fig.layout.title.text or name)
        return (f'<div class="chart" id="{chart_id}" data-filename="{esc(safe_filename("lightviz-" + name))}" '
                f'role="img" aria-label="{esc(label)}"></div>')


def pct(value: float | None, digits: int = 2) -> str:
    """0.98889 -> '98.89 %'; None -> 'n/a'.

    >>> pct(0.98889), pct(None)
    ('98.89 %', 'n/a')
    """
    return "n/a" if value is None else f"{value * 100:.{digits}f} %"


def size_text(n: float) -> str:
    """Bytes in words: '23,610 B (23.1 KiB)'.

    >>> size_text(97152)
    '97,152 B (94.9 KiB)'
    """
    value, unit = float(n), "B"
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024:
            break
    return f"{int(n):,} B" + (f" ({value:,.1f} {unit})" if n >= 1024 else "")


def render_report(report: ReportData) -> str:
    """The whole report as an HTML document (str): open it in any browser, offline."""
    charts = _Charts()
    sections = [_summary(report), _model_and_data(report), _plan(report), _layers(report, charts),
                _damaged(report, charts), _tradeoffs(report, charts), _compare(report, charts),
                _sensitivity(report, charts), _training(report, charts), _reproduce(report)]
    title = f"lightviz report · {report.model.name} · {report.plan_label}"
    return page(title, "\n".join(part for part in sections if part), charts.figures, numbers(report))


def numbers(report: ReportData) -> dict:
    """The report's numbers as JSON (embedded in the file as #lv-numbers, for scripts and tests)."""
    out = {"model": report.model.name, "data": report.data.description, "plan": report.plan.to_dict(),
           "evaluation": report.evaluation.to_dict(),
           "layers": [{"name": row.name, "bits": None if _missing(row.bits) else int(row.bits),
                       "sqnr_db": _finite(row.sqnr_db), "mse": float(row.mse), "size_bytes": int(row.size_bytes)}
                      for row in report.layers.itertuples()]}
    if report.comparison is not None:
        c = report.comparison
        out["comparison"] = {"a": c.eval_a.to_dict(), "b": c.eval_b.to_dict(), "deltas": c.deltas,
                             "plan_a": c.a.to_dict(), "changed_layers": c.changed_layers}
    return _json_safe(out)


# --- sections ---------------------------------------------------------------------------------


def _summary(r: ReportData) -> str:
    ev, data = r.evaluation, r.data
    lm = ev.task == "causal_lm"
    sentence = r.sentence
    if lm:
        fidelity = (f"The compressed model predicts the same next token as the float model for "
                    f"{pct(ev.agreement)} of {ev.n_tokens:,} tokens in {ev.n_samples:,} sequences.")
    else:
        same = round(ev.agreement * ev.n_samples)
        fidelity = (f"The compressed model gives the same answer as the float model on {same:,} of "
                    f"{ev.n_samples:,} inputs ({pct(ev.agreement)}).")
    if r.speed:
        s = r.speed
        speed = (f"Measured speed: {s['float_ms']:.3g} ms → {s['compressed_ms']:.3g} ms per batch"
                 f"{' of ' + esc(s['batch']) if s.get('batch') else ''}"
                 f"{' (' + esc(s['runtime']) + ')' if s.get('runtime') else ''}.")
    else:
        speed = ("Speed was not measured: the size is what a packed file holds; simulated quantization in "
                 "PyTorch does not run faster by itself.")
    headline = (_card("perplexity", "Perplexity", f"{ev.perplexity:.4f}", f"float {ev.float_perplexity:.4f}, "
                      f"{(ev.perplexity / ev.float_perplexity - 1) * 100:+.2f} % (lower is better)") if lm else
                _card("accuracy", "Accuracy", pct(ev.accuracy),
                      "no labels" if ev.accuracy is None else f"float {pct(ev.float_accuracy)}, "
                      f"{(ev.accuracy - ev.float_accuracy) * 100:+.2f} points"))
    cards = [
        headline,
        _card("agreement", "Next-token agreement" if lm else "Agreement with float", pct(ev.agreement),
              f"KL {ev.kl:.4g} nats"),
        _card("size_bytes", "Size", f"{ev.size_bytes:,} B", f"float {ev.float_size_bytes:,} B"),
        _card("compression_ratio", "Compression", f"{ev.compression_ratio:.2f}×", "against float32"),
        _card("avg_bits_per_weight", "Bits per weight", f"{ev.avg_bits_per_weight:.2f}", "float32: 32"),
    ]
    toc = [("model", "Model and data"), ("plan", "Plan"), ("layers", "Per layer"), ("damaged", "Most damaged"),
           ("tradeoffs", f"{'Perplexity' if r.y == 'perplexity' else 'Accuracy'} against size")]
    toc += [("compare", "A against B")] if r.comparison else []
    toc += [("sensitivity", "Sensitivity")] if r.sensitivity is not None else []
    toc += [("training", "Fine-tuning")] if r.training is not None else []
    toc += [("reproduce", "Reproduce")]
    return (f'<header id="summary"><p class="muted">lightviz report · {esc(r.created)}</p>'
            f"<h1>{esc(r.model.name)}: {esc(r.plan_label)}</h1>"
            f'<p class="headline" data-field="summary">{esc(sentence)}.</p>'
            f"<p>{esc(fidelity)} {esc(speed)}</p>"
            f'<div class="cards">{"".join(cards)}</div>'
            f'<p class="note">Model: {esc(r.model.description)}. Data: {esc(data.description)}.</p>'
            '<nav class="toc">' + "".join(f'<a href="#{key}">{esc(text)}</a>' for key, text in toc) + "</nav></header>")


def _card(field: str, label: str, value: str, delta: str) -> str:
    return (f'<div class="card" data-field="{field}"><div class="label">{esc(label)}</div>'
            f'<div class="value">{esc(value)}</div><div class="delta">{esc(delta)}</div></div>')


def _facts(pairs: list[tuple[str, object]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in pairs) + "</dl>"


def _model_and_data(r: ReportData) -> str:
    m, d = r.model, r.data
    model = [("name", m.name), ("what it is", m.description), ("parameters", f"{m.parameters:,}"),
             ("compressible layers", f"{m.layers} ({m.weights:,} weights)"),
             ("float size", size_text(m.float_size_bytes)), ("input shape", " × ".join(map(str, m.input_shape))),
             ("classes", m.num_classes)] + ([("caveat", m.note)] if m.note else [])
    data = [("data", d.description), ("samples", f"{d.n_samples:,}"),
            ("labels", "next tokens of the text: perplexity is measured" if r.y == "perplexity" else
             "yes: accuracy is measured" if d.labeled else "none: only fidelity to the float model")]
    return f'<section id="model"><h2>Model and data</h2>{_facts(model)}<h3>Evaluation data</h3>{_facts(data)}</section>'


def _plan(r: ReportData) -> str:
    p = r.plan
    quant, prune = p.default.quant, p.default.prune
    words = [("every layer, unless listed as overridden", r.plan_label),
             ("range method", quant.range_method + (f" ({quant.percentile:g}th percentile)"
                                                    if quant.range_method == "percentile" else "")),
             ("pruning", f"{prune.label}{', one global threshold' if p.global_prune else ''}"),
             ("BatchNorm", "folded into the preceding layer" if p.fold_bn else "kept separate"),
             ("activations", "float" if p.activations is None else
              f"{p.activations.bits}-bit {p.activations.scheme}, {p.activations.range_method} range, "
              f"calibrated on {p.activations.calib_samples} inputs")]
    overrides = bool(r.layers["overridden"].any())
    heads = ["layer", "shape", "setting", "zeros", "storage", "size (B)", "float (B)", "bits/w", "SQNR (dB)"]
    rows = []
    for row in r.layers.itertuples():
        setting = setting_label(row) + (" *" if row.overridden else "")
        cells = [row.name, f"{row.type} {row.shape.replace('x', '×')}", setting,
                 f"{row.achieved_sparsity:.1%}", row.format, f"{int(row.size_bytes):,}",
                 f"{int(row.float_size_bytes):,}", f"{row.bits_per_weight:.2f}", _db(row.sqnr_db)]
        rows.append(cells)
    note = '<p class="note">* a per-layer override of the plan\'s default.</p>' if overrides else ""
    return (f'<section id="plan"><h2>Plan</h2>{_facts(words)}'
            f'{_table(heads, rows, numeric={3, 5, 6, 7, 8}, table_id="plan-table")}{note}</section>')


def _layers(r: ReportData, charts: _Charts) -> str:
    sqnr = charts.add(layer_sqnr_figure(r.layers), "layer-sqnr", "Weight error per layer (SQNR, higher is better)")
    size = charts.add(layer_size_figure(r.layers), "layer-size", "Storage per layer by part")
    return (f'<section id="layers"><h2>Per layer: error and size</h2>{sqnr}{size}'
            '<p class="note">SQNR compares each compressed weight with its float original (BatchNorm folded when '
            "the plan folds): 6 dB per bit is the rule of thumb; exact layers are drawn at the top. Storage is what "
            "a packed file holds: codes, scales and zero-points, sparse indices, float biases; the red mark is the "
            "float32 size.</p></section>")


def _damaged(r: ReportData, charts: _Charts) -> str:
    if not r.damaged:
        return ('<section id="damaged"><h2>Most damaged layers</h2><p>No layer loses anything: every weight is kept '
                "exactly (float).</p></section>")
    parts = ['<section id="damaged"><h2>Most damaged layers</h2><p class="note">The layers with the lowest weight '
             "SQNR: float weights (outline) against what the plan keeps (filled), the quantization grid dotted and "
             "its clip range shaded. Per-channel or per-group plans have one grid per block: the right chart shows "
             "the block with the largest error.</p>"]
    for layer in r.damaged:
        whole = charts.add(weight_histogram_figure(layer.whole, layer.name, layer.setting), f"hist-{layer.name}",
                           half=layer.block is not None)
        block = "" if layer.block is None else charts.add(
            weight_histogram_figure(layer.block, layer.name, layer.setting), f"hist-{layer.name}-worst",
            f"{layer.name} · worst block: {layer.block.scope}", half=True)
        notes = [h.note for h in (layer.whole, layer.block) if h is not None and h.note]
        saturated = layer.block.saturated if layer.block is not None else layer.whole.saturated
        if saturated:
            notes.append(f"{saturated:,} weights lie outside the clip range and saturate")
        charts_html = f'<div class="pair">{whole}{block}</div>' if block else whole
        parts.append(f"<h3>{esc(layer.name)} · {esc(layer.setting)} · SQNR {esc(_db(layer.sqnr_db))}</h3>{charts_html}"
                     f'<p class="note">{esc("; ".join(notes))}</p>')
    return "".join(parts) + "</section>"


def _tradeoffs(r: ReportData, charts: _Charts) -> str:
    ev, y = r.evaluation, r.y
    float_y, current_y = ev.chart_value(y, floating=True), ev.chart_value(y)
    fig = tradeoff_figure(r.sweep, y, r.front, (ev.float_size_bytes, float_y), (ev.size_bytes, current_y, r.plan_label),
                          r.history)
    if r.training is not None and r.training.kind == "finetune" and r.training.after is not None and y == "accuracy":
        import pandas as pd

        t = r.training
        fig = add_finetuned_points(fig, pd.DataFrame([{"size_bytes": t.size_bytes or ev.size_bytes,
                                                        "accuracy_before": t.before, "accuracy": t.after,
                                                        "label": f"{t.label} · fine-tuned"}]))
    if r.comparison is not None:
        c = r.comparison
        # B is the current plan's star
        fig = compare_plots.add_ab_points(fig, (c.eval_a.size_bytes, c.eval_a.chart_value(y), "A"), None, y)
    what = y if y != "agreement" else "agreement with the float model"
    counts = []
    if r.sweep is not None and len(r.sweep):
        counts.append(f"{len(r.sweep)} uniform plans of a sweep")
    if r.history is not None and len(r.history):
        counts.append(f"{len(r.history)} plans tried in the session")
    shown = " and ".join(counts) if counts else "no sweep and no other plan (run a sweep to fill it)"
    shown += ", plan A (square)" if r.comparison is not None else ""
    chart = charts.add(fig, "tradeoff", f"{what.capitalize()} against size")
    note = (f"Shown: the float model, the current plan (star), {shown}. The Pareto frontier joins the plans that "
            f"no other plan beats on both size and {what}.")
    title = "Perplexity against size" if y == "perplexity" else "Accuracy against size"
    return f'<section id="tradeoffs"><h2>{title}</h2>{chart}<p class="note">{esc(note)}</p></section>'


def _compare(r: ReportData, charts: _Charts) -> str:
    c = r.comparison
    if c is None:
        return ""
    from lightviz.analysis.sweep import plan_label

    label_a, label_b = plan_label(c.a), plan_label(c.b)
    rows = []
    first = ("perplexity", "perplexity", lambda v: f"{v:.4f}") if r.y == "perplexity" else ("accuracy", "accuracy", pct)
    for key, name, fmt in (first, ("agreement", "agreement with float", pct),
                           ("kl", "KL vs float (nats)", lambda v: f"{v:.4g}"),
                           ("size_bytes", "size (bytes)", lambda v: f"{v:,}"),
                           ("compression_ratio", "compression", lambda v: f"{v:.2f}×"),
                           ("avg_bits_per_weight", "bits per weight", lambda v: f"{v:.2f}")):
        a, b, d = c.eval_a.to_dict().get(key), c.eval_b.to_dict().get(key), c.deltas[key]
        delta = "n/a" if d is None else (f"{d * 100:+.2f} points" if fmt is pct else f"{d:+,}" if key == "size_bytes"
                                         else f"{d:+.2f}×" if key == "compression_ratio" else
                                         f"{d:+.2f}" if key == "avg_bits_per_weight" else f"{d:+.4g}")
        rows.append([name, "n/a" if a is None else fmt(a), "n/a" if b is None else fmt(b), delta])
    headline = _table(["", "A", "B", "B − A"], rows, numeric={1, 2, 3}, table_id="ab-table")
    diff_rows = [[row.name, row.setting_a, row.setting_b, _db(row.sqnr_db_a), _db(row.sqnr_db_b),
                  "" if math.isnan(row.sqnr_delta) else f"{row.sqnr_delta:+.2f}", f"{row.size_bytes_a:,}",
                  f"{row.size_bytes_b:,}", f"{row.size_delta:+,}"] for row in c.layers.itertuples()]
    layers = _table(["layer", "A", "B", "SQNR A", "SQNR B", "Δ dB", "size A", "size B", "Δ bytes"], diff_rows,
                    numeric={3, 4, 5, 6, 7, 8}, table_id="ab-layers", changed=c.layers["differs"].tolist())
    sqnr = charts.add(compare_plots.ab_layers_figure(c.layers, "sqnr"), "ab-sqnr", "SQNR per layer (dB): A and B",
                      half=True)
    size = charts.add(compare_plots.ab_layers_figure(c.layers, "size"), "ab-size", "Storage per layer: A and B",
                      half=True)
    hist = "" if r.compare_hist is None else charts.add(
        compare_plots.ab_histogram_figure(r.compare_hist, r.compare_layer, f"A {label_a}", f"B {label_b}"),
        f"ab-hist-{r.compare_layer}")
    return (f'<section id="compare"><h2>Plan A against plan B</h2>'
            f'<p><span class="tag a">A</span> {esc(label_a)} (pinned) &nbsp; <span class="tag b">B</span> '
            f"{esc(label_b)} (the plan of this report)</p>{headline}"
            f"<h3>Per layer (layers set differently are highlighted)</h3>{layers}"
            f'<div class="pair">{sqnr}{size}</div>{hist}</section>')


def _sensitivity(r: ReportData, charts: _Charts) -> str:
    df = r.sensitivity
    if df is None or not len(df):
        return ""
    column = ("perplexity_increase" if "perplexity_increase" in df else
              "accuracy_drop" if df["accuracy"].notna().all() else "kl")
    chart = charts.add(sensitivity_heatmap(df, column), "sensitivity")
    n = int(df["n_samples"].iloc[0])
    note = (f"Each cell compresses one layer alone (every other layer float) and measures the model on {n:,} "
            "inputs: where precision matters, and where it does not.")
    return f'<section id="sensitivity"><h2>Sensitivity per layer</h2>{chart}<p class="note">{esc(note)}</p></section>'


def _training(r: ReportData, charts: _Charts) -> str:
    t = r.training
    if t is None:
        return ""
    epochs = int(t.settings.get("epochs") or (t.history["epoch"].max() if len(t.history) else 1))
    lm = "test_perplexity" in t.history
    if lm:
        from lightviz.plots.lm import history_figure as lm_history_figure

        figure = lm_history_figure(t.history, before=t.before, float_perplexity=t.float_accuracy, epochs=epochs)
    else:
        figure = history_figure(t.history, before=t.before if t.kind == "finetune" else None,
                                float_accuracy=t.float_accuracy, epochs=epochs)
    curve = charts.add(figure, "training")
    extra = "" if t.distill_table is None else charts.add(distill_figure(t.distill_table), "distillation")
    settings = ", ".join(f"{k} {v}" for k, v in t.settings.items())
    if t.kind == "finetune" and lm:
        text = (f"Quantization-aware fine-tuning of {t.label}: perplexity {t.before:.4f} before, {t.after:.4f} after "
                f"(float {t.float_accuracy:.4f}; lower is better). Settings: {settings}.")
    elif t.kind == "finetune":
        text = (f"Quantization-aware fine-tuning of {t.label}: accuracy {pct(t.before)} before, {pct(t.after)} after "
                f"(float {pct(t.float_accuracy)}). Settings: {settings}.")
    else:
        text = f"Distillation {t.label}. Settings: {settings}."
    return (f'<section id="training"><h2>Fine-tuning</h2>{curve}{extra}<p class="note">{esc(text)}</p>'
            "</section>")


def _reproduce(r: ReportData) -> str:
    x = r.reproducibility
    parts = [f'<section id="reproduce"><h2>Reproduce these numbers</h2>{_facts(list(x.versions.items()))}',
             f"<h3>Seeds</h3>{_facts(list(x.seeds.items()))}",
             "<h3>The command</h3><p>It prints the numbers of this report as JSON:</p>"
             f'<pre id="command">{esc(x.command)}</pre>',
             f'<p>This report again:</p><pre id="report-command">{esc(x.report_command)}</pre>']
    if x.caveat:
        parts.append(f'<p class="note">{esc(x.caveat)}</p>')
    parts.append(f'<h3>Plan (JSON)</h3><pre id="plan-json">{esc(x.plan_json)}</pre>')
    if x.plan_a_json:
        parts.append(f'<h3>Plan A (JSON)</h3><pre id="plan-a-json">{esc(x.plan_a_json)}</pre>')
    parts.append('<footer>Made with lightviz. This file is self-contained: charts are drawn by the Plotly library '
                 "inlined above, nothing is loaded from the network. Hover a chart for its PNG and SVG downloads."
                 "</footer></section>")
    return "".join(parts)


# --- helpers ----------------------------------------------------------------------------------


def _table(heads: list[str], rows: list[list[object]], numeric: set[int] = frozenset(), table_id: str = "",
           changed: list[bool] | None = None) -> str:
    head = "".join(f'<th class="num">{esc(h)}</th>' if i in numeric else f"<th>{esc(h)}</th>"
                   for i, h in enumerate(heads))
    body = []
    for n, row in enumerate(rows):
        cls = ' class="changed"' if changed and changed[n] else ""
        body.append(f"<tr{cls}>" + "".join(f'<td class="num">{esc(v)}</td>' if i in numeric else f"<td>{esc(v)}</td>"
                                           for i, v in enumerate(row)) + "</tr>")
    return (f'<div class="table-wrap"><table id="{esc(table_id)}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _db(value: float) -> str:
    value = float(value)
    return "exact" if math.isinf(value) and value > 0 else f"{value:.2f}"


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
