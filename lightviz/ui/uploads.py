"""Sidebar uploads: the user's own model weights and evaluation data, loaded safely.

Files are data, never code: weights load through `lightviz.io.loading` (safetensors or
`torch.load(weights_only=True)`); formats that can run code when loaded need the "trust code"
setting, off by default. A failed upload shows one message and leaves the loaded model as it was.
"""

from __future__ import annotations

import streamlit as st

from lightviz.io import loading, userdata, zoo
from lightviz.io.safeload import TRUST_HINT, max_upload_bytes
from lightviz.recover import saved
from lightviz.ui import data_registry, lm, registry, state
from lightviz.ui.text import plain

DATA_KEY = state.USER_DATA_KEY
MODEL_TYPES = ["safetensors", "pt", "pth", "pt2", "bin"]
DATA_TYPES = ["npz", "zip"]
APP_TRUST_HINT = 'loading it can run arbitrary code; tick "Trust code in this file" only for files you made or fully trust'


def render() -> None:
    """The "Your own model and data" expander of the sidebar."""
    limit_mb = max_upload_bytes() // 2**20
    with st.sidebar.expander("Your own model and data", icon=":material/upload:"):
        with st.form("model_upload", clear_on_submit=False, border=False):
            upload = st.file_uploader(f"Weights (≤ {limit_mb} MB)", type=MODEL_TYPES,
                                      help="A state_dict as .safetensors, .pt or .pth, for an architecture below; "
                                           "or fine-tuned / distilled weights downloaded from lightviz (no "
                                           "architecture needed: the file names it).")
            arch = st.selectbox("Architecture", zoo.list_architectures(), index=None,
                                placeholder="sample or torchvision architecture",
                                help="The number of classes is read from the weights.")
            trust = st.checkbox("Trust code in this file", value=False,
                                help="TorchScript and torch.export (.pt2) archives run code when loaded. Pickled whole "
                                     "modules are still read weights-only, with classes from torch.nn, torchvision "
                                     "and lightviz only. Tick only for files you made or fully trust.")
            if st.form_submit_button("Load model") and upload is not None:
                _load_model(upload, arch, trust)
        lm.folder_upload_form()  # a Hugging Face causal LM folder
        bundle = state.current_bundle()
        if bundle.task == "causal_lm":  # a language model reads text
            lm.model_caption()
            lm.text_upload_form()
            _default_data_button()
            return
        st.caption(plain(f"Input shape {tuple(bundle.input_shape)} · {bundle.num_classes} classes: "
                         f"{_classes_text(bundle.class_names)}"))
        with st.form("data_upload", clear_on_submit=False, border=False):
            data = st.file_uploader("Evaluation data", type=DATA_TYPES,
                                    help=".npz with x (and y for labels), or a .zip of class folders of images. "
                                         "ImageNet-style folders, named by WordNet id (n01440764) or category "
                                         "(tench), take the model's own class numbers, so accuracy on an ImageNet "
                                         "validation subset is real. Without labels, only fidelity to the float "
                                         "model is measured.")
            recipe = bundle.preprocess
            if recipe is not None:
                st.caption(plain(f"Images are {recipe.describe()}, as {recipe.source or 'the model'} expects, unless "
                                 "you set them below."))
            size = st.number_input("Image size (px, zip only)", min_value=0, max_value=userdata.MAX_IMAGE_SIZE,
                                   value=0, help=f"0: the model's own preprocessing (or its input size); a size "
                                                 f"resizes images straight to it. Images x channels x size² may "
                                                 f"reach {userdata.MAX_INPUT_VALUES:,} values "
                                                 f"({userdata.MAX_INPUT_VALUES * 4 // 2**20} MiB of float32).")
            mean = st.text_input("Mean per channel (zip only)", value="", placeholder="e.g. 0.485, 0.456, 0.406")
            std = st.text_input("Std per channel (zip only)", value="", placeholder="e.g. 0.229, 0.224, 0.225")
            subset = st.number_input("Load at most (samples)", min_value=0, value=0,
                                     help="0: all. A seeded random subset; big image sets take memory "
                                          "(1,000 images of 3x224x224 take 600 MB). Evaluation samples, "
                                          "below, can use fewer still.")
            if st.form_submit_button("Load data") and data is not None:
                _load_data(data, size, mean, std, subset)
        _default_data_button()


def _default_data_button() -> None:
    if st.session_state.get(DATA_KEY, {}).get(state.current_name()) is not None:
        if st.button("Use the default data again"):
            st.session_state.get(lm.RAW_KEY, {}).pop(state.current_name(), None)
            state.use_uploaded_data(None)
            st.rerun()


def _load_model(upload, arch: str | None, trust: bool) -> None:
    try:
        with st.spinner(plain(f"Loading {upload.name}…")):
            if saved.read_meta(upload.getvalue()) is not None:  # fine-tuned / distilled weights made by lightviz
                name = registry.register_file(upload.getvalue())
            else:
                name = registry.register_upload(loading.load_user_model(upload, upload.name, arch, trust_code=trust))
            try:  # from now on visible to this session
                state.load_engine(name)  # builds the engine: a model with no compressible layer fails here
            except Exception:
                registry.disown(name)
                raise
    except loading.UntrustedCodeError as error:  # the library's hint names the CLI flag
        st.error(plain(f"{_sentence(str(error).replace(TRUST_HINT, APP_TRUST_HINT))} "
                       f"Still showing {state.current_name()}."))
        return
    except (ValueError, OSError, RuntimeError) as error:
        st.error(plain(f"{_failed('load', upload.name, error)} Still showing {state.current_name()}."))
        return
    except Exception as error:  # noqa: BLE001 - whatever a hostile file provokes: one message, nothing lost
        st.error(plain(f"Could not load {upload.name} ({type(error).__name__}: {_sentence(error)}) "
                       f"Still showing {state.current_name()}."))
        return
    state.set_model(name)
    st.rerun()


def _load_data(upload, size: int, mean: str, std: str, subset: int) -> None:
    bundle = state.current_bundle()
    try:
        data = userdata.load_user_data(upload, upload.name, bundle, image_size=size or None,
                                       mean=_floats(mean, "mean"), std=_floats(std, "std"),
                                       max_samples=subset or None)
    except (ValueError, OSError) as error:
        st.error(plain(f"{_failed('use', upload.name, error)} The previous data is still in use."))
        return
    except Exception as error:  # noqa: BLE001 - whatever a hostile file provokes: one message, nothing lost
        st.error(plain(f"Could not use {upload.name} ({type(error).__name__}: {_sentence(error)}) "
                       "The previous data is still in use."))
        return
    token = data_registry.token_for(upload.name, upload.getvalue(), (size, mean, std, subset))
    state.use_uploaded_data(data, token)  # all of the new data; the link names it
    st.rerun()


def _floats(text: str, what: str) -> list[float] | None:
    if not text.strip():
        return None
    try:
        return [float(part) for part in text.replace(";", ",").split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"{what} must be numbers separated by commas; got {text!r}.") from None


def _classes_text(names: tuple[str, ...]) -> str:
    shown = ", ".join(names[:8])
    return shown + (f", … ({len(names) - 8} more)" if len(names) > 8 else "")


def _failed(verb: str, name: str, error: Exception) -> str:
    """'Could not <verb> <name>: <why>.', without naming the file twice when the reason does."""
    why = _sentence(error)
    return f"Could not {verb} {why}" if why.startswith(f"{name}:") else f"Could not {verb} {name}: {why}"


def _sentence(error: Exception | str) -> str:
    text = str(error).strip()
    return text if text.endswith((".", "!", "?")) else text + "."
