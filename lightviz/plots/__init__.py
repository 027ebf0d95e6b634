"""Plotly figure builders, one module per page family (`explore`, `tradeoffs`, `sensitivity`,
`finetune`, `learn`, `deploy`) plus shared colours and layout (`style`): data in, `go.Figure` out.

May import: `lightviz.core`, `lightviz.analysis` and `lightviz.recover` (for the types they
draw); never io, cli or ui, and never Streamlit.
"""
