"""The sidebar's Share section and presentation mode.

Share: pin the current plan as A (Compare page), download a self-contained report, choose the
format and size of chart images (every chart's camera button), and presentation mode.
Presentation mode is for a projector: the sidebar, the toolbar, every control and the chart
modebars are hidden, fonts are larger, pages are tabs at the top, and one button ends it.
"""

from __future__ import annotations

import streamlit as st

from lightviz.plots.images import DEFAULT_SIZE, IMAGE_FORMATS, IMAGE_SIZES, image_pixels
from lightviz.ui import charts
from lightviz.ui import compare as compare_ui
from lightviz.ui import report as report_ui

EXIT_KEY = "lv_exit_presentation"
# Hide the chrome and every control of the main area, except the exit button; enlarge text.
PRESENTATION_CSS = """
<style>
[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"], [data-testid="stMainMenu"],
[data-testid="stAppDeployButton"], [data-testid="stDecoration"],
[data-testid="stStatusWidget"] { display: none !important; }
html { font-size: 21px; }
[data-testid="stMainBlockContainer"] { max-width: 100% !important; padding: 3rem 2.5rem 2rem !important; }
[data-testid="stMain"] :is([data-testid="stForm"], [data-testid="stSlider"], [data-testid="stRadio"],
  [data-testid="stSelectbox"], [data-testid="stNumberInput"], [data-testid="stCheckbox"],
  [data-testid="stTextInput"], [data-testid="stMultiSelect"], [data-testid="stButtonGroup"],
  [data-testid="stButton"], [data-testid="stDownloadButton"], [data-testid="stDataFrame"],
  [data-testid="stPageLink"], [data-testid="stExpander"], [data-testid="stSelectSlider"],
  [data-testid="stToggle"]) { display: none !important; }
[data-testid="stMain"] [data-testid="stHorizontalBlock"]:has(:is([data-testid="stSelectbox"], [data-testid="stButton"],
  [data-testid="stSlider"])) [data-testid="stCaptionContainer"] { display: none !important; }
[data-testid="stMain"] .st-key-lv_exit_presentation [data-testid="stButton"] { display: block !important; }
.st-key-lv_exit_presentation { display: flex; justify-content: flex-end; }
[data-testid="stMetricValue"] { font-size: 2.6rem; }
</style>
"""


def render() -> None:
    """The Share section at the bottom of the sidebar; in presentation mode, its look and exit button."""
    with st.sidebar:
        st.subheader("Share", divider="gray")
        compare_ui.pin_controls()
        report_ui.download_button()
        with st.expander("Chart images for slides", icon=":material/image:"):
            st.radio("Format", IMAGE_FORMATS, key=charts.IMAGE_FORMAT_KEY, horizontal=True,
                     format_func=lambda f: {"png": "PNG", "svg": "SVG (vector)"}[f])
            if st.session_state.get(charts.IMAGE_SIZE_KEY) not in IMAGE_SIZES:
                st.session_state[charts.IMAGE_SIZE_KEY] = DEFAULT_SIZE
            st.selectbox("Size", list(IMAGE_SIZES), key=charts.IMAGE_SIZE_KEY)
            width, height = image_pixels(st.session_state[charts.IMAGE_SIZE_KEY])
            st.caption(f"Hover a chart and press its camera button: the chart downloads as "
                       f"{st.session_state[charts.IMAGE_FORMAT_KEY].upper()}, {width}×{height} px, drawn by your "
                       "browser. Text keeps its size relative to the picture, readable on a projected slide.")
        st.toggle("Presentation mode", key=charts.PRESENT_KEY,
                  help="For a projector: larger fonts, no sidebar and no controls, pages as tabs at the top. "
                       "Set the plan first; the button at the top right ends it.")
    if charts.presenting():
        st.html(PRESENTATION_CSS)
        st.button("Exit presentation", key=EXIT_KEY, on_click=_exit, icon=":material/close_fullscreen:")


def _exit() -> None:
    st.session_state[charts.PRESENT_KEY] = False
