"""Run an exported ONNX model in onnxruntime (CPU) and check it against lightviz's simulation.

>>> from torch import nn
>>> from lightviz.core.engine import Engine, uniform_plan
>>> from lightviz.core.evaldata import EvalData
>>> from lightviz.io.onnx_export import export_onnx
>>> engine, data = Engine(nn.Sequential(nn.Linear(4, 3))), EvalData(torch.randn(8, 4), None, "r", "random")
>>> check = runtime_check(engine, uniform_plan(8), data, export_onnx(engine, uniform_plan(8), data))
>>> check.agreement, check.max_logit_diff < 1e-5
(1.0, True)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from lightviz.core import metrics
from lightviz.core.engine import Engine, eval_batch_size
from lightviz.core.evaldata import EvalData
from lightviz.core.specs import Plan

GRAPH_OPTIMIZATION = "all"  # onnxruntime's ORT_ENABLE_ALL: QDQ fusion (QLinearConv, ...) included


@dataclass(frozen=True)
class RuntimeCheck:
    """onnxruntime's outputs against lightviz's simulated outputs on the same inputs."""

    agreement: float  # fraction of inputs with the same top-1 class
    max_logit_diff: float  # largest |logit difference| over all inputs and classes
    n_samples: int

    def to_dict(self) -> dict:
        return {"agreement": self.agreement, "max_logit_diff": self.max_logit_diff, "n_samples": self.n_samples}


def session(model: onnx.ModelProto | bytes | str | Path, threads: int | None = None,
            optimized_path: str | Path | None = None, spinning: bool = False, fuse_qdq: bool = True):
    """An onnxruntime CPU InferenceSession, all graph optimizations on.

    Args:
        threads: intra-op threads (None: onnxruntime's default, one per core).
        optimized_path: also write the graph onnxruntime optimized (fused) to this file.
        spinning: let idle worker threads spin (onnxruntime's default). Off here: on a shared
            or small machine spinning threads steal the cores other sessions and torch need.
        fuse_qdq: onnxruntime's QDQ handling (fusing into integer kernels; weight
            DequantizeLinear kept in the graph). False sets `session.disable_quant_qdq`: constant
            weights are then dequantized once, when the model loads.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not fuse_qdq:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    if isinstance(source, Path):
        source = str(source)
    if isinstance(source, str) and not os.path.isfile(source):
        raise ValueError(f"no ONNX file at {source}")
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run(sess, x: torch.Tensor, batch: int | None = None) -> torch.Tensor:
    """The session's first output on `x`, in batches, as a float32 tensor."""
    name = sess.get_inputs()[0].name
    batch = batch or eval_batch_size(x)
    outs = [sess.run(None, {name: x[i:i + batch].numpy()})[0] for i in range(0, len(x), batch)]
    return torch.from_numpy(np.concatenate(outs)).float()


def runtime_check(engine: Engine, plan: Plan, data: EvalData, export, threads: int | None = None) -> RuntimeCheck:
    """Agreement and max logit difference of the exported model (onnxruntime) with `engine.logits(plan)`."""
    model = export.model if hasattr(export, "model") else export
    onnx_logits = run(session(model, threads), data.x)
    simulated = engine.logits(plan, data)
    return RuntimeCheck(agreement=metrics.agreement(simulated, onnx_logits),
                        max_logit_diff=float((simulated - onnx_logits).abs().max()), n_samples=len(data))
