"""A short glossary, in the sidebar of every page: the words the numbers use."""

from __future__ import annotations

import streamlit as st

TERMS = {
    "SQNR": "Signal-to-quantization-noise ratio, in dB: 10·log10(Σw² / Σ(w − ŵ)²). Higher means less error; "
            "every +6 dB is about one more bit. 'Output SQNR' is the same over the model's logits.",
    "KL": "Kullback–Leibler divergence KL(p_float ‖ p_compressed) between the two models' predicted "
          "probabilities, averaged over inputs, in nats. 0 when the outputs match; it needs no labels.",
    "pp": "Percentage points: 97.0 % → 95.5 % is −1.5 pp (a relative change would be −1.5 %).",
    "Agreement": "Share of inputs where the compressed model's top-1 class equals the float model's.",
    "W8A32": "Weights in 8 bits, activations (layer inputs) in 32-bit float. W4A8: 4-bit weights, 8-bit inputs.",
    "scale s, zero-point z": "A b-bit code q stands for s·(q − z). s is the step between levels; z is the code "
                             "of 0.0 (0 for symmetric).",
    "symmetric / asymmetric": "Symmetric: codes ±(2^(b−1)−1) around 0 (narrow: 2 bits has only −1, 0, +1). "
                              "Asymmetric: codes 0…2^b−1 fitted to [min, max] with a zero-point.",
    "per tensor / per channel / per group": "How many weights share one (s, z): the whole tensor, each output "
                                            "channel, or each run of group-size weights inside a channel.",
    "n:m": "Structured sparsity: in every run of m weights keep the n largest (2:4 keeps half). Hardware can "
           "skip the zeros; the index costs log2(m) bits per kept weight.",
    "bitmask": "A storage format for sparse weights: one bit per weight says kept or pruned, then the kept "
               "values.",
    "fold BatchNorm": "Merge a BatchNorm into the conv before it (new weights and bias): the same function with "
                      "fewer tensors, as deployed int8 models do. Not compression.",
    "fine-tuning / distillation": "Training the compressed model to win accuracy back (QAT), or training a small "
                                  "model to imitate a large one's outputs.",
}


def render() -> None:
    """The glossary as an expander at the end of the sidebar."""
    with st.sidebar.expander("Glossary", icon=":material/menu_book:"):
        for term, meaning in TERMS.items():
            st.markdown(f"**{term}** — {meaning}")
