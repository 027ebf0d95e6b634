"""Post-training quantization methods beyond round-to-nearest (GPTQ, AdaRound, bias correction,
cross-layer equalization, SmoothQuant, AWQ, Hadamard rotations).

`spec` holds the frozen `MethodSpec` (imported by core/specs.py, so it stays free of torch);
`pipeline` runs a Plan's methods for the Engine; one module per method family holds its math.
This package file imports nothing, so `lightviz.core.specs` stays light.
"""
