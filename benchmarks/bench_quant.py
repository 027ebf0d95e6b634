"""Speed of fake quantization and of the per-layer cache, as ratios measured in one run.

1. Fake-quantize every Conv/Linear weight of torchvision's resnet18 (11.7 M weights), 8-bit
   symmetric per channel, against torch.ao's reference (PerChannelMinMaxObserver +
   torch.fake_quantize_per_channel_affine) in the same process; results must be bit-exact.
   Budget: ratio <= 0.4.
2. Engine: recompute after one layer's setting changes, as a fraction of recomputing every
   layer after a global change. Budget: < 10%.

Run: .venv/bin/python benchmarks/bench_quant.py   (machines are noisy: read the ratios)
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torchvision  # noqa: E402
from torch.ao.quantization.observer import PerChannelMinMaxObserver  # noqa: E402

from lightviz.core.engine import Engine  # noqa: E402
from lightviz.core.quant import fake_quantize  # noqa: E402
from lightviz.core.specs import LayerConfig, Plan, QuantSpec  # noqa: E402
from lightviz.io.zoo import load_model  # noqa: E402

ROUNDS = 9


def reference(weights: list[torch.Tensor]) -> list[torch.Tensor]:
    out = []
    for weight in weights:
        observer = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                            quant_min=-127, quant_max=127)
        observer(weight)
        scale, zero_point = observer.calculate_qparams()
        out.append(torch.fake_quantize_per_channel_affine(weight, scale, zero_point.int(), 0, -127, 127))
    return out


def ours(weights: list[torch.Tensor]) -> list[torch.Tensor]:
    spec = QuantSpec(bits=8, scheme="symmetric", granularity="channel")
    return [fake_quantize(weight, spec) for weight in weights]


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def bench_fake_quantize() -> float:
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    weights = [m.weight.detach() for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    n = sum(w.numel() for w in weights)
    exact = all(torch.equal(a, b) for a, b in zip(ours(weights), reference(weights)))
    ref_times, our_times = [], []
    for _ in range(ROUNDS):  # interleaved, so drift hits both alike
        ref_times.append(timed(reference, weights))
        our_times.append(timed(ours, weights))
    ref, mine = statistics.median(ref_times), statistics.median(our_times)
    ratio = mine / ref
    print(f"fake-quantize resnet18, {len(weights)} weights, {n / 1e6:.1f} M values, int8 sym per channel "
          f"({torch.get_num_threads()} threads)")
    print(f"  torch.ao reference  {ref * 1e3:8.1f} ms (median of {ROUNDS})")
    print(f"  lightviz            {mine * 1e3:8.1f} ms")
    print(f"  ratio {ratio:.2f}  (budget <= 0.40)  bit-exact: {exact}")
    return ratio


def bench_layer_cache(model: torch.nn.Module, label: str) -> None:
    engine = Engine(model)
    base = Plan(default=LayerConfig(quant=QuantSpec(bits=8)))
    engine.compress_layers(base)  # folds BatchNorm once (cached), as the app's first view does
    whole, one = [], []
    for i in range(ROUNDS):
        plan = Plan(default=LayerConfig(quant=QuantSpec(bits=2 + i % 7)))  # a global change: every layer
        whole.append(timed(engine.compress_layers, plan))
        for layer in engine.layers:  # then change one layer at a time
            changed = plan.with_override(layer.name, LayerConfig(quant=QuantSpec(bits=3, scheme="asymmetric")))
            one.append((layer.name, timed(engine.compress_layers, changed)))
            engine.compress_layers(plan)  # back (cache hit)
    whole_t = statistics.median(whole)
    fractions = sorted(t / whole_t for _, t in one)
    worst = max(one, key=lambda item: item[1])
    print(f"per-layer cache, {label} ({len(engine.layers)} layers): whole model {whole_t * 1e3:.1f} ms")
    print(f"  one layer changed: median {statistics.median(fractions):.1%} of the whole "
          f"(budget < 10%), 90th percentile {fractions[int(0.9 * len(fractions))]:.1%}, "
          f"largest layer {worst[0]} {worst[1] / whole_t:.1%}")


def main() -> None:
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else min(torch.get_num_threads(), 2))
    bench_fake_quantize()
    torch.manual_seed(0)
    bench_layer_cache(torchvision.models.resnet18().eval(), "torchvision resnet18")
    bench_layer_cache(load_model("digits-cnn").model, "digits-cnn")


if __name__ == "__main__":
    main()
