"""Explore's prefix reuse: a one-layer change recomputes only what follows that layer, the logits
stay bit-identical to a full forward, and the kept activations stay within their budget."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch import nn

from lightviz.core.engine import Engine, uniform_plan
from lightviz.core.evaldata import EvalData
from lightviz.core.specs import ActivationSpec, LayerConfig, QuantSpec
from lightviz.io import datasets, zoo


@pytest.fixture(scope="module")
def resnet():
    bundle = zoo.load_model("digits-resnet")  # residual blocks, BatchNorm folding, in-place ReLUs
    return bundle, datasets.subset(datasets.digits_split()[1], 300)  # two batches


def test_one_layer_changes_recompute_only_the_tail_and_match_full_forwards(resnet):
    bundle, data = resnet
    engine, reference = Engine(bundle.model, prefix_bytes=64 * 2**20), Engine(bundle.model)
    order = [layer.name for layer in engine.layers]
    rng, plan = random.Random(0), uniform_plan(8)
    assert torch.equal(engine.logits(plan, data), reference.logits(plan, data))
    assert engine.run_info(plan, data).start_layer is None  # the first plan runs from the input
    for step in range(5):
        layer = rng.choice(order)
        plan = plan.with_override(layer, LayerConfig(quant=QuantSpec(bits=2 + step % 5)))
        if step == 3:
            plan = replace(plan, activations=ActivationSpec(bits=8))  # another activation spec: from the input
        got = engine.logits(plan, data)
        assert torch.equal(got, reference.logits(plan, data)), (step, layer)
        info = engine.run_info(plan, data)
        expected_start = None if step == 3 else layer
        calls = next(iter(engine._runners.values()))[1].order  # call order: a shortcut runs after its block's convs
        assert info.start_layer == expected_start, (step, layer)
        assert info.layers_run == (len(calls) if expected_start is None else len(calls) - calls.index(layer))
        assert 0 < info.held_bytes <= info.budget_bytes


def test_kept_activations_stay_within_a_small_budget(resnet):
    bundle, data = resnet
    engine, reference = Engine(bundle.model, prefix_bytes=700_000), Engine(bundle.model)
    plan = uniform_plan(4)
    for layer, bits in (("fc", 3), ("layer3.conv2", 3), ("stem.0", 3), ("fc", 2)):
        plan = plan.with_override(layer, LayerConfig(quant=QuantSpec(bits=bits)))
        assert torch.equal(engine.logits(plan, data), reference.logits(plan, data))
        info = engine.run_info(plan, data)
        assert info.held_bytes <= 700_000 and "limit 0.7 MiB" in info.describe()
    assert info.start_layer == "fc" and info.layers_run == 1  # the latest positions are kept first


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x) if x.sum() > 0 else -self.fc(x)  # data-dependent control flow


def test_untraceable_model_runs_full_forwards():
    x = torch.randn(10, 4, generator=torch.Generator().manual_seed(0)).abs()
    data = EvalData(x, None, "x", "ten inputs")
    model = Untraceable().eval()
    engine = Engine(model, prefix_bytes=2**20)
    assert torch.equal(engine.logits(uniform_plan(4), data), Engine(model).logits(uniform_plan(4), data))
    assert engine.run_info(uniform_plan(4), data) is None
    assert "could not trace" in next(iter(engine._runners.values()))[2]


def test_explore_says_what_a_one_layer_change_recomputed():
    at = AppTest.from_file("../app.py", default_timeout=60).run()
    at.sidebar.number_input(key="eval_size_input").set_value(123).run()  # data no other test evaluated
    at.session_state["layer_editor"] = {"edited_rows": {3: {"bits": 4}}, "added_rows": [], "deleted_rows": []}
    at.run()
    assert not at.exception and not at.error
    assert dict(at.session_state["plan"].overrides) == {"classifier": LayerConfig(quant=QuantSpec(bits=4))}
    captions = [c.value for c in at.caption if c.value.startswith("This evaluation recomputed")]
    assert captions and captions[0].startswith("This evaluation recomputed 1 of 4 layers from classifier")


def test_two_sessions_taking_turns_each_resume_from_their_own_plan(resnet):
    bundle, data = resnet
    engine, reference = Engine(bundle.model, prefix_bytes=64 * 2**20), Engine(bundle.model)
    alice, bob = uniform_plan(8), uniform_plan(4, scheme="asymmetric")
    for plan in (alice, bob):
        engine.logits(plan, data)
    for _ in range(2):  # alice, then bob, then alice again: each change starts at its own layer
        alice = alice.with_override("layer3.conv1", LayerConfig(quant=QuantSpec(bits=3 + _)))
        bob = bob.with_override("fc", LayerConfig(quant=QuantSpec(bits=2 + _)))
        for plan, layer in ((alice, "layer3.conv1"), (bob, "fc")):
            assert torch.equal(engine.logits(plan, data), reference.logits(plan, data))
            assert engine.run_info(plan, data).start_layer == layer
