"""Pages opened by URL before the app ran: send them through app.py's router and back.

Before app.py has run once in a fresh server, Streamlit treats pages/ as a legacy multipage
folder: a link to /tradeoffs runs pages/tradeoffs.py alone, without the router, the sidebar or
the session state. `through_router` (at the top of each page) detours through app.py, and
`return_to_page` (in app.py, after st.navigation) finishes the detour.
"""

from __future__ import annotations

import streamlit as st


def through_router(page_file: str) -> None:
    """Send a page that Streamlit runs on its own (no session state yet) through app.py."""
    if "plan" not in st.session_state:
        st.session_state.return_to = page_file
        st.switch_page("app.py", query_params=dict(st.query_params))


def return_to_page() -> None:
    """In app.py, after st.navigation: finish a detour made by `through_router`."""
    target = st.session_state.pop("return_to", None)
    if target:
        st.switch_page(target, query_params=dict(st.query_params))
