"""The shared sidebar: pick a model; its float accuracy, parameters, size and layers at a glance."""

from __future__ import annotations

import streamlit as st

from lightviz.analysis import explore as analysis
from lightviz.core import metrics
from lightviz.core.task import task_of
from lightviz.io import pretrained, zoo
from lightviz.ui import compute, gate, glossary, lm, registry, state, uploads
from lightviz.ui.format import bytes_text, human_bytes, percent
from lightviz.ui.text import plain

MODEL_PICKER_KEY = "model_picker"
EVAL_SIZE_INPUT = "eval_size_input"
GENERATED_VALUES = 2**27  # generated inputs stay under 512 MiB of float32


def _model_options() -> list[str]:
    tuned = st.session_state.get(registry.SESSION_KEY, []) + [state.current_name()]  # made in this session
    tuned = [name for name in tuned if registry.is_derived(name) or pretrained.is_pretrained_name(name)]
    cached = [pretrained.pretrained_name(arch) for arch in pretrained.cached_archs()]
    return (list(dict.fromkeys(tuned + cached)) + zoo.list_models() + zoo.list_language_models()
            + zoo.list_torchvision_models())


def _model_label(name: str) -> str:
    if registry.is_derived(name):
        return registry.label(name)
    if pretrained.is_pretrained_name(name):
        return f"{pretrained.arch_of(name)} · pretrained"
    if name in zoo.list_language_models():
        return f"{name} · language model"
    return name if name in zoo.SAMPLE_MODELS else f"{name} · random weights"


def _on_model_pick() -> None:
    """Load the picked model before switching to it, so a failure keeps the current one."""
    name = st.session_state[MODEL_PICKER_KEY]
    try:
        state.load_engine(name)
        state.load_eval_data(name)
    except Exception as error:  # noqa: BLE001 - any load failure: keep what is loaded, say why
        st.session_state.model_error = (f"Could not load {name}: {error}. "  # shown as plain text (state.py)
                                        f"Still showing {state.current_name()}; pick another model.")
        return
    state.set_model(name)


def render() -> bool:
    """Draw the sidebar; False when the current model cannot be used (the page should stop)."""
    if st.session_state.get(MODEL_PICKER_KEY) != state.current_name():  # written only when it differs
        st.session_state[MODEL_PICKER_KEY] = state.current_name()
    with st.sidebar:
        st.selectbox("Model", _model_options(), key=MODEL_PICKER_KEY, format_func=_model_label,
                     on_change=_on_model_pick,
                     help="Samples (digits-*) ship trained weights and are scored on the digits test split; "
                          "tiny-gpt is a small language model scored by perplexity on held-out text. "
                          "torchvision architectures are built with random weights unless their pretrained "
                          "weights are in the torch cache (download them below, on request): with random "
                          "weights only fidelity to the float model means something. Large ones take a while.")
        compute.render_device()
        uploads.render()
        try:
            _eval_size_input()
            bundle, engine, data = state.current_bundle(), state.current_engine(), state.current_data()
        except Exception as error:  # noqa: BLE001 - never a traceback: say what to do
            st.error(plain(f"Could not load {state.current_name()}: {error}. Pick another model."))
            return False
        st.caption(plain(bundle.description))
        _pretrained_section(bundle)
        task = task_of(data)
        st.markdown(_accuracy_line(data) +
                    f"Float size **{human_bytes(engine.float_size_bytes)}** ({bytes_text(engine.float_size_bytes)})  \n"
                    f"**{analysis.parameter_count(bundle.model):,}** parameters  \n"
                    f"**{len(engine.layers)}** compressible layers "
                    f"({', '.join(f'{count} {role}' for role, count in analysis.role_counts(engine).items())}), "
                    f"{sum(layer.n_weights for layer in engine.layers):,} weights",
                    help="Float size: every parameter and buffer at its dtype's size (the state_dict).")
        if data.labeled or task.is_lm:
            st.caption(plain(f"Data: {data.description}."))
        else:
            st.caption(plain(f"Fidelity only: {bundle.note}. Data: {data.description}."))
    glossary.render()
    return True


def _accuracy_line(data) -> str:
    """Float accuracy (a language model's perplexity on its text; the original model's for a
    fine-tuned one), once it may be computed."""
    task = task_of(data)
    label = task.label.lower()
    if not (data.labeled or task.is_lm):
        return "Float accuracy **n/a** (no labels: fidelity only)  \n"
    if not gate.ready_to_evaluate():
        return f"Float {label}: after the first evaluation  \n"

    def shown(logits) -> str:
        return task.format(task.score(logits, data.x, data.y)) if task.is_lm else \
            percent(metrics.accuracy(logits, data.y))

    original = shown(state.reference_logits())
    if not state.reference_name():
        return f"Float {label} **{original}**  \n"
    return (f"Original float {label} ({state.reference_name()}) **{original}**  \n"
            f"These weights unquantized: {shown(state.float_logits())}  \n")


def _pretrained_section(bundle) -> None:
    """For a torchvision architecture: use its pretrained weights from the torch cache, or
    download them on request (name, size, source shown first; progress; checksum)."""
    arch = pretrained.arch_of(bundle.name)
    if bundle.kind != "torchvision" or arch not in zoo.list_torchvision_models():
        return
    weights = pretrained.info(arch)
    if pretrained.is_pretrained_name(bundle.name):
        if st.button(f"Back to {arch} with random weights", key="random_weights"):
            _switch(arch)
        return
    if weights is None:
        st.caption(f"torchvision has no pretrained weights for {arch}.")
        return
    size = "" if weights.size_bytes is None else f", {human_bytes(weights.size_bytes)}"
    if pretrained.cached_file(arch, weights) is not None:
        if st.button(f"Use pretrained weights ({weights.label})", key="use_pretrained", type="primary",
                     help=f"{weights.file_name} is in the torch cache ({pretrained.cache_dir()})"):
            _switch(pretrained.pretrained_name(arch))
        return
    st.caption(f"Pretrained weights: {weights.file_name}{size} from {weights.host}, not downloaded. Nothing is "
               "downloaded unless you press the button; the file's checksum is verified before it is kept.")
    if st.button(f"Download pretrained weights{size.replace(',', ' ·')}", key="download_pretrained",
                 icon=":material/download:", help=f"{weights.url} into {pretrained.cache_dir()}"):
        bar = st.progress(0.0, text=f"Connecting to {weights.host}…")

        def progress(done: int, total: int | None) -> None:
            text = f"{weights.file_name}: {human_bytes(done)}" + (f" of {human_bytes(total)}" if total else "")
            bar.progress(min(done / total, 1.0) if total else 0.0, text=text)

        try:
            pretrained.download(weights, progress)
        except pretrained.DownloadError as error:
            bar.empty()
            st.error(f"{error}.", icon=":material/cloud_off:")
            return
        bar.empty()
        _switch(pretrained.pretrained_name(arch))


def _switch(name: str) -> None:
    try:
        state.load_engine(name)
    except (ValueError, OSError, RuntimeError) as error:
        st.session_state.model_error = f"Could not load {name}: {error}. Still showing {state.current_name()}."
    else:
        state.set_model(name)
    st.rerun()


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
    wanted = min(state.eval_size() or default, largest)
    if st.session_state.get(EVAL_SIZE_INPUT) != wanted:  # written only when it differs (see state.write_widgets)
        st.session_state[EVAL_SIZE_INPUT] = wanted
    st.number_input("Evaluation samples", min_value=1, max_value=largest, key=EVAL_SIZE_INPUT,
                    on_change=_on_eval_size, args=(default,), help=help_text)


def _seq_len() -> int | None:
    return st.session_state.get(state.SEQ_LEN_KEY, {}).get(state.current_name())


def _on_eval_size(default: int) -> None:
    n = int(st.session_state[EVAL_SIZE_INPUT])
    state.set_eval_size(None if n == default else n)
