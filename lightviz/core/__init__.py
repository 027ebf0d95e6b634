"""The math and the engine: specs, quantization, pruning, size accounting, metrics, layer
discovery, activation calibration, the prefix cache and the Engine that puts them together.

Holds: `specs` (frozen, validated configs: QuantSpec, PruneSpec, ActivationSpec, LayerConfig,
Plan, TrainConfig), `quant`, `prune`, `size`, `metrics`, `layers`, `activations`, `engine`,
`prefix` (activations before a layer, reused by sensitivity), `evaldata` (the EvalData the
engine consumes) and `task` (classification or causal LM: metric, direction, LM presets). May import: torch, numpy, pandas and the standard library; nothing else of
lightviz. Every other room builds on this one.
"""
