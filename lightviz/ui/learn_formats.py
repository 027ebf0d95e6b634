"""The Learn page's "uniform against floating-point grids" section (analysis.learn_formats)."""

from __future__ import annotations

import streamlit as st

from lightviz.analysis import learn_formats
from lightviz.plots import formats as plots
from lightviz.ui import charts, state

WHY_FP = (
    "**Why floating point keeps small weights finer.** A uniform grid spaces its levels s apart everywhere: a "
    "weight of 0.01·max gets the same absolute error bound s/2 as the largest weight, which is most of its "
    "value. A floating-point number spends bits on an exponent: the step halves every time |w| halves (down to "
    "the subnormals), so the *relative* error stays about the same at every magnitude. Trained weights are "
    "bell-shaped, most of them small: FP4 and NF4 usually beat int4 at the same 4 bits. The price is a coarser "
    "step for the few largest weights; at 8 bits int8's fine uniform step often wins on total error, while FP8 "
    "still keeps the small weights' relative error lower.")


@st.cache_data(max_entries=16, show_spinner="Rounding the layer to each grid…")
def _comparison(model: str, layer: str, fold_bn: bool, bits: int):
    weight, _ = state.load_engine(model).reference_weight(layer, fold_bn)
    comparison = learn_formats.compare_grids(weight, bits)
    return comparison, learn_formats.error_profile(comparison)


def grid_comparison_section() -> None:
    """Pick a layer and 4 or 8 bits; the grids, their steps, errors and a table."""
    engine, plan = state.current_engine(), state.current_plan()
    infos = {info.name: info for info in engine.layers}
    largest = max(infos, key=lambda n: infos[n].n_weights)
    layer_col, bits_col = st.columns([3, 2])
    name = layer_col.selectbox("Layer", list(infos), key="learn_grid_layer", index=list(infos).index(largest),
                               format_func=lambda n: f"{n} · {infos[n].kind} {tuple(infos[n].shape)}")
    bits = bits_col.radio("Bits per weight", [8, 4], horizontal=True, key="learn_grid_bits",
                          help="4: int4, FP4 E2M1 (the element of MXFP4 and NVFP4) and NF4. 8: int8, FP8 E4M3, E5M2.")
    found = state.attempt(lambda: _comparison(state.current_name(), name, plan.fold_bn, bits),
                          f"Could not compare the grids on {name}", "pick another layer")
    if found is None:
        return
    comparison, profile = found
    charts.show(plots.grids_figure(comparison, f"{name}: its weights and each {bits}-bit grid "
                                                   "(one scale for the whole tensor)"), key="learn_grids")
    left, right = st.columns(2)
    charts.show(plots.step_figure(comparison), left, key="learn_grid_steps")
    charts.show(plots.relative_error_figure(profile), right, key="learn_grid_errors")
    st.markdown(WHY_FP)
    st.dataframe(comparison.table, hide_index=True, width="stretch", column_config={
        "step_near_zero": st.column_config.NumberColumn("step near 0", format="%.3g"),
        "step_at_top": st.column_config.NumberColumn("step at the top", format="%.3g"),
        "mse": st.column_config.NumberColumn("MSE", format="%.3g"),
        "sqnr_db": st.column_config.NumberColumn("SQNR (dB)", format="%.1f"),
        "small_rel_error": st.column_config.NumberColumn(f"rel. error, |w| ≤ median ({comparison.small:.3g})",
                                                         format="percent"),
        "large_rel_error": st.column_config.NumberColumn(f"rel. error, top 1% ({comparison.large:.3g}+)",
                                                         format="percent")})
    st.caption("Each grid is scaled so that its largest level is the layer's largest |w| (no clipping). In the "
               "app the formats scale per channel or per block instead (MX: a power-of-two per 32 weights, "
               "NVFP4: an FP8 scale per 16): pick them under Number format on Explore.")
