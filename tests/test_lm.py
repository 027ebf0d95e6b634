"""Language models: perplexity against an independent computation, the float plan exact, every
Linear / Conv1D / attention projection found and compressed, tied weights once, scale storage,
per-token activations, text data, generation, outliers, sensitivity per block, allocation and
fine-tuning in perplexity. Models are the shipped tiny-gpt and random-init GPT-2, Llama and
Qwen-style configs (nothing is downloaded)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightviz.analysis import generate, mixed, outliers, sensitivity, sweep
from lightviz.core.activations import TokenFakeQuant
from lightviz.core.engine import Engine, uniform_plan
from lightviz.core.evaldata import EvalData, subset
from lightviz.core.quant import fake_quantize
from lightviz.core.size import weight_size
from lightviz.core.specs import ActivationSpec, LayerConfig, Plan, QuantSpec
from lightviz.core.task import LM, preset_spec, with_float_embeddings
from lightviz.io import hf, text, zoo

W4G128 = QuantSpec(bits=4, scheme="asymmetric", granularity="group", group_size=128, scale_dtype="float16")


@pytest.fixture(scope="module")
def tiny():
    """(bundle, engine, 4 sequences x 128 tokens of the held-out text) of the shipped sample."""
    bundle = zoo.load_model("tiny-gpt")
    return bundle, Engine(bundle.model), subset(text.sample_text_data(bundle, 128), 4)


def lm_data(n: int = 2, seq_len: int = 16, seed: int = 0) -> EvalData:
    x = torch.randint(0, 256, (n, seq_len), generator=torch.Generator().manual_seed(seed))
    calibration = torch.randint(0, 256, (2, seq_len), generator=torch.Generator().manual_seed(seed + 1))
    return EvalData(x=x, y=None, name="random tokens", description="random tokens", task="causal_lm",
                    calibration=calibration)


def test_perplexity_is_exp_of_mean_token_cross_entropy_computed_independently(tiny):
    bundle, engine, data = tiny
    with torch.inference_mode():
        logits = bundle.model(data.x).logits.double()  # (N, T, V), straight from transformers
    independent = math.exp(F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                           data.x[:, 1:].reshape(-1)).item())
    evaluation = engine.evaluate(with_float_embeddings(Plan(default=LayerConfig(quant=W4G128)), engine.layers), data)
    assert evaluation.float_perplexity == pytest.approx(independent, rel=1e-6)
    assert evaluation.n_tokens == data.x.shape[0] * (data.x.shape[1] - 1)
    assert evaluation.perplexity > evaluation.float_perplexity  # 4 bits cost something
    assert set(evaluation.to_dict()) >= {"perplexity", "float_perplexity", "agreement", "kl", "size_bytes"}
    assert "accuracy" not in evaluation.to_dict()


def test_float_plan_equals_the_float_model_exactly(tiny):
    bundle, engine, data = tiny
    for plan in (uniform_plan(None), Plan(default=LayerConfig(keep_float=True))):
        evaluation = engine.evaluate(plan, data)
        assert evaluation.perplexity == evaluation.float_perplexity
        assert evaluation.agreement == 1.0 and evaluation.kl == 0.0
        with torch.inference_mode():
            assert torch.equal(engine.compress(plan)(data.x).logits, bundle.model(data.x).logits)


def test_shipped_sample_keeps_its_card_promises(tiny):
    """8-bit per channel within 1% of float, 4-bit group-128 visibly worse, 2-bit broken."""
    _, engine, data = tiny
    float_ppl = engine.evaluate(uniform_plan(None), data).float_perplexity

    def ppl(spec):
        return engine.evaluate(with_float_embeddings(Plan(default=LayerConfig(quant=spec)), engine.layers),
                               data).perplexity
    assert float_ppl < 7.0
    assert abs(ppl(QuantSpec(bits=8)) / float_ppl - 1) < 0.01
    assert ppl(W4G128) / float_ppl > 1.02
    assert ppl(QuantSpec(bits=2, scheme="asymmetric", granularity="group", group_size=128)) / float_ppl > 2.0


@pytest.mark.parametrize("family, linear, conv1d, head", [
    ("gpt2", 0, 4, "tied"), ("llama", 7, 0, "untied"), ("qwen2", 7, 0, "tied")])
def test_every_linear_of_a_random_init_lm_is_found_and_compressed(family, linear, conv1d, head):
    model = hf.random_causal_lm(family)  # 2 blocks
    engine = Engine(model)
    kinds = [layer.kind for layer in engine.layers]
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    assert kinds.count("Conv1D") == 2 * conv1d
    assert kinds.count("Linear") == 2 * linear + (head == "untied") == n_linear - (head == "tied")
    tied = [layer for layer in engine.layers if layer.tied]
    assert [layer.tied for layer in tied] == ([("lm_head",)] if head == "tied" else [])
    compressed = engine.compress(uniform_plan(4, granularity="channel"))
    for layer in engine.layers:  # every weight, embeddings and head included, now has at most 15 levels per row
        weight = getattr(compressed.get_submodule(layer.module_path), layer.param)
        rows = weight.movedim(layer.axis, 0).reshape(weight.shape[layer.axis], -1)
        assert max(len(row.unique()) for row in rows) <= 15, layer.name
        assert not torch.equal(weight, getattr(model.get_submodule(layer.module_path), layer.param))
    if head == "tied":  # still one tensor, counted once
        assert compressed.lm_head.weight is compressed.get_input_embeddings().weight
        unique = {p.data_ptr(): p.numel() * 4 for p in model.parameters()}
        assert engine.float_size_bytes == sum(unique.values()) + sum(b.numel() * b.element_size()
                                                                     for _, b in model.named_buffers()
                                                                     if _ in model.state_dict())
        assert engine.float_size_bytes < sum(t.numel() * 4 for t in model.state_dict().values())


def test_vit_b_16_attention_in_projections_are_found_and_compressed():
    import torchvision
    from torchvision.models.vision_transformer import VisionTransformer

    from lightviz.core.layers import find_layers

    with torch.device("meta"):  # shapes only: 86 M weights, no memory
        vit = torchvision.models.vit_b_16()
    layers = find_layers(vit)
    in_proj = [layer for layer in layers if layer.param == "in_proj_weight"]
    assert len(in_proj) == 12 and sum(layer.n_weights for layer in in_proj) == 12 * 3 * 768 * 768  # 21.2 M
    matrices = sum(m.weight.numel() for m in vit.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    assert sum(layer.n_weights for layer in layers) == matrices + 12 * 3 * 768 * 768  # nothing left float
    torch.manual_seed(0)
    small = VisionTransformer(image_size=32, patch_size=16, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64).eval()
    nn.init.normal_(small.heads.head.weight)  # torchvision starts the head at zero: every output would be 0
    engine = Engine(small)
    name = "encoder.layers.encoder_layer_0.self_attention.in_proj"
    plan = Plan(default=LayerConfig(keep_float=True), overrides={name: LayerConfig(quant=QuantSpec(bits=2))})
    compressed = engine.compress(plan)
    attention = compressed.encoder.layers.encoder_layer_0.self_attention
    assert torch.equal(attention.in_proj_weight, fake_quantize(small.encoder.layers.encoder_layer_0.self_attention
                                                               .in_proj_weight.detach(), QuantSpec(bits=2)))
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert not torch.equal(compressed(x), small(x))
    assert engine.compress_layer(plan, name).size.qparam_bits == 3 * 32 * 32  # one float32 scale per output row


def test_scale_storage_type_counts_in_size_and_rounds_the_scales():
    size = weight_size((64, 256), W4G128, None)
    assert size.bits_per_weight == pytest.approx(4 + (16 + 4) / 128)  # 4.156: 4-bit codes, fp16 scale, 4-bit zero
    assert weight_size((64, 256), QuantSpec(bits=4, scheme="asymmetric", granularity="group"),
                       None).bits_per_weight == pytest.approx(4 + (32 + 4) / 128)
    weight = torch.randn(8, 256, generator=torch.Generator().manual_seed(0))
    from lightviz.core.quant import choose_qparams

    scales = choose_qparams(weight, W4G128).scale
    assert torch.equal(scales, scales.half().float())  # representable in float16
    assert preset_spec("w4g128") == W4G128


def test_per_token_activations_give_each_token_its_own_range(tiny):
    x = torch.tensor([[[0.5, -1.0, 2.0], [100.0, 3.0, -7.0]]])
    out = TokenFakeQuant(QuantSpec(bits=4))(None, (x,))[0]
    for row in range(2):
        assert torch.equal(out[0, row], fake_quantize(x[0, row:row + 1], QuantSpec(bits=4, granularity="channel"))[0])
    _, engine, data = tiny
    spec = ActivationSpec(bits=4, per_token=True)  # W32A4: 4-bit asymmetric inputs, weights float
    plan = replace_activations(Plan(default=LayerConfig(quant=QuantSpec(bits=None))), spec)
    assert Plan.from_json(plan.to_json()) == plan and '"per_token": true' in plan.to_json()
    per_token = engine.evaluate(plan, data).perplexity
    per_tensor = engine.evaluate(replace_activations(plan, ActivationSpec(bits=4)), data).perplexity
    float_ppl = engine.evaluate(plan, data).float_perplexity
    assert float_ppl < per_token < per_tensor  # outlier channels stretch one range per tensor (here +115% vs +40%)


def replace_activations(plan: Plan, spec: ActivationSpec) -> Plan:
    from dataclasses import replace

    return replace(plan, activations=spec)


def test_text_files_bad_and_good(tmp_path, tiny):
    bundle = tiny[0]
    good = tmp_path / "notes.jsonl"
    good.write_text('{"text": "' + "print('hello world')\\n" * 40 + '"}\n"' + "x = 1\\n" * 50 + '"\n')
    data = text.user_text_data(bundle, good, seq_len=64)
    assert data.task == "causal_lm" and data.x.shape[1] == 64 and data.calibration.shape[1] == 64
    assert not set(map(tuple, data.x.tolist())) & set(map(tuple, data.calibration.tolist()))  # apart
    cases = {"binary.txt": b"\x00\x01\x02" * 100, "empty.txt": b"", "latin1.txt": "caf\xe9 ".encode("latin-1") * 99,
             "short.txt": b"tiny", "bad.jsonl": b'{"text": 3}\n'}
    messages = {"binary.txt": "binary", "empty.txt": "empty", "latin1.txt": "not UTF-8", "short.txt": "too short",
                "bad.jsonl": "line 1"}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=messages[name]) as error:
            text.user_text_data(bundle, tmp_path / name, seq_len=64)
        assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="over the upload limit"):
        text.user_text_data(bundle, good, seq_len=64, max_bytes=100)


def test_generation_is_greedy_repeatable_and_shows_what_bits_do(tiny):
    bundle, engine, _ = tiny
    same = generate.compare_generation(engine, uniform_plan(None), bundle.tokenizer, "def ", n_new=24)
    assert same.identical and same.same_tokens == 24 and same.prompt == "def "
    plan = with_float_embeddings(uniform_plan(2, granularity="tensor"), engine.layers)
    broken = generate.compare_generation(engine, plan, bundle.tokenizer, "def ", n_new=24)
    assert not broken.identical and broken.float_text == same.float_text
    assert broken == generate.compare_generation(engine, plan, bundle.tokenizer, "def ", n_new=24)
    with torch.inference_mode():  # the key/value cache gives what full forwards give
        ids = bundle.tokenizer.encode("def ")
        for _ in range(24):
            ids.append(int(bundle.model(torch.tensor([ids])).logits[0, -1].argmax()))
    assert list(same.float_ids) == ids[4:]


def test_outliers_are_per_input_channel_absmax(tiny):
    _, engine, data = tiny
    absmax = outliers.channel_absmax(engine, data.calibration_inputs)
    name = "transformer.h.0.mlp.c_proj"
    seen = []
    handle = engine.model.get_submodule(name).register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    with torch.inference_mode():
        engine.model(data.calibration_inputs[:outliers.MAX_SEQUENCES])
    handle.remove()
    assert torch.equal(absmax[name], torch.cat(seen).abs().amax(dim=(0, 1)))
    table = outliers.outlier_table(absmax)
    assert set(table["block"]) == {f"transformer.h.{i}" for i in range(4)}
    assert "transformer.wte" not in absmax  # embedding inputs are token ids


def test_sensitivity_per_block_and_allocation_in_perplexity(tiny):
    _, engine, data = tiny
    base = with_float_embeddings(Plan(default=LayerConfig(quant=QuantSpec(bits=4))), engine.layers)
    units = sensitivity.blocks(engine, [n for n in engine.by_name if not base.config_for(n).keep_float])
    assert list(units) == [f"transformer.h.{i}" for i in range(4)] and all(len(v) == 4 for v in units.values())
    df = sensitivity.sensitivity(engine, data, [2, 8], base=base, units=units)
    assert list(df.columns) == sensitivity.LM_SENSITIVITY_COLUMNS and len(df) == 8
    two = df[df["bits"] == 2]
    assert (two["perplexity_increase"] > 0).all()
    assert (two["perplexity_increase"] == two["perplexity"] / two["float_perplexity"] - 1).all()
    result = mixed.allocate(engine, data, df, base, avg_bits=5.0)
    ev = result.evaluation
    assert set(result.bits) == set(units) and ev.quantized_bits_per_weight <= 5.0 + 1e-9
    assert all(result.plan.config_for(name).keep_float for name in ("transformer.wte", "transformer.wpe"))
    uniform2 = engine.evaluate(with_float_embeddings(mixed.uniform_at(base, 2), engine.layers), data)
    assert ev.perplexity < uniform2.perplexity  # lower is better: the allocation did not pick the worst
    rows = sweep.run_sweep(engine, data, [with_float_embeddings(uniform_plan(b), engine.layers) for b in (2, 4, 8)])
    front = sweep.pareto_front(rows, y="perplexity")
    assert list(rows.columns) == sweep.LM_SWEEP_COLUMNS and front["perplexity"].is_monotonic_decreasing


def test_finetune_a_language_model_in_perplexity(one_thread):
    from lightviz.recover.finetune import finetune

    model = hf.random_causal_lm("llama")
    train, test = lm_data(8, 16, seed=3), lm_data(2, 16, seed=5)
    train = EvalData(x=train.x, y=None, name="train tokens", description="", task="causal_lm")
    plan = uniform_plan(4)
    result = finetune(model, plan, train, test, epochs=2, lr=1e-3, batch_size=4)
    summary = result.summary()
    assert {"perplexity_before", "perplexity_after", "float_perplexity"} <= set(summary)
    assert list(result.history.columns)[4] == "test_perplexity"
    assert Engine(result.model).evaluate(plan, test).perplexity == pytest.approx(result.accuracy_after)
    assert LM.format(result.accuracy_after) != "n/a"


# --- the command line ------------------------------------------------------------------------------


def _run(capsys, *argv):
    from lightviz.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_evaluate_reports_perplexity_with_the_same_layers_list(capsys):
    code, out, err = _run(capsys, "evaluate", "--model", "tiny-gpt", "--preset", "w4g128", "--max-samples", "2",
                          "--seq-len", "64", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert {"perplexity", "float_perplexity", "agreement", "kl", "size_bytes", "float_size_bytes",
            "compression_ratio", "layers", "quantized_bits_per_weight"} <= set(report)
    assert "accuracy" not in report and "float_accuracy" not in report
    assert report["perplexity"] > report["float_perplexity"] and report["wa"] == "W4A32"
    assert report["quantized_bits_per_weight"] == pytest.approx(4 + (16 + 4) / 128)  # fp16 scale + 4-bit zero per 128
    layers = {layer["name"]: layer for layer in report["layers"]}
    assert {"name", "bits", "scheme", "granularity", "sparsity", "sqnr_db", "mse", "size_bytes"} <= set(
        layers["transformer.h.0.attn.c_attn"])
    assert layers["transformer.wte"]["bits"] is None and layers["transformer.h.3.mlp.c_proj"]["bits"] == 4
    assert "lm_head" not in layers  # tied to transformer.wte: one layer


def test_cli_report_export_and_benchmark_on_a_language_model(tmp_path, capsys):
    """The report speaks perplexity; the packed file holds the LM; ONNX and benchmark refuse in one line."""
    common = ["--model", "tiny-gpt", "--preset", "w4g128", "--max-samples", "2", "--seq-len", "64"]
    code, out, err = _run(capsys, "report", *common, "--sweep-bits", "none", "--out", str(tmp_path / "r.html"))
    assert code == 0, err
    html = (tmp_path / "r.html").read_text()
    assert "perplexity" in out and "Perplexity against size" in html and "same top-1 answer" not in html
    bundle = zoo.load_model("tiny-gpt")
    engine = Engine(bundle.model)
    plan = with_float_embeddings(Plan(default=LayerConfig(quant=preset_spec("w4g128"))), engine.layers)
    expected = engine.evaluate(plan, subset(text.sample_text_data(bundle, 64), 2))
    assert f"{expected.float_perplexity:.4g} → {expected.perplexity:.4g}" in out  # the engine's numbers
    code, out, err = _run(capsys, "export", *common, "--format", "lightviz", "--out", str(tmp_path / "lm.safetensors"))
    assert code == 0 and (tmp_path / "lm.safetensors").is_file(), err
    code, out, err = _run(capsys, "evaluate", *common, "--method", "gptq")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "language model" in err, err
    for argv in (["export", "--format", "onnx", "--out", str(tmp_path / "lm.onnx")], ["benchmark"]):
        code, out, err = _run(capsys, *argv, *common)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "language model" in err, err


def test_cli_refuses_broken_model_folders_and_text_with_one_line(tmp_path, capsys):
    source = zoo.SAMPLE_MODELS_DIR / "tiny-gpt"
    config = json.loads((source / "config.json").read_text())
    cases = {"custom": ({**config, "auto_map": {"AutoModelForCausalLM": "evil.Model"}}, None, "asks for custom code"),
             "corrupt": (config, (source / "model.safetensors").read_bytes()[:5000], "not a valid safetensors"),
             "mismatch": ({**config, "n_embd": 64}, None, "does not fit its config.json")}
    for name, (config_json, weights, words) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config_json))
        (folder / "model.safetensors").write_bytes(weights or (source / "model.safetensors").read_bytes())
        code, out, err = _run(capsys, "evaluate", "--model", str(folder), "--bits", "4")
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and words in err, (name, err)
    (tmp_path / "data.txt").write_bytes(b"\x00\x01binary")
    code, _, err = _run(capsys, "evaluate", "--model", "tiny-gpt", "--data", str(tmp_path / "data.txt"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "binary" in err


def test_cli_models_lists_the_language_model(capsys):
    code, out, _ = _run(capsys, "models", "--json")
    assert code == 0 and json.loads(out)["language_models"] == ["tiny-gpt"]


# --- model folders: legacy .bin pickles, tokenizer files ---------------------------------------------


class _Payload:
    def __reduce__(self):
        return (print, ("this ran",))


def test_bin_weights_go_through_the_weights_only_rules(tmp_path):
    model = hf.random_causal_lm("qwen2")
    model.save_pretrained(tmp_path / "safe")
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "config.json").write_text((tmp_path / "safe" / "config.json").read_text())
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    loaded = hf.load_hf_folder(folder)
    x = torch.randint(0, 256, (1, 8))
    with torch.inference_mode():
        assert torch.equal(loaded.model(x).logits, model(x).logits)
    torch.save({**model.state_dict(), "lm_head.extra": _Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pickled Python object") as error:
        hf.load_hf_folder(folder)
    assert "\n" not in str(error.value)


def test_a_folders_own_tokenizer_is_used_and_a_missing_one_refused(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = (zoo.SAMPLE_MODELS_DIR / "text" / "calibration.txt").read_text()[:20000]
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel()
    tokenizer.train_from_iterator([corpus], trainers.BpeTrainer(vocab_size=400, special_tokens=["[UNK]"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]")
    model = hf.random_causal_lm("llama", vocab_size=len(fast))
    model.save_pretrained(tmp_path)
    fast.save_pretrained(tmp_path)
    bundle = hf.load_hf_folder(tmp_path)
    assert isinstance(bundle.tokenizer, hf.HFTokenizer) and bundle.num_classes == len(fast)
    ids = bundle.tokenizer.encode("def f(x):\n    return x")
    assert ids == fast("def f(x):\n    return x", add_special_tokens=False)["input_ids"] and max(ids) < len(fast)
    data = text.sample_text_data(bundle, 64)
    assert data.x.max() < len(fast) and Engine(bundle.model).evaluate(uniform_plan(8), subset(data, 2)).perplexity > 1
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).unlink()
    with pytest.raises(ValueError, match="no tokenizer files") as error:
        hf.load_hf_folder(tmp_path)
    assert "\n" not in str(error.value)


def test_digits_paths_do_not_import_transformers():
    """transformers loads only when a language model is asked for (the app's modules import fine)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "import lightviz.ui.sidebar, lightviz.ui.lm, lightviz.ui.explore, lightviz.ui.finetune, lightviz.cli\n"
            "from lightviz.core.engine import Engine, uniform_plan\n"
            "from lightviz.io import datasets, zoo\n"
            "bundle = zoo.load_model('digits-cnn')\n"
            "Engine(bundle.model).evaluate(uniform_plan(4), datasets.eval_data_for(bundle, 8))\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('transformers', 'tokenizers')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=zoo.SAMPLE_MODELS_DIR.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
