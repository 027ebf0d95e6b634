"""Plotly figure builders, one module per page family (`explore`, `tradeoffs`, `sensitivity`,
`finetune`, `learn`, `compare`, `deploy`) plus shared colours and layout (`style`): data in,
`go.Figure` out. Also: chart images at slide sizes and the presentation look (`images`), and the
self-contained HTML report assembled from these figures (`report`, in the frame of `report_page`).

May import: `lightviz.core`, `lightviz.analysis` and `lightviz.recover` (for the types they
draw); never io, cli or ui, and never Streamlit.
"""
