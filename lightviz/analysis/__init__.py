"""What the engine's numbers add up to: per-layer sensitivity (`sensitivity`), mixed-precision
allocation (`mixed`), sweeps (`sweep`), range methods compared (`ranges`, `clipping`), what the
Explore page shows (`explore`: weight histograms with their grid, flipped predictions, size
parts), per-layer edits of a plan (`editing`), the Learn page's step-by-step math (`learn`), two plans
side by side (`compare`), everything a shareable report shows (`report`), what a plan costs
and how fast it runs: MACs and bit-operations (`cost`), measured onnxruntime latency (`latency`),
and for language models the float and compressed text side by side (`generate`) and activation
outliers per input channel (`outliers`).

May import: `lightviz.core` and `lightviz.io`; never plots, recover, cli or ui.
"""
