"""Charts as pictures: Plotly's own image export at slide sizes, and a presentation look.

Every chart's modebar camera button (Plotly.js `toImage`, run in the browser: no server-side
renderer) downloads the chart as PNG or SVG at the size chosen here. A size lays the chart out
at `width` x `height` CSS pixels and multiplies the pixels by `scale`, so a 1920 x 1080 slide
image keeps text as large, relative to the picture, as a 960-pixel-wide chart on screen shows it.

>>> config = image_config("svg", "slide 16:9 (1920×1080)", "sqnr")
>>> config["toImageButtonOptions"]["format"], image_pixels("slide 16:9 (1920×1080)")
('svg', (1920, 1080))
"""

from __future__ import annotations

import re

import plotly.graph_objects as go

IMAGE_FORMATS = ("png", "svg")
IMAGE_SIZES = {  # label -> (width, height, scale): laid out at width x height, pixels times scale
    "slide 16:9 (1920×1080)": (960, 540, 2),
    "slide 4:3 (1600×1200)": (800, 600, 2),
    "4K 16:9 (3840×2160)": (1280, 720, 3),
}
DEFAULT_SIZE = next(iter(IMAGE_SIZES))
PRESENTATION_SCALE = 1.5  # fonts in presentation mode, against the figure's own


def image_pixels(size: str) -> tuple[int, int]:
    """(width, height) in pixels of an exported PNG at `size` (an IMAGE_SIZES label)."""
    width, height, scale = _size(size)
    return width * scale, height * scale


def _size(size: str) -> tuple[int, int, int]:
    if size not in IMAGE_SIZES:
        raise ValueError(f"image size must be one of {', '.join(map(repr, IMAGE_SIZES))}; got {size!r}")
    return IMAGE_SIZES[size]


def safe_filename(text: str) -> str:
    """A download file name from any text: letters, digits, dots, dashes and underscores.

    >>> safe_filename("lightviz <b>sqnr</b> chart/1")
    'lightviz-b-sqnr-b-chart-1'
    """
    return re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-.")[:80] or "chart"


def image_config(image_format: str = "png", size: str = DEFAULT_SIZE, filename: str = "lightviz-chart",
                 modebar: bool = True) -> dict:
    """Plotly config: the camera button downloads `image_format` at `size`; no Plotly logo.

    Args:
        image_format: "png" or "svg".
        size: an IMAGE_SIZES label.
        filename: the download's name without extension (made safe here).
        modebar: False hides the modebar (presentation mode).
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image format must be one of {IMAGE_FORMATS}; got {image_format!r}")
    width, height, scale = _size(size)
    return {"displaylogo": False, "displayModeBar": "hover" if modebar else False,
            "toImageButtonOptions": {"format": image_format, "filename": safe_filename(filename),
                                     "width": width, "height": height, "scale": scale}}


def presentation_figure(fig: go.Figure, scale: float = PRESENTATION_SCALE) -> go.Figure:
    """A copy of `fig` with every font `scale` times larger and room for them (for a projector).

    >>> big = presentation_figure(go.Figure(layout=dict(height=300, margin=dict(t=70))))
    >>> big.layout.font.size, big.layout.height, big.layout.margin.t
    (18, 390, 105)
    """
    fig = go.Figure(fig)
    layout = fig.layout
    fig.update_layout(font_size=round((layout.font.size or 12) * scale),
                      title_font_size=round((layout.title.font.size or 17) * scale),
                      legend_font_size=round((layout.legend.font.size or 12) * scale))
    for axes in (fig.update_xaxes, fig.update_yaxes):  # a theme may set axis fonts of its own
        axes(tickfont_size=round(12 * scale), title_font_size=round(14 * scale))
    for annotation in layout.annotations:
        annotation.font.size = round((annotation.font.size or 12) * scale)
    for trace in fig.data:
        font = getattr(trace, "textfont", None)
        if font is not None and font.size:
            font.size = round(font.size * scale)
    if layout.height:
        fig.update_layout(height=round(layout.height * (1 + (scale - 1) * 0.6)))
    if layout.margin.t:
        fig.update_layout(margin_t=round(layout.margin.t * scale))
    return fig
