"""Language models in the app: sequence controls and text uploads in the sidebar, a model folder
upload, Explore's LM controls (weight-only presets, scale storage, embeddings), perplexity
metrics, generated text side by side, and activation outliers.

Everything here shows only when the current model is a language model (`state.current_task()`);
the numbers come from lightviz.io.text, lightviz.analysis.generate / .outliers and the engine.
User text, prompts and generated text are shown as plain text (st.code, st.text), never Markdown.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from lightviz.analysis import generate, outliers
from lightviz.core.task import LM, WEIGHT_ONLY_PRESETS, embeddings_float, with_float_embeddings
from lightviz.io import hf, text
from lightviz.io.safeload import max_upload_bytes
from lightviz.plots import lm as lm_plots
from lightviz.ui import charts, registry, state
from lightviz.ui.format import bytes_text

SEQ_LENS = [32, 64, 128, 256, 512, 1024, 2048]
SCALE_HELP = ("How each block's scale is stored: float32 (32 bits) or float16 / bfloat16 (16 bits). It counts in "
              "the size, and the scales are rounded to that type before the weights are quantized.")
CUSTOM = "custom (the controls above)"
HF_TYPES = ["json", "safetensors", "bin", "txt", "model"]
PROMPT_KEY, NEW_TOKENS_KEY = "lm_prompt", "lm_new_tokens"
RAW_KEY = "lm_raw_text"  # {model name: (text, file name, calibration text or None)} the user uploaded


def is_lm() -> bool:
    return state.current_bundle().task == "causal_lm"


# --- sidebar ---------------------------------------------------------------------------------


def sequence_controls() -> None:
    """Tokens per evaluation sequence (the number of sequences is the sidebar's sample count)."""
    bundle, name = state.current_bundle(), state.current_name()
    context = int(bundle.input_shape[0])
    options = [n for n in SEQ_LENS if n <= context] or [context]
    current = st.session_state.get(state.SEQ_LEN_KEY, {}).get(name) or min(text.DEFAULT_SEQ_LEN, context)
    st.session_state["seq_len_input"] = current if current in options else options[-1]
    st.selectbox("Sequence length (tokens)", options, key="seq_len_input", on_change=_on_seq_len, args=(name,),
                 help=f"Each evaluation sequence has this many tokens (the model's context is {context}); "
                      "perplexity averages the next-token loss over all but the first token of each.")


def _on_seq_len(name: str) -> None:
    seq_len = int(st.session_state["seq_len_input"])
    raw = st.session_state.get(RAW_KEY, {}).get(name)
    if raw is not None:  # the user's text, cut again at the new length (or kept as it was, with the reason)
        try:
            data = _cut(state.load_bundle(name), raw, seq_len)
        except ValueError as error:
            st.session_state.model_error = f"Could not cut your text into sequences of {seq_len} tokens: {error}"
            return
        st.session_state.setdefault(state.USER_DATA_KEY, {})[name] = data
    st.session_state.setdefault(state.SEQ_LEN_KEY, {})[name] = seq_len
    state.set_eval_size(None if raw is None else min(len(data), text.DEFAULT_SEQUENCES))


def _cut(bundle, raw: tuple, seq_len: int):
    """EvalData of a user's text (text, file name, calibration text or None) at `seq_len` tokens."""
    body, name, calibration = raw
    return text.text_data(bundle.tokenizer, body, name, f"your text {name}", seq_len, calibration,
                          int(bundle.input_shape[0]))


def text_upload_form() -> None:
    """The user's evaluation text (.txt / .jsonl) and, optionally, separate calibration text."""
    limit = text.MAX_TEXT_BYTES // 2**20
    with st.form("text_upload", clear_on_submit=False, border=False):
        upload = st.file_uploader(f"Evaluation text (≤ {limit} MB)", type=["txt", "jsonl"],
                                  help="UTF-8 text, or JSON lines with a \"text\" field. It is cut into sequences of "
                                       "the chosen length; without a calibration file its last sequences calibrate "
                                       "and are never evaluated.")
        calibration = st.file_uploader("Calibration text (optional)", type=["txt", "jsonl"],
                                       help="Text for activation ranges and fine-tuning, kept apart from evaluation.")
        if st.form_submit_button("Load text") and upload is not None:
            _load_text(upload, calibration)


def _load_text(upload, calibration) -> None:
    bundle, name = state.current_bundle(), state.current_name()
    seq_len = st.session_state.get(state.SEQ_LEN_KEY, {}).get(name) or min(text.DEFAULT_SEQ_LEN,
                                                                           int(bundle.input_shape[0]))
    try:
        body, file_name = text.read_text(upload, upload.name)
        raw = (body, file_name, text.read_text(calibration, calibration.name)[0] if calibration is not None else None)
        data = _cut(bundle, raw, seq_len)
    except (ValueError, OSError) as error:
        st.error(f"Could not use {upload.name}: {error}. The previous text is still in use.")
        return
    st.session_state.setdefault(RAW_KEY, {})[name] = raw  # kept to cut again at another sequence length
    st.session_state.setdefault(state.USER_DATA_KEY, {})[name] = data
    state.set_eval_size(min(len(data), text.DEFAULT_SEQUENCES))
    st.rerun()


def folder_upload_form() -> None:
    """A Hugging Face causal LM folder, uploaded as its files (config.json, weights, tokenizer files)."""
    with st.form("hf_upload", clear_on_submit=True, border=False):  # each load starts from an empty list
        files = st.file_uploader(f"Language model folder: select its files (≤ {max_upload_bytes() // 2**20} MB each)",
                                 type=HF_TYPES, accept_multiple_files=True,
                                 help="config.json, model.safetensors (or its shards and index, or pytorch_model.bin) "
                                      "and the tokenizer files. A folder that asks for custom code is refused: "
                                      "its code is never run.")
        if st.form_submit_button("Load language model") and files:
            _load_folder(files)


def _load_folder(files) -> None:
    latest = {Path(f.name).name: f for f in files}  # a file chosen again replaces the one before
    try:
        if any(name.startswith(".") or name != file.name for name, file in latest.items()):
            raise ValueError("the files must have plain names (config.json, model.safetensors, ...)")
        with st.spinner("Loading the language model…"), tempfile.TemporaryDirectory() as folder:
            for name, file in latest.items():
                (Path(folder) / name).write_bytes(file.getvalue())
            bundle = hf.load_hf_folder(folder, "your-lm")
            name = registry.register_upload(bundle)
            state.load_engine(name)
    except (ValueError, OSError, RuntimeError) as error:
        st.error(f"Could not load the language model: {error}. Still showing {state.current_name()}.")
        return
    st.session_state.setdefault(registry.SESSION_KEY, []).append(name)
    state.set_model(name)
    st.rerun()


def model_caption() -> None:
    bundle = state.current_bundle()
    st.caption(f"Context {bundle.input_shape[0]:,} tokens · vocabulary {bundle.num_classes:,} · tokenizer: "
               f"{getattr(bundle.tokenizer, 'name', 'none')}")


# --- Explore ---------------------------------------------------------------------------------


def lm_controls() -> None:
    """Weight-only presets, scale storage type, and whether embeddings and the LM head are compressed."""
    plan, engine = state.current_plan(), state.current_engine()
    quant = plan.default.quant
    current = next((name for name, spec in WEIGHT_ONLY_PRESETS.items()
                    if quant.bits is not None and spec == _preset_view(quant)), CUSTOM)
    st.session_state["lm_preset"] = current
    st.session_state["lm_embeddings"] = not embeddings_float(plan, engine.layers)
    preset, scale, embed = st.columns([3, 2, 3])
    preset.selectbox("Weight-only preset", list(WEIGHT_ONLY_PRESETS) + [CUSTOM], key="lm_preset",
                     on_change=_on_preset,
                     help="As LM quantization tools ship them: asymmetric groups of 32, 64 or 128 weights with "
                          "float16 scales (GPTQ / AWQ style), or 8 bits per channel. Activations stay float.")
    scale.selectbox("Scale storage", ["float32", "float16", "bfloat16"], key="scale_dtype",
                    on_change=state.on_widget_change, help=SCALE_HELP)
    embed.toggle("Compress embeddings and LM head", key="lm_embeddings", on_change=_on_embeddings,
                 help="Off (the default, as LM tools do): the token embedding and the LM head stay float. A head "
                      "tied to the embedding is one tensor, stored and counted once.")


def _preset_view(quant):
    """`quant` with the fields a preset does not set at their defaults (to recognize a preset)."""
    from dataclasses import replace

    return replace(quant, range_method="minmax", percentile=99.99)


def _on_preset() -> None:
    choice = st.session_state["lm_preset"]
    if choice not in WEIGHT_ONLY_PRESETS:
        return
    from dataclasses import replace

    plan = state.current_plan()
    spec = WEIGHT_ONLY_PRESETS[choice]
    quant = replace(plan.default.quant, bits=spec.bits, scheme=spec.scheme, granularity=spec.granularity,
                    group_size=spec.group_size, scale_dtype=spec.scale_dtype, range_method="minmax")
    state.set_plan(state.checked(replace(plan, default=replace(plan.default, quant=quant))))


def _on_embeddings() -> None:
    engine = state.current_engine()
    state.set_plan(with_float_embeddings(state.current_plan(), engine.layers, keep=not st.session_state["lm_embeddings"]))


def metrics_row(ev) -> None:
    """Perplexity, next-token agreement, size and bits per weight against the float model."""
    perplexity, agreement, size, bits = st.columns(4)
    change = ev.perplexity / ev.float_perplexity - 1
    perplexity.metric("Perplexity", LM.format(ev.perplexity), delta=f"{change * 100:+.2f}% vs float",
                      delta_color="inverse",
                      help=f"exp(mean next-token cross-entropy) over {ev.n_tokens:,} predicted tokens of "
                           f"{ev.n_samples} sequences; float model {LM.format(ev.float_perplexity)}. Lower is better.")
    agreement.metric("Next-token agreement", f"{ev.agreement * 100:.2f}%", delta=f"{(ev.agreement - 1) * 100:+.2f} pp",
                     help=f"predicted tokens whose top-1 next token matches the float model's; mean KL(p_float || "
                          f"p_compressed) = {ev.kl:.4g} nats per token")
    size.metric("Size", bytes_text(ev.size_bytes),
                delta=f"{(ev.size_bytes / ev.float_size_bytes - 1) * 100:+.1f}% · {ev.compression_ratio:.2f}× compression",
                delta_color="inverse", help=f"what a packed file holds (tied weights once); float model "
                                            f"{bytes_text(ev.float_size_bytes)}")
    quantized = ev.quantized_bits_per_weight
    bits.metric("Bits per weight", "float" if quantized is None else f"{quantized:.3f}",
                help="Over the quantized weights, scales and zero-points included, as LM users count them "
                     f"(4-bit groups of 128 with float16 scales: 4.156). Over every weight: {ev.avg_bits_per_weight:.2f}.")


@st.cache_data(max_entries=16, show_spinner="Generating text with the float model…")
def _float_generation(model: str, prompt: str, n_new: int) -> list[int]:
    bundle, engine = state.load_bundle(model), state.load_engine(model)
    return generate.float_continuation(engine, bundle.tokenizer, prompt, n_new)


@st.cache_data(max_entries=32, show_spinner="Generating text with the compressed model…")
def _generation(model: str, plan_json: str, prompt: str, n_new: int, seq_len: int | None):
    from lightviz.core.specs import Plan

    bundle, engine = state.load_bundle(model), state.load_engine(model)
    plan = Plan.from_json(plan_json)
    calibration = None
    if plan.activations is not None and not plan.activations.per_token:
        calibration = (state.load_eval_data(model, None, seq_len) if seq_len else state.load_eval_data(model))
        calibration = calibration.calibration_inputs
    return generate.compare_generation(engine, plan, bundle.tokenizer, prompt, n_new, calibration,
                                       float_ids=_float_generation(model, prompt, n_new))


def generation_section() -> None:
    """The float and the compressed model continue the same prompt, greedily, side by side."""
    bundle, plan = state.current_bundle(), state.current_plan()
    prompt_col, tokens_col = st.columns([4, 1])
    prompt = prompt_col.text_area("Prompt", value=generate.DEFAULT_PROMPT, key=PROMPT_KEY, height=68)
    n_new = tokens_col.number_input("New tokens", 1, generate.MAX_NEW_TOKENS, generate.DEFAULT_NEW_TOKENS,
                                    key=NEW_TOKENS_KEY)
    seq_len = st.session_state.get(state.SEQ_LEN_KEY, {}).get(state.current_name())
    out = state.attempt(lambda: _generation(state.current_name(), plan.to_json(), prompt, int(n_new), seq_len),
                        "Could not generate text", "change the prompt")
    if out is None:
        return
    language = "python" if bundle.kind == "sample" else None
    left, right = st.columns(2)
    left.markdown("**Float model**")
    left.code(out.prompt + out.float_text, language=language, wrap_lines=True)
    right.markdown("**Compressed model** (this plan)")
    right.code(out.prompt + out.compressed_text, language=language, wrap_lines=True)
    if out.identical:
        st.success(f"Same {len(out.float_ids)} new tokens: this plan does not change the greedy continuation.")
    else:
        st.caption(f"The two agree on the first {out.same_tokens} of {len(out.float_ids)} new tokens, then part. "
                   "Greedy decoding (the most likely token every step), fixed seed: the same plan and prompt "
                   "always give the same text.")


def outliers_section() -> None:
    """Per-input-channel max |x| of each layer over the calibration text: one block, and every layer."""
    engine, data, plan = state.current_engine(), state.current_data(), state.current_plan()
    cache = st.session_state.setdefault("lm_outliers", {})
    key = (state.current_name(), data.description, plan.fold_bn)
    if key not in cache:
        cache.clear()
        cache[key] = state.attempt(lambda: outliers.channel_absmax(engine, data.calibration_inputs, plan),
                                   "Could not record the activations", "pick another model or text")
    absmax = cache[key]
    if not absmax:
        return
    table = outliers.outlier_table(absmax)
    blocks = [b for b in dict.fromkeys(table["block"]) if b]
    if blocks:
        block = st.selectbox("Block", blocks, key="lm_outlier_block")
        layers = table.loc[table["block"] == block, "layer"].tolist()
        charts.show(lm_plots.block_outliers_figure(absmax, layers, block), key="lm_outliers_block")
    charts.show(lm_plots.outlier_ratio_figure(table), key="lm_outliers_ratio")
    worst = table.loc[table["ratio"].idxmax()]
    above = int(table["above_6"].sum())
    st.caption(f"Over {min(len(data.calibration_inputs), outliers.MAX_SEQUENCES)} calibration sequences. The most "
               f"uneven layer, {worst['layer']}, has one input channel at {worst['ratio']:.1f}x its median channel's "
               f"max |x|; {above} input channel{'s' if above != 1 else ''} in all exceed LLM.int8's threshold of 6. "
               "One per-tensor activation scale spends its levels on the largest channel, so the others get a "
               "coarse step (LLM.int8 keeps outlier channels in float16; SmoothQuant moves them into the weights). "
               "Large LMs grow channels hundreds of times the median; per-token quantization, in the Activations "
               "expander above, gives every token its own scale.")
