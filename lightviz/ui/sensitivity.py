"""The Sensitivity page's sections: per-layer sensitivity (heatmap), mixed precision, and range
methods compared. Computation lives in lightviz.analysis.sensitivity, .mixed and .ranges.

Session keys (set with setdefault here, read only by this module): `sens_results`
{model: {"df", "base", "data", "bits"}}, `sens_mixed` {model: (Allocation, uniform rows)}.
"""

from __future__ import annotations

import streamlit as st

from lightviz.analysis import gradsens, mixed, ranges, sensitivity, sweep
from lightviz.core.activations import wa_label
from lightviz.core.specs import NUMBER_FORMATS, RANGE_METHOD_HELP, SCHEMES, Plan
from lightviz.core.task import LM_FLOAT_ROLES, embeddings_float, task_of, wa_names, with_float_embeddings
from lightviz.io import datasets
from lightviz.plots import gradsens as plots_gradsens
from lightviz.plots import sensitivity as plots_analysis
from lightviz.ui import charts, compute, state
from lightviz.ui.format import bytes_text, percent
from lightviz.ui.text import plain

BITS_CHOICES = list(range(1, 9)) + [16]
SPARSITY_CHOICES = [0.25, 0.5, 0.75, 0.9]
SUBSET_CHOICES = [50, 100, 200, 500, 1000, 2000]
ALL = "all"
BUDGETS = ("average bits per weight", "size (bytes)", "allowed accuracy drop")
MAX_SETTINGS_X_LAYERS = 600


def _results() -> dict:
    return st.session_state.setdefault("sens_results", {})


def current_result() -> dict | None:
    """This model's last sensitivity run, or None."""
    return _results().get(state.current_name())


# --- sensitivity --------------------------------------------------------------------------


def sensitivity_form() -> dict | None:
    """Bits, sparsities and evaluation subset; returns them when Run was pressed."""
    data = state.current_data()
    subsets = [n for n in SUBSET_CHOICES if n < len(data)] + [ALL]
    with st.form("sens_form", border=True):
        bits_col, formats_col, sparsity_col, subset_col = st.columns([3.4, 2.2, 2, 1.3])
        bits = bits_col.pills("Bits (one layer at a time)", BITS_CHOICES, selection_mode="multi",
                              default=[2, 3, 4, 6, 8], key="sens_bits")
        formats = formats_col.multiselect("Number formats", list(NUMBER_FORMATS[1:]), default=[], key="sens_formats",
                                          help="fp8, MX, NVFP4, NF4 scored like bit-widths")
        sparsities = sparsity_col.pills("Sparsity (float weights)", SPARSITY_CHOICES, selection_mode="multi",
                                        default=[], format_func=lambda s: f"{s:.0%}", key="sens_sparsities")
        subset = subset_col.selectbox("Evaluation inputs", subsets, index=len(subsets) - 1, key="sens_subset",
                                      format_func=lambda n: f"all {len(data)}" if n == ALL else f"{n} (seeded)",
                                      help="A seeded random subset makes big models faster; the standard "
                                           "error in each cell's hover grows as sqrt(1/n).")
        quant = state.current_plan().default.quant
        per_block = lm_units_control(data)
        st.caption(f"Each {'block' if per_block else 'layer'} is compressed alone, every other layer float, with "
                   f"the current plan's "
                   f"{quant.scheme} scheme, per-{quant.granularity} granularity and {quant.range_method} range; "
                   f"sparsities use its {state.current_plan().default.prune.method} pruning.")
        gradient = not task_of(data).is_lm and st.checkbox("Also score every cell from gradients (diagonal Fisher: a few backward passes "
                               "predict each cell's KL) and compare the two rankings", value=True, key="sens_gradient")
        pressed = st.form_submit_button("Run sensitivity", type="primary")
    if not pressed:
        return None
    n = (len(bits) + len(formats) + len(sparsities)) * len(state.current_engine().layers)
    if not bits and not sparsities and not formats:
        st.error("Pick at least one bit-width or sparsity, then run again.")
        return None
    if n > MAX_SETTINGS_X_LAYERS:
        st.error(f"That is {n} layer settings; pick at most {MAX_SETTINGS_X_LAYERS} (fewer bits or sparsities).")
        return None
    return {"bits": sorted(bits), "sparsities": sorted(sparsities), "formats": formats, "gradient": gradient,
            "max_samples": None if subset == ALL else subset, "per_block": per_block}


def lm_units_control(data) -> bool:
    """For a language model: per transformer block or per layer (True: per block)."""
    if not task_of(data).is_lm:
        return False
    return st.radio("Unit", ["per block", "per layer"], horizontal=True, key="sens_units",
                    help="per block: all Linear layers of one transformer block compressed together; per layer: "
                         "one at a time. The embeddings and LM head follow the current plan.") == "per block"


def _lm_units(engine, base, per_block: bool) -> dict | None:
    """The units a language model's sensitivity runs over: its blocks, or its layers the plan quantizes."""
    if per_block:
        return sensitivity.blocks(engine, [n for n in engine.by_name if not base.config_for(n).keep_float])
    return {layer.name: [layer.name] for layer in engine.layers if not base.config_for(layer.name).keep_float}


def run(chosen: dict) -> None:
    """Run the sensitivity with a progress bar; keep the result for this model in the session."""
    engine, base = state.current_engine(), state.current_plan()
    data = datasets.subset(state.current_data(), chosen["max_samples"])  # kept: later evaluations hit the cache
    where = compute.backend()
    on = compute.backend_caption(where)
    bar = st.progress(0.0, text=f"starting{on}…")
    lm = task_of(data).is_lm
    units = _lm_units(engine, base, chosen.get("per_block", False)) if lm else None
    scored = None
    if chosen.get("gradient") and not lm:  # gradient scores: the classifiers' layers
        scored = gradsens.gradient_sensitivity(
            engine, data, chosen["bits"], chosen["sparsities"], base=base, formats=chosen.get("formats", ()),
            progress=lambda i, n: bar.progress(0.1 * i / n, text=f"gradient scores: {i} of {n}"))
    df = sensitivity.sensitivity(engine, data, chosen["bits"], chosen["sparsities"], base=base, backend=where,
                                 units=units, formats=chosen.get("formats", ()),
                                 progress=lambda i, n: bar.progress(0.1 + 0.9 * i / n,
                                                                    text=f"{i} of {n} layer settings{on}"))
    bar.empty()
    _results()[state.current_name()] = {"df": df, "base": base, "data": data, "bits": chosen["bits"],
                                        "scored": scored}
    st.session_state.setdefault("sens_mixed", {}).pop(state.current_name(), None)


def heatmap_section() -> None:
    """The heatmap (accuracy drop or KL), timing, the rows as a table and a CSV."""
    found = current_result()
    if found is None:
        st.info("Pick bit-widths and/or sparsities and press **Run sensitivity**: each layer is compressed "
                "alone and the cell shows what the model loses.")
        return
    df = found["df"]
    lm = "perplexity" in df
    labeled = lm or df["accuracy"].notna().all()
    first = "perplexity increase" if lm else "accuracy drop"
    value = st.radio("Color by", [first, "KL vs float"] if labeled else ["KL vs float"], horizontal=True,
                     key="sens_color")
    column = {"accuracy drop": "accuracy_drop", "perplexity increase": "perplexity_increase"}.get(value, "kl")
    charts.show(plots_analysis.sensitivity_heatmap(df, column), key="sens_heatmap")
    n = int(df["n_samples"].iloc[0])
    how = ("reusing the float activations before each layer (torch.fx)" if df.attrs.get("reuse")
           else f"with full forwards ({df.attrs.get('note')})")
    se = ""
    if labeled and not lm:
        se = (f" An accuracy near {percent(df['float_accuracy'].iloc[0])} on {n} inputs has a standard error of "
              f"about {percent(df['accuracy_se'].min())}: smaller drops are within noise.")
    unit, inputs = ("block" if df.attrs.get("units") and any(len(v) > 1 for v in df.attrs["units"].values())
                    else "layer"), "sequences" if lm else "inputs"
    st.caption(f"{len(df)} {unit} settings on {n} {inputs} in {df.attrs.get('seconds', 0):.1f} s, {how}.{se} "
               + (f"Hover a cell for the perplexity, KL and the {unit}'s size." if lm else
                  "Hover a cell for accuracy ± standard error, KL and the layer's size."))
    if found.get("scored") is not None:
        gradient_section(df, found["scored"])
    with st.expander("Sensitivity rows as a table"):
        st.dataframe(df, hide_index=True, width="stretch")
    st.download_button("Download sensitivity as CSV", df.to_csv(index=False).encode(),
                       file_name=f"lightviz-sensitivity-{state.current_name()}.csv", mime="text/csv",
                       icon=":material/download:", key="sens_csv")


def gradient_section(measured, scored) -> None:
    """The gradient-predicted KL next to the measured one: heatmap, scatter, rank correlation, time."""
    rho = gradsens.rank_correlation(measured, scored)
    left, right = st.columns([3, 2])
    charts.show(plots_gradsens.gradient_heatmap(scored), left, key="sens_gradient_heatmap")
    charts.show(plots_gradsens.gradient_scatter(gradsens.side_by_side(measured, scored), rho), right,
                key="sens_gradient_scatter")
    seconds, measured_seconds = scored.attrs.get("seconds", 0), measured.attrs.get("seconds", 0)
    st.caption(f"Gradient scores: {scored.attrs.get('passes')} backward passes with labels drawn from the float "
               f"model's own predictions estimate the diagonal Fisher F; each cell is ½ Σ F·Δw², the KL a "
               f"second-order expansion predicts for that layer's weight error Δw. {seconds:.1f} s against "
               f"{measured_seconds:.1f} s measured; Spearman rank correlation ρ = {rho:.3f} (1: the same order). "
               "Mixed precision below can allocate on either.")


# --- mixed precision ------------------------------------------------------------------------


def mixed_section() -> None:
    """Budget -> allocate -> result against uniform plans -> apply as the current plan."""
    found = current_result()
    bits = sorted(set(found["df"].loc[found["df"]["kind"] == "bits", "bits"].dropna().astype(int))) if found else []
    if len(bits) < 2:
        st.info("Run the sensitivity with at least two bit-widths: mixed precision picks among them per layer.")
        return
    engine, base, data = state.current_engine(), found["base"], found["data"]
    kind_col, value_col, button_col = st.columns([3.2, 1.6, 1.0], vertical_alignment="bottom")
    lm = task_of(data).is_lm
    kind = kind_col.radio("Budget", BUDGETS, horizontal=True, key="mixed_budget",
                          format_func=lambda b: "allowed perplexity increase" if lm and b == BUDGETS[2] else b)
    if kind == BUDGETS[0]:
        amount = value_col.number_input("bits per weight (scales included)", 1.0, 32.0, 4.0, 0.25, key="mixed_avg")
    elif kind == BUDGETS[1]:
        default = engine.evaluate(_as_base(mixed.uniform_at(base, 4), base, engine), data).size_bytes
        amount = value_col.number_input("model size at most (bytes)", 1, None, int(default), 100, key="mixed_bytes",
                                        help="The default is the size of uniform 4-bit with these settings.")
    elif lm:
        amount = value_col.number_input("allowed perplexity increase (%)", 0.0, 1000.0, 2.0, 0.5, key="mixed_drop",
                                        help="The smallest plan whose measured perplexity stays within this "
                                             "relative increase over the float model's.")
    else:
        amount = value_col.number_input("allowed drop (points)", 0.0, 100.0, 1.0, 0.1, key="mixed_drop",
                                        help="The smallest plan whose measured accuracy drop (agreement drop "
                                             "without labels) stays within this.")
    objectives = ["measured KL"] + (["gradient-predicted KL"] if found.get("scored") is not None else [])
    objective = st.radio("Per-layer cost", objectives, horizontal=True, key="mixed_objective",
                         help="What the knapsack sums: the measured KL of each layer alone, or the KL the gradients "
                              "predict (no forward pass per layer and bit-width).")
    if button_col.button("Allocate bits", type="primary", key="mixed_run"):
        budget = {BUDGETS[0]: {"avg_bits": float(amount)}, BUDGETS[1]: {"size_bytes": int(amount)},
                  BUDGETS[2]: {"max_drop": float(amount) / 100}}[kind]
        where = compute.backend()
        rows, goal = (found["df"], "kl") if objective == objectives[0] else (found["scored"], "gradient")
        result = state.attempt(lambda: mixed.allocate(engine, data, rows, base, objective=goal, backend=where,
                                                      **budget),
                               "Could not allocate bits", "raise the budget or run the sensitivity with fewer bits")
        if result is not None:
            uniform = sweep.run_sweep(engine, data, [_as_base(mixed.uniform_at(base, b), base, engine) for b in bits],
                                      backend=where)
            st.session_state.setdefault("sens_mixed", {})[state.current_name()] = result, uniform
    found_mixed = st.session_state.get("sens_mixed", {}).get(state.current_name())
    if found_mixed is None:
        st.caption("An exact knapsack over layers minimizes the summed per-layer KL within the budget; its 8 best "
                   "choices are then measured and the most accurate is kept.")
        return
    _show_allocation(*found_mixed)


def _as_base(plan, base, engine):
    """A uniform plan with the base's embeddings kept float when the base keeps them (language models)."""
    return with_float_embeddings(plan, engine.layers) if embeddings_float(base, engine.layers) else plan


def _show_allocation(result: mixed.Allocation, uniform) -> None:
    engine, ev = state.current_engine(), result.evaluation
    names = wa_names(result.plan, engine.layers)
    label = f"mixed {wa_label(result.plan, names)} ({result.budget})"
    cols = st.columns(4)
    if ev.task == "causal_lm":
        cols[0].metric("Perplexity", f"{ev.perplexity:.3f}", delta_color="inverse",
                       delta=f"{(ev.perplexity / ev.float_perplexity - 1) * 100:+.2f}% vs float")
    else:
        cols[0].metric("Accuracy" if ev.accuracy is not None else "Agreement",
                       percent(ev.accuracy if ev.accuracy is not None else ev.agreement),
                       delta=None if ev.accuracy is None else f"{(ev.accuracy - ev.float_accuracy) * 100:+.2f} pp")
    cols[1].metric("Size", bytes_text(ev.size_bytes), delta=f"{ev.compression_ratio:.2f}× compression",
                   delta_color="off")
    if ev.task == "causal_lm":  # as LM users count: the quantized weights with their scales
        cols[2].metric("Bits per weight", f"{ev.quantized_bits_per_weight:.3f}",
                       help=f"over the quantized weights, scales included; over every weight {ev.avg_bits_per_weight:.2f}")
    else:
        cols[2].metric("Bits per weight", f"{ev.avg_bits_per_weight:.2f}")
    cols[3].metric("W/A", wa_label(result.plan, names))
    y = "perplexity" if ev.task == "causal_lm" else "accuracy" if ev.accuracy is not None else "agreement"
    left, right = st.columns([3, 2])
    charts.show(where=left, fig=plots_analysis.mixed_figure(
        uniform, (ev.size_bytes, getattr(ev, y), label),
        (engine.float_size_bytes, ev.float_score if y != "agreement" else 1.0), y), key="mixed_chart")
    members = current_result()["df"].attrs.get("units") or {}
    table = [{"layer": name, "bits": b, "weights": sum(engine.by_name[n].n_weights for n in members.get(name, [name]))}
             for name, b in result.bits.items()]
    right.dataframe(table, hide_index=True, width="stretch", height=min(38 + 35 * len(table), 360))
    right.caption(f"{result.method} on {result.objective}{'' if result.exact else ' (approximate)'}; "
                  + "; ".join(result.notes))
    right.button("Apply as current plan", type="primary", key="mixed_apply", on_click=_apply, args=(result, label))
    if st.session_state.pop("mixed_applied", None):
        st.success("The mixed plan is now the current plan: see it in Explore (per-layer overrides) and on the "
                   "Trade-offs chart (tried this session).")


def _apply(result: mixed.Allocation, label: str) -> None:
    """Button callback: make the plan current and add it to the history the Trade-offs chart draws."""
    state.set_plan(result.plan)
    data = state.current_data()
    row = sweep.plan_row(state.current_engine(), data, result.plan, label=label)
    state.record_history({"model": state.current_name(), "data": data.description, **row})
    st.session_state.mixed_applied = True


# --- range methods compared -----------------------------------------------------------------


def ranges_section() -> None:
    """One layer's weights or calibrated inputs: each method's clip range and error, histograms."""
    engine, plan = state.current_engine(), state.current_plan()
    names = [layer.name for layer in engine.layers]
    layer_col, source_col, bits_col, scheme_col, pct_col = st.columns([2.4, 1.8, 1.6, 1.8, 1.2])
    first = next((i for i, layer in enumerate(engine.layers) if layer.role not in LM_FLOAT_ROLES), 0)
    layer = layer_col.selectbox("Layer", names, key="ranges_layer", index=first)
    source = source_col.radio("Values", ranges.SOURCES, horizontal=True, key="ranges_source",
                              format_func=lambda s: "weights" if s == "weights" else "input activations")
    bits = bits_col.slider("Bits", 2, 8, 4, key="ranges_bits")
    default_scheme = "symmetric" if source == "weights" else "asymmetric"
    scheme = scheme_col.radio("Scheme", SCHEMES, horizontal=True, key=f"ranges_scheme_{source}",
                              index=SCHEMES.index(default_scheme))
    percentile = pct_col.number_input("Percentile", 90.0, 100.0, 99.99, 0.01, format="%.2f", key="ranges_pct")
    computed = state.attempt(lambda: _range_numbers(plan, layer, source, bits, scheme, percentile),
                             f"Could not compare the range methods on {layer}", "pick another layer or setting")
    if computed is None:
        return
    values, what, table = computed
    best = table.loc[table["mse"].idxmin(), "method"]
    shown = st.radio("Quantized histogram with", list(table["method"]), horizontal=True, key="ranges_shown",
                     index=list(table["method"]).index(best))
    row = table.set_index("method").loc[shown]
    hist = ranges.value_histogram(values, bits, scheme, float(row["lo"]), float(row["hi"]))
    left, right = st.columns(2)
    log_y = source == "activations"  # inputs after a ReLU pile up at zero
    charts.show(where=left, fig=plots_analysis.range_methods_figure(hist, table, f"{layer} {source}", log_y),
                      key="ranges_chart")
    charts.show(where=right, fig=plots_analysis.range_error_figure(table), key="ranges_error_chart")
    st.dataframe(table[["method", "lo", "hi", "scale", "zero_point", "clipped_fraction", "clip_mse", "round_mse",
                        "mse", "sqnr_db"]], hide_index=True, width="stretch", column_config={
        "clipped_fraction": st.column_config.NumberColumn("clipped", format="percent"),
        **{c: st.column_config.NumberColumn(c, format="%.4g") for c in ("lo", "hi", "scale", "clip_mse",
                                                                         "round_mse", "mse")},
        "sqnr_db": st.column_config.NumberColumn("SQNR (dB)", format="%.1f")})
    st.caption(f"{plain(what)}; per tensor, {bits}-bit {scheme}. " + " · ".join(
        f"**{m}**: {h}" for m, h in RANGE_METHOD_HELP.items()))
    kind = "Input activations" if source == "activations" else "Weights"
    charts.show(plots_analysis.value_histogram_figure(
        hist, f"{kind} of {layer}: float against {bits}-bit {shown}", f"{bits}-bit {scheme} {shown}", log_y),
        key="ranges_histogram")
    st.caption(f"{hist.clipped:,} of {hist.n_values:,} values ({hist.clipped / max(hist.n_values, 1):.2%}) lie "
               f"outside [{hist.lo:.4g}, {hist.hi:.4g}] and saturate."
               + (" Counts are on a log scale: post-ReLU inputs pile up at zero." if log_y else ""))


@st.cache_data(max_entries=32, show_spinner="Comparing range methods…")
def _cached_table(model: str, plan_json: str, layer: str, source: str, bits: int, scheme: str, percentile: float):
    engine, data = state.load_engine(model), state.load_eval_data(model)
    values, what = ranges.layer_values(engine, Plan.from_json(plan_json), data, layer, source)
    return values, what, ranges.compare_ranges(values, bits, scheme, percentile)


def _range_numbers(plan: Plan, layer: str, source: str, bits: int, scheme: str, percentile: float):
    relevant = Plan(fold_bn=plan.fold_bn, activations=plan.activations)  # what the values depend on
    return _cached_table(state.current_name(), relevant.to_json(), layer, source, bits, scheme, float(percentile))
