"""Where models and data come from: the sample zoo and torchvision architectures (`zoo`),
evaluation datasets (`datasets`: scikit-learn's bundled digits, generated inputs), safe loading
of a user's model files (`loading`, `safeload`: data, never code) and data files (`userdata`),
Hugging Face causal language model folders and their tokenizers (`hf`) and text (`text`),
and export: ONNX QDQ (`onnx_export`, `onnx_graph`, `onnx_runtime`), the packed file (`packed`,
`packed_layer`, `bitpack`, `codes`), physical filter removal (`physical`, `channel_flow`).

May import: `lightviz.core` (never the reverse), torch, torchvision, numpy, scikit-learn,
safetensors, Pillow; transformers only inside `hf`'s functions; onnx, onnxscript and
onnxruntime only inside the export modules (which nothing imports at start-up).
"""
