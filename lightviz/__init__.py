"""lightviz: explore how quantization and pruning trade a network's accuracy against its size.

>>> import torch, lightviz as lv
>>> lv.fake_quantize(torch.tensor([-10.0, -5.0, 10.0]), lv.QuantSpec(bits=8, granularity="tensor"))
tensor([-10.0000,  -5.0394,  10.0000])
"""

from lightviz.engine import Engine, Evaluation, LayerResult, uniform_plan
from lightviz.prune import prune_mask
from lightviz.quant import QParams, choose_qparams, dequantize, fake_quantize, quantize
from lightviz.activations import wa_label
from lightviz.specs import ActivationSpec, LayerConfig, Plan, PruneSpec, QuantSpec

__all__ = [
    "ActivationSpec", "Engine", "Evaluation", "LayerConfig", "LayerResult", "Plan", "PruneSpec", "QParams", "QuantSpec",
    "choose_qparams", "dequantize", "fake_quantize", "prune_mask", "quantize", "uniform_plan", "wa_label",
]
