"""The frame of a self-contained HTML report: one inlined copy of Plotly's JavaScript, the
figures as one JSON block, a stylesheet for screen and print, and a loader that draws them.

One copy of Plotly: the library (`plotly.offline.get_plotlyjs()`, about 4.7 MB) is written
once, in the head; figures are not exported with `fig.to_html` (which can carry the library
with each figure) but collected as plain JSON into one `<script type="application/json">`
block, and one small loader calls `Plotly.newPlot` for each chart. Nothing is fetched: no CDN,
no fonts, no images; the file works offline from a USB stick.

Safety: all text goes through `html.escape` before it reaches the page (`esc`); figure JSON is
embedded with `<`, `>` and `&` written as JSON escapes, so no string can close the script.

>>> block = figures_block({"fig-1": go.Figure(layout=dict(title=dict(text="</script><b>")))})
>>> block.count("</script>"), block.count("<b>")  # only the element's own end tag
(1, 0)
"""

from __future__ import annotations

import functools
import html
import json

import plotly.graph_objects as go
import plotly.io as pio
from plotly.io.json import to_json_plotly
from plotly.offline import get_plotlyjs

from lightviz.plots.images import DEFAULT_SIZE, IMAGE_SIZES

CHART_WIDTH = 940  # px: a full-width chart; half-width charts are (CHART_WIDTH - GAP) / 2
GAP = 20
TEMPLATE = "plotly_white"  # written once; each figure gets it in the browser
PRINT_ZOOM = 0.74  # charts in print: 940 px * 0.74 fits an A4 or Letter page's width with margins


def esc(value: object) -> str:
    """Any value as HTML text (quotes escaped too, so it is safe in attributes).

    >>> esc('<img src=x onerror="alert(1)">')
    '&lt;img src=x onerror=&quot;alert(1)&quot;&gt;'
    """
    return html.escape(str(value), quote=True)


@functools.lru_cache(maxsize=1)
def _template_json() -> str:
    return to_json_plotly(pio.templates[TEMPLATE].to_plotly_json(), engine="json")


@functools.lru_cache(maxsize=1)
def plotly_js() -> str:
    """Plotly's JavaScript bundle (read once per process), safe inside a script element."""
    return get_plotlyjs().replace("</script", "<\\/script")


def safe_json(text: str) -> str:
    """JSON text that cannot end a script element or open a comment (same value when parsed)."""
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def figures_block(figures: dict[str, go.Figure]) -> str:
    """The figures, by element id, as one JSON script element; their shared template once."""
    charts = []
    for key, fig in figures.items():
        data = fig.to_plotly_json()
        data["layout"].pop("template", None)  # the shared one is set in the browser
        charts.append(f"{json.dumps(key)}:{to_json_plotly(data, engine='json')}")
    payload = f'{{"template":{_template_json()},"figures":{{{",".join(charts)}}}}}'
    return f'<script type="application/json" id="lv-figures">{safe_json(payload)}</script>'


STYLE = f"""
:root {{ --ink: #1d2330; --muted: #5b6474; --line: #dde1e8; --soft: #f5f7fa; --accent: #d6453d; }}
* {{ box-sizing: border-box; }}
body {{ margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
        background: #fff; }}
main {{ max-width: {CHART_WIDTH + 40}px; margin: 0 auto; padding: 24px 20px 60px; }}
h1 {{ font-size: 26px; margin: 0 0 4px; }}
h2 {{ font-size: 20px; margin: 36px 0 8px; padding-top: 8px; border-top: 1px solid var(--line); }}
h3 {{ font-size: 16px; margin: 20px 0 6px; }}
p, li {{ max-width: 80ch; }}
.muted {{ color: var(--muted); }}
.headline {{ font-size: 24px; font-weight: 600; margin: 14px 0 10px; line-height: 1.3; }}
.cards {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 10px; margin: 14px 0; }}
.card {{ border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; background: var(--soft); }}
.card .label {{ font-size: 13px; color: var(--muted); }}
.card .value {{ font-size: 22px; font-weight: 600; }}
.card .delta {{ font-size: 13px; color: var(--muted); }}
.facts {{ display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 8px 0; }}
.facts dt {{ color: var(--muted); }} .facts dd {{ margin: 0; }}
nav.toc {{ font-size: 14px; margin: 10px 0; }} nav.toc a {{ margin-right: 14px; color: #2457a6; }}
table {{ border-collapse: collapse; font-size: 13px; margin: 8px 0; width: 100%; }}
th, td {{ border-bottom: 1px solid var(--line); padding: 4px 6px; text-align: left; vertical-align: top; }}
td {{ overflow-wrap: anywhere; }}
th {{ background: var(--soft); font-weight: 600; }}
td.num, th.num {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; overflow-wrap: normal; }}
tr.changed td {{ background: #fff6d6; }}
.table-wrap {{ overflow-x: auto; }}
.chart {{ width: {CHART_WIDTH}px; margin: 10px 0; break-inside: avoid; page-break-inside: avoid; }}
.pair {{ display: grid; grid-template-columns: 1fr 1fr; gap: {GAP}px; width: {CHART_WIDTH}px; }}
.pair .chart {{ width: {(CHART_WIDTH - GAP) // 2}px; }}
pre {{ background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 10px; font-size: 12px;
       white-space: pre-wrap; word-break: break-all; max-height: 360px; overflow: auto; }}
.note {{ font-size: 13px; color: var(--muted); }}
.ab {{ display: grid; grid-template-columns: 1fr 1fr; gap: 10px; }}
.tag {{ display: inline-block; padding: 0 6px; border-radius: 4px; font-weight: 600; color: #fff; }}
.tag.a {{ background: #4f9c97; }} .tag.b {{ background: #d9730d; }}
footer {{ margin-top: 40px; font-size: 12px; color: var(--muted); }}
@media print {{
  @page {{ size: A4; margin: 12mm; }}
  body {{ font-size: 11pt; }}
  main {{ max-width: none; padding: 0; }}
  nav.toc, .modebar-container, .no-print {{ display: none !important; }}
  h2 {{ break-before: auto; break-after: avoid; page-break-after: avoid; }}
  h3 {{ break-after: avoid; }}
  .chart, .pair, .cards, .card, tr {{ break-inside: avoid; page-break-inside: avoid; }}
  thead {{ display: table-header-group; }}
  .chart, .pair {{ zoom: {PRINT_ZOOM}; }}
  .pair .chart {{ zoom: 1; }}
  pre {{ max-height: none; overflow: visible; }}
  table {{ font-size: 8pt; }}
  .table-wrap {{ overflow: visible; }}
  a {{ color: inherit; text-decoration: none; }}
}}
"""

# Draws every figure; each chart's modebar gets two download buttons (PNG and SVG at slide size).
LOADER = """
(function () {
  var payload = JSON.parse(document.getElementById("lv-figures").textContent);
  var figures = payload.figures;
  var size = %(size)s;
  function download(format) {
    return function (gd) {
      Plotly.downloadImage(gd, {format: format, width: size.width, height: size.height, scale: size.scale,
                                filename: gd.getAttribute("data-filename") || "lightviz-chart"});
    };
  }
  var buttons = [
    {name: "Download PNG (" + size.label + ")", icon: Plotly.Icons.camera, click: download("png")},
    {name: "Download SVG (vector)", icon: Plotly.Icons.disk, click: download("svg")}
  ];
  Object.keys(figures).forEach(function (id) {
    var el = document.getElementById(id);
    if (!el) { return; }
    var fig = figures[id];
    fig.layout.template = payload.template;
    Plotly.newPlot(el, fig.data, fig.layout, {displaylogo: false, responsive: false, displayModeBar: "hover",
      modeBarButtonsToRemove: ["toImage", "select2d", "lasso2d"], modeBarButtonsToAdd: buttons});
  });
  document.body.setAttribute("data-charts-drawn", String(Object.keys(figures).length));
})();
"""


def page(title: str, body: str, figures: dict[str, go.Figure], numbers: dict) -> str:
    """The whole HTML document: `body` is trusted markup built from escaped text."""
    width, height, scale = IMAGE_SIZES[DEFAULT_SIZE]
    size = json.dumps({"width": width, "height": height, "scale": scale, "label": f"{width * scale}×{height * scale}"})
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; script-src 'unsafe-inline'; "
        "style-src 'unsafe-inline'; img-src data: blob:; font-src data:\">",
        f"<title>{esc(title)}</title><style>{STYLE}</style>",
        f"<script>{plotly_js()}</script></head>\n<body><main>\n",
        body,
        "\n</main>\n",
        f'<script type="application/json" id="lv-numbers">{safe_json(json.dumps(numbers, allow_nan=False))}</script>',
        figures_block(figures),
        f"<script>{LOADER % {'size': size}}</script>\n</body></html>\n",
    ])
