"""The Streamlit glue, and the only room of the library that imports Streamlit: session state
initialized in one place (`state`), cached loaders and the model registry (`registry`), the
shared sidebar and uploads, one module of widgets per page family, every chart's display with
its image-export config (`charts`), and the sidebar's Share section (`share`: pin A, report,
images, presentation mode).

May import: every room below it (plots, analysis, recover, io, core); nothing imports it but
`app.py` and `pages/`.
"""
