"""The shared sidebar: pick a model; its float accuracy, parameters, size and layers at a glance."""

from __future__ import annotations

import streamlit as st

from lightviz.analysis import explore as analysis
from lightviz.core import metrics
from lightviz.core.task import task_of
from lightviz.io import zoo
from lightviz.ui import lm, registry, state, uploads
from lightviz.ui.format import bytes_text, human_bytes, percent

MODEL_PICKER_KEY = "model_picker"
EVAL_SIZE_INPUT = "eval_size_input"
GENERATED_VALUES = 2**27  # generated inputs stay under 512 MiB of float32


def _model_options() -> list[str]:
    tuned = st.session_state.get(registry.SESSION_KEY, []) + [state.current_name()]  # fine-tuned in this session
    return list(dict.fromkeys(name for name in tuned if registry.is_derived(name))) + zoo.list_models() + \
        zoo.list_language_models() + zoo.list_torchvision_models()


def _model_label(name: str) -> str:
    if registry.is_derived(name):
        return registry.label(name)
    if name in zoo.list_language_models():
        return f"{name} · language model"
    return name if name in zoo.SAMPLE_MODELS else f"{name} · torchvision"


def _on_model_pick() -> None:
    """Load the picked model before switching to it, so a failure keeps the current one."""
    name = st.session_state[MODEL_PICKER_KEY]
    try:
        state.load_engine(name)
        state.load_eval_data(name)
    except Exception as error:  # noqa: BLE001 - any load failure: keep what is loaded, say why
        st.session_state.model_error = (f"Could not load {name}: {error}. "
                                        f"Still showing {state.current_name()}; pick another model.")
        return
    state.set_model(name)


def render() -> bool:
    """Draw the sidebar; False when the current model cannot be used (the page should stop)."""
    st.session_state[MODEL_PICKER_KEY] = state.current_name()
    with st.sidebar:
        st.selectbox("Model", _model_options(), key=MODEL_PICKER_KEY, format_func=_model_label,
                     on_change=_on_model_pick,
                     help="Samples (digits-*) ship trained weights and are scored on the digits test split; "
                          "tiny-gpt is a small language model scored by perplexity on held-out text. "
                          "torchvision architectures are built with random weights (nothing is downloaded): "
                          "only fidelity to the float model means something. Large ones take a while to build.")
        uploads.render()
        try:
            _eval_size_input()
            bundle, engine, data = state.current_bundle(), state.current_engine(), state.current_data()
        except Exception as error:  # noqa: BLE001 - never a traceback: say what to do
            st.error(f"Could not load {state.current_name()}: {error}. Pick another model.")
            return False
        st.caption(bundle.description)
        task = task_of(data)
        if task.is_lm:
            accuracy = task.format(task.score(state.float_logits(), data.x, data.y))
        elif data.labeled:
            accuracy = percent(metrics.accuracy(state.float_logits(), data.y))
        else:
            accuracy = "n/a (no labels: fidelity only)"
        n_weights = sum(layer.n_weights for layer in engine.layers)
        roles = ", ".join(f"{count} {role}" for role, count in analysis.role_counts(engine).items())
        st.markdown(f"Float {task.label.lower()} **{accuracy}**  \n"
                    f"Float size **{human_bytes(engine.float_size_bytes)}** ({bytes_text(engine.float_size_bytes)})  \n"
                    f"**{analysis.parameter_count(bundle.model):,}** parameters  \n"
                    f"**{len(engine.layers)}** compressible layers ({roles}), {n_weights:,} weights",
                    help="Float size: every parameter and buffer at its dtype's size (the state_dict).")
        if data.labeled or task.is_lm:
            st.caption(f"Data: {data.description}.")
        else:
            st.caption(f"Fidelity only: {bundle.note}. Data: {data.description}.")
    return True


def _eval_size_input() -> None:
    """How many samples every evaluation uses: a seeded subset of the data, or how many inputs
    to generate for a model without a dataset. Fewer samples keep a large model responsive."""
    full = state.full_data()
    default = len(full)
    if task_of(full).is_lm:  # a language model: how many sequences, and how long (ui/lm.py)
        lm.sequence_controls()
        uploaded = st.session_state.get(state.USER_DATA_KEY, {}).get(state.current_name())
        whole = uploaded if uploaded is not None else state.load_eval_data(state.current_name(), 10**9, _seq_len())
        st.session_state[EVAL_SIZE_INPUT] = min(state.eval_size() or default, len(whole))
        st.number_input("Evaluation sequences", min_value=1, max_value=len(whole), key=EVAL_SIZE_INPUT,
                        on_change=_on_eval_size, args=(default if uploaded is None else -1,),
                        help=f"A seeded random subset of the {len(whole):,} sequences of the text: more give a "
                             "steadier perplexity; each costs a forward pass of both models.")
        return
    if full.name == "generated":  # no dataset, no upload: inputs are made up
        largest = max(default, GENERATED_VALUES // max(full.x[0].numel(), 1))
        help_text = (f"How many generated inputs to run (default {default}). More give steadier "
                     "fidelity numbers; each costs a forward pass of the float and the compressed model.")
    else:
        largest = default
        help_text = (f"A seeded random subset of the {default:,} samples (all by default). Fewer samples "
                     "keep a large model responsive; accuracy then moves in coarser steps.")
    st.session_state[EVAL_SIZE_INPUT] = min(state.eval_size() or default, largest)
    st.number_input("Evaluation samples", min_value=1, max_value=largest, key=EVAL_SIZE_INPUT,
                    on_change=_on_eval_size, args=(default,), help=help_text)


def _seq_len() -> int | None:
    return st.session_state.get(state.SEQ_LEN_KEY, {}).get(state.current_name())


def _on_eval_size(default: int) -> None:
    n = int(st.session_state[EVAL_SIZE_INPUT])
    state.set_eval_size(None if n == default else n)
