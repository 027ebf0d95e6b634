"""lightviz: the router (st.navigation) and the shared sidebar. Run: streamlit run app.py"""

import streamlit as st

from lightviz.ui import charts, router, share, sidebar, state

st.set_page_config(layout="wide", page_title="lightviz")
state.init_state()
page = st.navigation([
    st.Page("pages/explore.py", title="Explore", icon=":material/tune:", default=True),
    st.Page("pages/tradeoffs.py", title="Trade-offs", icon=":material/show_chart:"),
    st.Page("pages/compare.py", title="Compare A/B", icon=":material/compare_arrows:"),
    st.Page("pages/sensitivity.py", title="Sensitivity", icon=":material/grid_on:"),
    st.Page("pages/methods.py", title="Methods", icon=":material/compare:"),
    st.Page("pages/finetune.py", title="Fine-tune", icon=":material/model_training:"),
    st.Page("pages/learn.py", title="Learn", icon=":material/school:"),
], position="top" if charts.presenting() else "sidebar")
router.return_to_page()
state.show_messages()
if sidebar.render():
    share.render()  # pin A, report, chart images, presentation mode
    page.run()
