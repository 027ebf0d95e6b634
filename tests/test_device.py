"""--device auto|cpu|cuda: resolution, refusal without CUDA, the sidebar choice, and (where a CUDA GPU
exists) the same codes and the same evaluation on the GPU as on the CPU."""

from __future__ import annotations

import pytest
import torch
from streamlit.testing.v1 import AppTest

from lightviz.analysis import explore as analysis
from lightviz.analysis.sensitivity import sensitivity
from lightviz.cli import main
from lightviz.core.device import describe, model_device, resolve_device
from lightviz.core.engine import Engine, uniform_plan
from lightviz.core.quant import choose_qparams, quantize
from lightviz.core.specs import ActivationSpec, Plan, QuantSpec
from lightviz.io import datasets, zoo
from lightviz.recover.finetune import finetune

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU on this machine (torch.cuda.is_available() is "
                                                     "False): the GPU checks run where one is")
needs_no_cuda = pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA: 'cuda' is not refused here")


def test_resolve_device_choices():
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(None) == torch.device("cpu")
    assert resolve_device("auto") == (torch.device("cuda", 0) if HAS_CUDA else torch.device("cpu"))
    assert describe(torch.device("cpu")).startswith("CPU (")
    for bad in ("gpu", "cuda:x", 3):
        with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda"):
            resolve_device(bad)


@needs_no_cuda
def test_cuda_without_cuda_is_refused_in_one_line(capsys):
    with pytest.raises(ValueError, match=r"needs a CUDA GPU, and PyTorch sees none on this machine"):
        resolve_device("cuda")
    assert main(["evaluate", "--model", "digits-mlp", "--device", "cuda", "--json"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "use 'auto' or 'cpu'" in err
    assert main(["evaluate", "--model", "digits-mlp", "--device", "auto", "--max-samples", "20", "--json"]) == 0


def test_engine_on_the_cpu_keeps_the_callers_model():
    model = zoo.build_sample("digits-mlp").eval()
    assert Engine(model).model is model and Engine(model, device="cpu").model is model
    assert Engine(model, device="auto").device == resolve_device("auto")


@needs_no_cuda
def test_sidebar_device_choice_refuses_cuda_and_keeps_computing_on_the_cpu(monkeypatch):
    monkeypatch.setenv("LIGHTVIZ_DEVICE", "auto")  # the app's own default (conftest pins the CPU)
    at = AppTest.from_file("../app.py", default_timeout=60).run()
    picker = at.sidebar.selectbox(key="device_picker")
    assert picker.value == "auto" and any("Computing on CPU" in c.value for c in at.sidebar.caption)
    picker.set_value("cuda").run()
    assert [e.value for e in at.sidebar.error][0].startswith("device 'cuda' needs a CUDA GPU")
    assert at.session_state["device"] == "auto" and at.sidebar.selectbox(key="device_picker").value == "auto"
    at.sidebar.selectbox(key="device_picker").set_value("cpu").run()
    assert not at.exception and not at.sidebar.error and at.session_state["device"] == "cpu"


# --- on a CUDA GPU ----------------------------------------------------------------------------------


@needs_cuda
@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric"])
@pytest.mark.parametrize("granularity", ["tensor", "channel", "group"])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_fake_quant_on_cuda_gives_the_cpu_codes(bits, scheme, granularity):
    weight = torch.randn(64, 3, 5, 5, generator=torch.Generator().manual_seed(bits)) * 0.1
    spec = QuantSpec(bits=bits, scheme=scheme, granularity=granularity, group_size=16)
    qp_cpu, qp_gpu = choose_qparams(weight, spec), choose_qparams(weight.cuda(), spec)
    assert torch.equal(qp_gpu.scale.cpu(), qp_cpu.scale) and torch.equal(qp_gpu.zero_point.cpu(), qp_cpu.zero_point)
    assert torch.equal(quantize(weight.cuda(), spec).cpu(), quantize(weight, spec))


@needs_cuda
@pytest.mark.parametrize("range_method", ["percentile", "mse", "entropy"])
def test_range_methods_on_cuda_give_the_cpu_codes(range_method):
    weight = torch.randn(32, 144, generator=torch.Generator().manual_seed(1))
    spec = QuantSpec(bits=4, granularity="channel", range_method=range_method)
    assert torch.equal(quantize(weight.cuda(), spec).cpu(), quantize(weight, spec))


@needs_cuda
def test_evaluate_on_cuda_equals_the_cpu():
    bundle = zoo.load_model("digits-cnn")
    data = datasets.eval_data_for(bundle)
    cpu, gpu = Engine(bundle.model, device="cpu"), Engine(bundle.model, device="cuda")
    assert model_device(bundle.model).type == "cpu" and gpu.device.type == "cuda"  # the caller's model stays put
    for plan in (uniform_plan(4), uniform_plan(8, scheme="asymmetric", granularity="group", group_size=16),
                 uniform_plan(4, sparsity=0.5), Plan(activations=ActivationSpec(bits=8))):
        a, b = cpu.evaluate(plan, data), gpu.evaluate(plan, data)
        assert (a.size_bytes, a.float_size_bytes, a.avg_bits_per_weight) == (b.size_bytes, b.float_size_bytes,
                                                                             b.avg_bits_per_weight)
        assert abs(a.accuracy - b.accuracy) <= 1 / len(data) and abs(a.agreement - b.agreement) <= 1 / len(data)
        assert torch.allclose(cpu.logits(plan, data), gpu.logits(plan, data), atol=1e-4, rtol=1e-4)
    raw = Plan(default=uniform_plan(4).default, fold_bn=False)  # unfolded weights are the same bits on both
    for name, result in gpu.compress_layers(raw).items():
        assert torch.equal(result.weight_hat.cpu(), cpu.compress_layer(raw, name).weight_hat)
    table = gpu.layer_table(uniform_plan(4))  # display paths take device tensors
    assert len(table) == len(gpu.layers)
    assert analysis.weight_histogram(gpu.compress_layer(uniform_plan(4), "classifier")).n_weights > 0


@needs_cuda
def test_sensitivity_and_finetune_on_cuda():
    bundle = zoo.load_model("digits-cnn")
    train, test = datasets.digits_split()
    small = datasets.subset(test, 200)
    cpu = sensitivity(Engine(bundle.model, device="cpu"), small, bits=[2, 4])
    gpu = sensitivity(Engine(bundle.model, device="cuda"), small, bits=[2, 4])
    assert gpu.attrs["reuse"] and (cpu["accuracy"] - gpu["accuracy"]).abs().max() <= 2 / len(small)
    result = finetune(bundle.model, uniform_plan(2), datasets.subset(train, 256), small, epochs=1, device="cuda")
    assert model_device(result.model).type == "cpu" and result.accuracy_after is not None
