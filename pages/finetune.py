"""Fine-tune: win accuracy back with quantization-aware training and knowledge distillation."""

import streamlit as st

from lightviz.ui import finetune, router, state
from lightviz.ui.text import plain

router.through_router("pages/finetune.py")  # opened by URL before the app first ran

st.title("Fine-tune")
st.caption(finetune.caption())
reason = finetune.trainable()
if reason:
    st.info(plain(reason))
    st.stop()
mode = st.radio("What to train", finetune.modes(), horizontal=True, key="finetune_mode", label_visibility="collapsed")
settings = finetune.finetune_form() if mode == finetune.MODES[0] else finetune.distill_form()
if settings is not None:
    start = finetune.start_finetune if mode == finetune.MODES[0] else finetune.start_distill
    state.attempt(lambda: start(settings), "Training could not start", "change the settings and press Start again")
finetune.job_section()
