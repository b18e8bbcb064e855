"""Mixed precision under a budget (issue 26): the exact allocation, the size arithmetic, the sensitivity cache,
saving/reloading/ONNX with per-layer bits, the card's table and the one-line errors (API and CLI)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from _synq_tiny import synthetic_dataset, tiny_cifar_resnet
from safetensors import safe_open

import synq_hf  # noqa: F401  (registers cifar_resnet*)
from synq_hf import SynQConfig
from synq_hf.apply import act_quantizers, ptq, quantize_model
from synq_hf.config import DefaultBits, is_set, parse_size_budget
from synq_hf.errors import ConfigError, SynQError
from synq_hf.hub.checkpoint import WEIGHTS_FILE, load_quantized, save_quantized
from synq_hf.mixed import (
    SENSITIVITY_FILE,
    SizeModel,
    allocate,
    check_budget,
    pareto_frontier,
    plan_mixed_precision,
    stored_tensor_bytes,
)
from synq_hf.mixed import sensitivity as sensitivity_module
from synq_hf.model_info import model_logits
from synq_hf.quant.packing import packed_layers


def resnet20(seed: int = 0) -> torch.nn.Module:
    """A random CIFAR ResNet-20 as timm builds it (so it saves as a timm folder and reloads), eval mode."""
    torch.manual_seed(seed)
    return timm.create_model("cifar_resnet20", num_classes=10).eval()


def _cycle_bits(model: torch.nn.Module, cycle: tuple[int, ...] = (2, 3, 4, 5, 8)) -> dict[str, int]:
    names = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    return {n: cycle[i % len(cycle)] for i, n in enumerate(names)}


FAST = {"weight_range_init": "minmax", "act_range_init": "minmax", "calibration_batch_size": 8}


# -- the allocation ----------------------------------------------------------------------------------


def _brute_force(costs, values):
    points = []
    for choice in itertools.product(*(range(len(c)) for c in costs)):
        points.append((sum(c[j] for c, j in zip(costs, choice)), sum(v[j] for v, j in zip(values, choice)), choice))
    return points


@pytest.mark.parametrize("seed", range(6))
def test_dp_matches_brute_force_for_every_budget(seed: int) -> None:
    rng = np.random.default_rng(seed)
    layers, options = 5, 4
    costs = [sorted(rng.integers(1, 40, options).tolist()) for _ in range(layers)]
    values = [sorted(rng.random(options).round(3).tolist(), reverse=True) for _ in range(layers)]
    points = _brute_force(costs, values)
    frontier = pareto_frontier(costs, values)
    for budget in range(0, sum(c[-1] for c in costs) + 2):
        fits = [p for p in points if p[0] <= budget]
        best = allocate(costs, values, budget)
        if not fits:
            assert best is None
            continue
        optimum = min(p[1] for p in fits)
        assert best is not None and best.value == pytest.approx(optimum) and best.cost <= budget
        chosen_cost = sum(c[j] for c, j in zip(costs, best.choice))
        chosen_value = sum(v[j] for v, j in zip(values, best.choice))
        assert (chosen_cost, chosen_value) == (best.cost, pytest.approx(best.value))
    # the frontier is exactly the brute-force Pareto set (costs ascending, values strictly descending)
    pareto = sorted({(c, round(v, 9)) for c, v, _ in points
                     if not any(c2 <= c and v2 < v - 1e-12 for c2, v2, _ in points)})
    minimal = []
    for c, v in pareto:
        if not minimal or v < minimal[-1][1] - 1e-12:
            minimal.append((c, v))
    assert [(int(c), round(float(v), 9)) for c, v in zip(frontier.costs, frontier.values)] == minimal
    assert np.all(np.diff(frontier.costs) > 0) and np.all(np.diff(frontier.values) < 0)


def test_allocation_rejects_malformed_tables() -> None:
    with pytest.raises(ConfigError):
        pareto_frontier([[1, 2]], [[0.1]])
    with pytest.raises(ConfigError):
        pareto_frontier([[-1]], [[0.0]])
    with pytest.raises(ConfigError):
        pareto_frontier([], [])


# -- configuration and its errors --------------------------------------------------------------------------


def test_size_budget_forms() -> None:
    assert parse_size_budget("0.25MB") == ("bytes", 250_000.0)
    assert parse_size_budget("300 KB") == ("bytes", 300_000.0)
    assert parse_size_budget("1.5MiB") == ("bytes", 1.5 * 2**20)
    assert parse_size_budget("262144") == ("bytes", 262_144.0)
    assert parse_size_budget(1000) == ("bytes", 1000.0)
    assert parse_size_budget("W3") == ("uniform", 3.0)
    for bad in ("abc", "0MB", "-1KB", "w9", 0, True, 1.5):
        with pytest.raises(ConfigError):
            parse_size_budget(bad)


def test_budget_replaces_w_bits_and_excludes_it() -> None:
    default = SynQConfig()
    assert default.w_bits == 4 and isinstance(default.w_bits, DefaultBits) and not is_set(default, "w_bits")
    assert is_set(SynQConfig(w_bits=4), "w_bits")  # given explicitly, even at the default's value
    cfg = SynQConfig(size_budget="0.25MB")
    assert "w_bits" not in cfg.to_dict() and SynQConfig.from_dict(cfg.to_dict()) == cfg
    assert SynQConfig().replace(avg_w_bits=3.5).avg_w_bits == 3.5
    errors = [
        ({"w_bits": 4, "size_budget": "1MB"}, "size_budget='1MB' and w_bits=4 are both set"),
        ({"w_bits": 3, "avg_w_bits": 3.5}, "avg_w_bits=3.5 and w_bits=3 are both set"),
        ({"a_bits": 8, "avg_a_bits": 6.0}, "avg_a_bits=6.0 and a_bits=8 are both set"),
        ({"size_budget": "1MB", "avg_w_bits": 3.0}, "give one weight budget"),
        ({"avg_w_bits": 1.5}, "below the smallest of w_bits_candidates"),
        ({"avg_w_bits": 33}, "below 32"),
        ({"avg_a_bits": 3.0}, "below the smallest of a_bits_candidates (4 bits)"),
        ({"w_bits_candidates": []}, "non-empty list"),
        ({"w_bits_candidates": [2, 9]}, "from 2 to 8"),
        ({"layer_w_bits": {"conv1": 1}}, "layer_w_bits['conv1']=1"),
        ({"size_budget": "lots"}, "give a size such as"),
    ]
    for kwargs, message in errors:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            SynQConfig(**kwargs)
    with pytest.raises(ConfigError, match="both set"):  # a JSON config that states w_bits is explicit too
        SynQConfig.from_dict({"w_bits": 4, "size_budget": "w3"})


def test_budget_outside_the_reachable_range_is_one_line() -> None:
    model = tiny_cifar_resnet()
    size = check_budget(model, SynQConfig(size_budget="w3", **FAST))
    assert size is not None and size.float_bytes > size.total_bytes({n: 8 for n in size.numel})
    with pytest.raises(ConfigError, match="below the smallest this model reaches") as e:
        check_budget(model, SynQConfig(size_budget="1KB", **FAST))
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="not below the float model's size"):
        check_budget(model, SynQConfig(size_budget=size.float_bytes, **FAST))
    with pytest.raises(ConfigError, match="below the smallest average"):  # 8-bit first/last layers pinned
        check_budget(model, SynQConfig(avg_w_bits=2.0, first_layer_bits=8, last_layer_bits=8, **FAST))
    with pytest.raises(ConfigError, match="does not quantize"):
        check_budget(model, SynQConfig(size_budget="w3", layer_w_bits={"nope": 4}, **FAST))
    assert check_budget(model, SynQConfig()) is None


# -- the size arithmetic and the saved folder ---------------------------------------------------------------


MIXED = {"conv1": 8, "layer1.0.conv1": 2, "layer1.0.conv2": 3, "layer2.0.conv1": 5, "layer2.0.conv2": 4,
         "layer3.0.conv1": 3, "layer3.0.conv2": 2, "linear": 8}  # every layer of the depth-8 ResNet


def test_saved_folder_holds_exactly_the_budget_arithmetic_and_reloads_identically(tmp_path: Path) -> None:
    model = resnet20()
    MIXED = _cycle_bits(model)  # noqa: N806
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cfg = SynQConfig(layer_w_bits=MIXED, layer_a_bits={"relu": 8, "layer3.2.relu2": 2}, **FAST)
    q = ptq(model, cfg, x, progress=False)
    assert {n: layer.weight_quantizer.bits for n, layer in packed_layers(q).items()} == MIXED
    assert {a.name: a.bits for a in act_quantizers(q)}["layer3.2.relu2"] == 2
    save_quantized(q, tmp_path, base_model="tiny", library="timm")
    size = SizeModel.of(model, cfg)
    assert stored_tensor_bytes(tmp_path) == size.total_bytes(MIXED)
    with safe_open(str(tmp_path / WEIGHTS_FILE), framework="pt") as f:
        qmap = json.loads(f.metadata()["synq_qmap"])
        for name, bits in MIXED.items():
            assert f.get_tensor(f"{name}.weight_codes").numel() == -(-size.numel[name] * bits // 8)
    assert qmap["weights"]["layer1.0.conv1.weight"]["container"] == "bitpacked"  # 3 bits
    assert qmap["weights"]["layer1.0.conv2.weight"]["container"] == "uint4x2" and qmap["format"] == "synq-packed-2"
    loaded = load_quantized(tmp_path)
    assert loaded.synq_config.layer_w_bits == MIXED
    with torch.no_grad():
        assert torch.equal(model_logits(q, x), model_logits(loaded.model, x))


def test_transformers_mixed_folder_reloads_both_ways(tmp_path: Path) -> None:
    from transformers import AutoModelForImageClassification, ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    model = ResNetForImageClassification(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                                      layer_type="basic", num_labels=10)).eval()
    names = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    bits = {n: (2, 3, 5, 8)[i % 4] for i, n in enumerate(names)}
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    q = ptq(model, SynQConfig(layer_w_bits=bits, **FAST), x, progress=False)
    save_quantized(q, tmp_path, base_model="tiny", library="transformers",
                   data_config={"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3})
    assert json.loads((tmp_path / "config.json").read_text())["quantization_config"]["layer_w_bits"] == bits
    with torch.no_grad():
        expected = model_logits(q, x)
        assert torch.equal(model_logits(load_quantized(tmp_path).model, x), expected)
        assert torch.equal(AutoModelForImageClassification.from_pretrained(tmp_path).eval()(x).logits, expected)


def test_per_layer_bits_naming_no_layer_are_refused() -> None:
    with pytest.raises(SynQError, match="layer_w_bits names 1 quantized layer"):
        quantize_model(tiny_cifar_resnet(), SynQConfig(layer_w_bits={"conv9": 4}))
    with pytest.raises(SynQError, match="layer_a_bits names 1 activation quantizer"):
        quantize_model(tiny_cifar_resnet(), SynQConfig(layer_a_bits={"relu9": 4}))
    with pytest.raises(SynQError, match="not chosen yet"):
        quantize_model(tiny_cifar_resnet(), SynQConfig(size_budget="w3"))


# -- sensitivity, plan, cache ------------------------------------------------------------------------------


def test_plan_meets_the_budget_and_resumes_from_its_cache(tmp_path: Path, monkeypatch, one_thread) -> None:
    model = tiny_cifar_resnet()
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cfg = SynQConfig(size_budget="w3", avg_a_bits=5.0, **FAST)
    plan = plan_mixed_precision(model, cfg, images, cache_dir=tmp_path, progress=False)
    size = SizeModel.of(model, cfg)
    assert plan.weight_bytes <= plan.budget["bytes"] == size.total_bytes({n: 3 for n in size.numel})
    assert plan.weight_bytes == size.total_bytes(plan.layer_w_bits)
    assert set(plan.layer_w_bits) == set(size.numel) and set(plan.layer_w_bits.values()) <= {2, 3, 4, 8}
    assert plan.avg_a_bits <= 5.0 and set(plan.layer_a_bits.values()) <= {4, 8}
    assert all(r["kl"] >= 0 for r in plan.layers + plan.activations)
    # the frontier: size up, summed KL down; the chosen point is on it
    sizes = [p["bytes"] for p in plan.frontier]
    kls = [p["sum_kl"] for p in plan.frontier]
    assert sizes == sorted(sizes) and kls == sorted(kls, reverse=True)
    assert sum(r["kl"] for r in plan.layers) == pytest.approx(
        float(plan.weight_frontier.best_within(plan.budget["bytes"] - size.fixed_bytes).value), rel=1e-5)
    record = plan.to_record()
    json.dumps(record)
    assert record["weight_bytes"] == plan.weight_bytes and record["cpu_seconds"] >= 0
    table = json.loads((tmp_path / SENSITIVITY_FILE).read_text())
    assert set(table["weights"]) == set(size.numel) and len(table["activations"]) == len(plan.activations)

    # a second plan reads every entry from the cache: nothing is measured again
    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again despite the cache")

    monkeypatch.setattr(sensitivity_module, "_kl", no_measuring)
    again = plan_mixed_precision(model, cfg.replace(size_budget="w4"), images, cache_dir=tmp_path, progress=False)
    assert again.weight_bytes > plan.weight_bytes
    assert sum(r["kl"] for r in again.layers) <= sum(r["kl"] for r in plan.layers)
    monkeypatch.undo()
    # other images: the cache does not apply and is measured again
    other = plan_mixed_precision(model, cfg, images + 1, cache_dir=tmp_path, progress=False)
    assert other.layers != plan.layers or other.frontier != plan.frontier


def test_plan_with_pinned_layers_and_average_bits(one_thread) -> None:
    model = tiny_cifar_resnet()
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cfg = SynQConfig(avg_w_bits=3.0, first_layer_bits=8, layer_w_bits={"linear": 8}, w_bits_candidates=[2, 4],
                     **FAST)
    plan = plan_mixed_precision(model, cfg, images, progress=False)
    assert plan.layer_w_bits["conv1"] == 8 and plan.layer_w_bits["linear"] == 8
    assert plan.avg_w_bits <= 3.0 and set(plan.layer_w_bits.values()) <= {2, 4, 8}


# -- downstream: ONNX, card, SynQQuantizer, CLI -------------------------------------------------------------


def test_onnx_export_has_per_layer_qdq(tmp_path: Path, one_thread) -> None:
    pytest.importorskip("onnxruntime")
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from synq_hf.export import export_onnx

    model = tiny_cifar_resnet()
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cfg = SynQConfig(layer_w_bits=MIXED, layer_a_bits={"relu": 8}, **FAST)
    q = ptq(model, cfg, x, progress=False).eval()
    path = export_onnx(q, tmp_path / "m.onnx", input_size=(3, 32, 32))
    proto = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    conv_codes = []
    for node in proto.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits and inits[node.input[0]].ndim >= 2:
            conv_codes.append(inits[node.input[0]])
    def width(codes: np.ndarray) -> int:  # the bits the widest output channel's codes span
        flat = codes.astype(np.int64).reshape(codes.shape[0], -1)
        return int(np.ceil(np.log2((flat.max(1) - flat.min(1)).max() + 1)))

    widths = sorted(width(c) for c in conv_codes)
    assert widths == sorted(MIXED.values())  # each weight's codes span exactly its own bit-width
    ops = [n.op_type for n in proto.graph.node]
    # one Q/DQ pair per activation quantizer; the 4-bit ones clip to their range, the 8-bit 'relu' needs no Clip
    assert ops.count("QuantizeLinear") == len(act_quantizers(q)) and ops.count("Clip") == len(act_quantizers(q)) - 1
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"pixel_values": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(out, model_logits(q, x).numpy(), atol=1e-4)


def test_card_shows_the_per_layer_table_and_the_budget(one_thread) -> None:
    from synq_hf.hub.card import render_model_card

    model = tiny_cifar_resnet()
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cfg = SynQConfig(size_budget="w3", **FAST)
    plan = plan_mixed_precision(model, cfg, images, progress=False)
    card = render_model_card(base_model="tiny", library="timm", synq_config=plan.apply(cfg),
                             mixed_precision=plan.to_record(), results={"synq_top1": 50.0, "dataset": "cifar10"})
    text = str(card)
    assert "### Bits per layer" in text and "`layer3.0.conv2`" in text
    assert f"stored {plan.weight_bytes:,} bytes (met)" in text
    assert f"W{plan.avg_w_bits:.2f}A4 mixed" in text and "mixed-precision" in card.data.tags
    assert "| `w_bits` | `replaced by the budget` |" in text


def test_quantizer_refuses_a_bad_budget_before_synthesis(monkeypatch) -> None:
    from synq_hf import SynQQuantizer
    from synq_hf.pipeline import LoadedModel

    teacher = LoadedModel(model=tiny_cifar_resnet(), model_id="tiny", library="timm", family="cnn",
                          data_config={"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3},
                          num_classes=10)
    monkeypatch.setattr(SynQQuantizer, "synthesize", lambda *a, **k: pytest.fail("synthesized"))
    for kwargs, message in (({"size_budget": "10B"}, "below the smallest"), ({"size_budget": "1GB"}, "float")):
        with pytest.raises(ConfigError, match=message):
            SynQQuantizer(teacher, SynQConfig(**kwargs))


def test_quantizer_allocates_then_fine_tunes_saves_and_reloads(tmp_path: Path, one_thread) -> None:
    from synq_hf import SynQQuantizer
    from synq_hf.pipeline import LoadedModel

    teacher = LoadedModel(model=resnet20(), model_id="tiny", library="timm", family="cnn",
                          data_config={"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3},
                          num_classes=10)
    cfg = SynQConfig(avg_w_bits=3.0, a_bits=4, sensitivity_num_images=8, train_batch_size=4, lpf_d0=0.0,
                     calibration_num_images=8, **FAST)
    q = SynQQuantizer(teacher, cfg, device="cpu")
    q.quantize(synthetic_dataset(16), max_steps=2, progress=False)
    assert q.mixed_plan is not None and q.config.layer_w_bits == q.mixed_plan.layer_w_bits
    bits = {n: layer.weight_quantizer.bits for n, layer in packed_layers(q.model).items()}
    assert bits == q.mixed_plan.layer_w_bits and q.mixed_plan.avg_w_bits <= 3.0
    assert q.results_json()["mixed_precision"]["avg_w_bits"] == round(q.mixed_plan.avg_w_bits, 4)
    out = q.save_pretrained(tmp_path / "out")
    loaded = load_quantized(out)
    assert loaded.extra["mixed_precision"]["layers"][0]["w_bits"] == bits["conv1"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model_logits(q.model, x), model_logits(loaded.model, x))
    assert "### Bits per layer" in (out / "README.md").read_text()
    assert q.allocate_bits() is None  # the bits are chosen: nothing to do again


@pytest.fixture(scope="module")
def cifar_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from timm.models import save_for_hf

    folder = tmp_path_factory.mktemp("teacher")
    save_for_hf(resnet20(), folder, safe_serialization=True)
    return folder


def _cli(model: Path, out: Path, *extra: str) -> int:
    from synq_hf.cli import main

    return main(["quantize", f"local-dir:{model}", "--method", "ptq", "--out", str(out), "--no-progress", *extra])


def test_cli_budget_errors_are_one_line_and_early(cifar_folder: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    from synq_hf import SynQQuantizer

    monkeypatch.setattr(SynQQuantizer, "synthesize", lambda *a, **k: pytest.fail("synthesized"))
    out = tmp_path / "q"
    cases = [
        (("--size-budget", "0.25MB", "--w-bits", "4"), "both set"),
        (("--size-budget", "0.25MB", "--avg-w-bits", "3"), "give one weight budget"),
        (("--size-budget", "100B"), "below the smallest this model reaches"),
        (("--size-budget", "5GB"), "not below the float model's size"),
        (("--avg-w-bits", "1"), "below the smallest of w_bits_candidates"),
        (("--size-budget", "small"), "give a size such as"),
    ]
    for flags, message in cases:
        assert _cli(cifar_folder, out, *flags) == 1
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
        assert not out.exists()


def test_cli_ptq_with_a_size_budget(cifar_folder: Path, tmp_path: Path, capsys, one_thread) -> None:
    out = tmp_path / "q"
    config = json.dumps({"synthesis_iterations": 1, "synthesis_batch_size": 8, "calibration_num_images": 8,
                         "sensitivity_num_images": 8, **FAST})
    assert _cli(cifar_folder, out, "--config", config, "--size-budget", "w3", "--layer-w-bits",
                '{"conv1": 8}', "--w-bits-candidates", "2", "4", "8") == 0
    printed = capsys.readouterr().out
    assert "mixed-precision" in printed and "bits per weight" in printed
    loaded = load_quantized(out)
    assert loaded.synq_config.layer_w_bits["conv1"] == 8 and loaded.synq_config.size_budget == "w3"
    assert set(loaded.synq_config.layer_w_bits.values()) <= {2, 4, 8}
    record = loaded.extra["mixed_precision"]
    assert stored_tensor_bytes(out) == record["weight_bytes"] <= record["budget"]["bytes"]
    assert not (tmp_path / "q.synq-work").exists()  # the work folder (and its sensitivity cache) is removed


def test_cli_flags_come_from_the_config_fields(capsys) -> None:
    from synq_hf.cli import main

    with pytest.raises(SystemExit):
        main(["quantize", "--help"])
    text = capsys.readouterr().out
    for flag in ("--size-budget", "--avg-w-bits", "--avg-a-bits", "--w-bits-candidates", "--a-bits-candidates",
                 "--layer-w-bits JSON", "--layer-a-bits JSON", "--sensitivity-num-images"):
        assert flag in text, flag
    with pytest.raises(SystemExit):
        main(["quantize", "m", "--out", "o", "--layer-w-bits", "[8]"])
    assert "expected a JSON object" in capsys.readouterr().err


def test_card_of_hand_set_per_layer_bits_names_their_range() -> None:
    from synq_hf.hub.card import render_model_card

    card = render_model_card(base_model="tiny", library="timm", synq_config=SynQConfig(layer_w_bits=MIXED))
    assert "W2-8A4 mixed (mixed precision: weights 2, 3, 4, 5, 8-bit per layer" in str(card)
    assert "### Bits per layer" not in str(card)  # no allocation record: no sensitivity table to show
