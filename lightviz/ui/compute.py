"""Where the app computes: the sidebar's device choice (auto, cpu, cuda), and Ray for the long
analyses (sweeps, sensitivity, mixed-precision candidates) when LIGHTVIZ_RAY_ADDRESS is set.

- Device: one choice per session, kept in `st.session_state[DEVICE_STATE]`; engines are cached
  per (model, device), so sessions on the CPU and on a GPU share nothing but the float model.
  Choosing `cuda` on a server without CUDA shows one error under the picker and keeps the
  previous choice. The default is $LIGHTVIZ_DEVICE, else `auto`.
- Ray: LIGHTVIZ_RAY_ADDRESS="auto" (or "ray://host:10001", ...) joins that cluster once per
  server; "local" starts a local instance. Without it, Ray is never imported. A cluster that
  cannot be reached is reported once per run and the work runs here instead.
"""

from __future__ import annotations

import os

import streamlit as st
import torch

from lightviz.analysis.parallel import Backend, LocalBackend
from lightviz.core.device import DEVICES, cuda_available, default_choice, describe, resolve_device

DEVICE_STATE = "device"  # the session's choice, the source of truth
DEVICE_KEY = "device_picker"  # the widget
DEVICE_ERROR = "device_error"
RAY_ENV = "LIGHTVIZ_RAY_ADDRESS"


# --- device ----------------------------------------------------------------------------------------


def device() -> str:
    """The session's device as a torch device string ("cpu", "cuda:0"): what engines are keyed by."""
    choice = st.session_state.get(DEVICE_STATE) or default_choice()
    try:
        return str(resolve_device(choice))
    except ValueError:  # e.g. LIGHTVIZ_DEVICE=cuda on a server without CUDA: the CPU, said in the sidebar
        return "cpu"


def render_device() -> None:
    """The sidebar's device picker and a caption saying where the engine computes."""
    ss = st.session_state
    if DEVICE_STATE not in ss:
        ss[DEVICE_STATE] = default_choice() if default_choice() in DEVICES else "auto"
        _check(ss[DEVICE_STATE])
    ss[DEVICE_KEY] = ss[DEVICE_STATE]
    st.selectbox("Device", DEVICES, key=DEVICE_KEY, on_change=_on_pick, format_func=_label,
                 help="Where models run: compression, evaluation, calibration, sensitivity and fine-tuning. "
                      "auto takes a CUDA GPU when the server has one, else the CPU. A GPU gives the same "
                      "quantization codes; logits can differ in the last bits.")
    if ss.get(DEVICE_ERROR):
        st.error(ss.pop(DEVICE_ERROR))
    st.caption(f"Computing on {describe(torch.device(device()))}")


def _label(choice: str) -> str:
    if choice == "auto":
        return f"auto ({'a CUDA GPU' if cuda_available() else 'the CPU: no CUDA here'})"
    if choice == "cuda" and not cuda_available():
        return "cuda (not available here)"
    return choice


def _on_pick() -> None:
    choice = st.session_state[DEVICE_KEY]
    if _check(choice):
        st.session_state[DEVICE_STATE] = choice


def _check(choice: str) -> bool:
    try:
        resolve_device(choice)
    except ValueError as error:
        st.session_state[DEVICE_ERROR] = f"{error}; the previous choice stays."
        return False
    return True


# --- Ray ---------------------------------------------------------------------------------------------


def ray_address() -> str | None:
    """LIGHTVIZ_RAY_ADDRESS, or None when the app runs everything here."""
    return os.environ.get(RAY_ENV, "").strip() or None


@st.cache_resource(show_spinner="Connecting to Ray…")
def _ray_backend(address: str):
    """(backend, None) once connected, or (None, why not): a failure is kept too, so an unreachable
    cluster costs one attempt per server, not one per rerun."""
    from lightviz.analysis.ray_backend import RayBackend  # only with LIGHTVIZ_RAY_ADDRESS set

    try:
        return RayBackend(address).start(), None
    except ValueError as error:
        return None, str(error)


def backend() -> Backend:
    """Where a sweep, a sensitivity or mixed-precision candidates run: Ray when configured, else here."""
    address = ray_address()
    if address is None:
        return LocalBackend()
    found, error = _ray_backend(address)
    if found is None:
        st.warning(f"{error}. Running here instead; restart the app after fixing {RAY_ENV}.")
        return LocalBackend()
    return found


def backend_caption(chosen: Backend) -> str:
    """'' here, else ' on Ray (…)' for progress texts and captions."""
    return "" if isinstance(chosen, LocalBackend) else f" on {chosen.describe()}"
