"""Every chart of the app goes through `show`: Plotly's camera button downloads it as PNG or SVG
at the slide size chosen in the sidebar (Plotly.js exports in the browser: no server-side
renderer), and presentation mode draws it with larger fonts and no modebar.
"""

from __future__ import annotations

import streamlit as st

from lightviz.plots.images import DEFAULT_SIZE, IMAGE_FORMATS, image_config, presentation_figure

PRESENT_KEY = "presentation"  # the sidebar toggle: projecting in a classroom
IMAGE_FORMAT_KEY = "image_format"
IMAGE_SIZE_KEY = "image_size"


def presenting() -> bool:
    """Whether presentation mode is on (large fonts, no controls)."""
    return bool(st.session_state.get(PRESENT_KEY))


def chart_config(name: str) -> dict:
    """The Plotly config of a chart called `name` (its download file name) under the session's settings."""
    ss = st.session_state
    image_format = ss.get(IMAGE_FORMAT_KEY) if ss.get(IMAGE_FORMAT_KEY) in IMAGE_FORMATS else "png"
    return image_config(image_format, ss.get(IMAGE_SIZE_KEY) or DEFAULT_SIZE, f"lightviz-{name}",
                        modebar=not presenting())


def show(fig, where=None, *, key: str, **kwargs):
    """st.plotly_chart of `fig` in `where` (default: the current container) with the image export
    config; in presentation mode with larger fonts. Returns what st.plotly_chart returns."""
    if presenting():
        fig = presentation_figure(fig)
    return (where or st).plotly_chart(fig, key=key, config=chart_config(key), **kwargs)
