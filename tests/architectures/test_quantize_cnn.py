"""``quantize_model`` on timm CNNs (random init): module swapping, placement, policy, accuracy vs bits, gradients."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from torch import nn

from synq_hf import SynQConfig
from synq_hf.apply import act_quantizers, is_quantized, ptq, quant_mode, quantize_model
from synq_hf.errors import SynQError, UnsupportedModelError
from synq_hf.quant import QuantConv2d, QuantLinear
from synq_hf.quant.layers import OutputQuantized

# (timm name, test image side): small inputs keep each forward in milliseconds
MODELS = [("test_resnet", 32), ("mobilenetv2_035", 48)]


def _float_model(name: str, size: int, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """A random-init timm model whose BN statistics match a random input batch (so outputs are sane)."""
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False)
    for m in model.modules():  # timm zero-inits the last BN of each block, which blocks gradients
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, std=0.1)
    x = torch.randn(12, 3, size, size)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x)
    return model.eval(), x


@pytest.fixture(scope="module", params=MODELS, ids=[m for m, _ in MODELS])
def float_model(request: pytest.FixtureRequest) -> tuple[nn.Module, torch.Tensor]:
    return _float_model(*request.param)


def _counts(model: nn.Module) -> tuple[int, int, int]:
    convs = sum(type(m) in (nn.Conv2d, nn.Linear) for m in model.modules())
    acts = sum(type(m) in (nn.ReLU, nn.ReLU6) for m in model.modules())
    return convs, acts, len(list(model.modules()))


def test_every_layer_swapped_and_every_layer_input_quantized(float_model: tuple[nn.Module, torch.Tensor]) -> None:
    """Non-ReLU-ResNet CNNs: every conv/linear gets weights and an input quantizer, except the image reader."""
    model, _ = float_model
    n_layers, _, _ = _counts(model)
    names_before = [n for n, _ in model.named_modules()]
    q = quantize_model(model, SynQConfig(w_bits=4, a_bits=4), inplace=False)
    assert is_quantized(q) and not is_quantized(model)  # inplace=False leaves the float model alone
    assert not any(type(m) in (nn.Conv2d, nn.Linear) for m in q.modules())
    swapped = {n: m for n, m in q.named_modules() if isinstance(m, (QuantConv2d, QuantLinear))}
    assert len(swapped) == n_layers
    assert all(m.weight_quantizer.bits == 4 and m.weight_quantizer.per_channel for m in swapped.values())
    first = next(iter(swapped))
    assert swapped[first].input_quantizer is None  # it reads the image
    assert all(m.input_quantizer is not None and m.input_quantizer.bits == 4
               for n, m in swapped.items() if n != first)
    assert not any(isinstance(m, OutputQuantized) for m in q.modules())
    aq_names = [aq.name for aq in act_quantizers(q)]
    assert len(aq_names) == n_layers - 1 and len(set(aq_names)) == len(aq_names)  # named after their layers
    # original module names survive (quantizers are added below them), so float weights load unchanged
    assert set(names_before) <= {n for n, _ in q.named_modules()}
    assert set(model.state_dict()) <= set(q.state_dict())
    cfg = q.synq_config
    assert isinstance(cfg, SynQConfig) and cfg.w_bits == 4 and cfg.weight_symmetric is False  # CNN default


def test_quantize_model_is_inplace_by_default_and_refuses_twice() -> None:
    model, _ = _float_model("test_resnet", 32)
    out = quantize_model(model, SynQConfig())
    assert out is model
    with pytest.raises(SynQError, match="already quantized"):
        quantize_model(model, SynQConfig())


def test_unsupported_model_names_supported_ones() -> None:
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.GELU(), nn.Linear(8, 3))
    with pytest.raises(UnsupportedModelError, match="supported are.*resnet"):
        quantize_model(mlp, SynQConfig())
    assert not is_quantized(mlp)


def test_include_exclude_globs() -> None:
    model, _ = _float_model("test_resnet", 32)
    q = quantize_model(model, SynQConfig(exclude=["layer1.*", "fc"]), inplace=False)
    for name, m in q.named_modules():
        if name.startswith("layer1.") or name == "fc":
            assert not isinstance(m, (QuantConv2d, QuantLinear, OutputQuantized)), name
    assert isinstance(q.conv1[0], QuantConv2d) and isinstance(q.layer2[0].conv1, QuantConv2d)

    q = quantize_model(model, SynQConfig(include=["layer2.*"]), inplace=False)
    quantized = {n for n, m in q.named_modules() if isinstance(m, (QuantConv2d, QuantLinear, OutputQuantized))}
    assert quantized and all(n.startswith("layer2.") for n in quantized)

    with pytest.raises(UnsupportedModelError, match="include/exclude"):
        quantize_model(model, SynQConfig(include=["no_such_layer"]), inplace=False)


@pytest.mark.parametrize(("name", "first", "last"), [("test_resnet", "conv1.0", "fc"),
                                                     ("mobilenetv2_035", "conv_stem", "classifier")])
def test_first_last_bit_overrides(name: str, first: str, last: str) -> None:
    model = timm.create_model(name, pretrained=False)
    q = quantize_model(model, SynQConfig(w_bits=3, a_bits=3, first_layer_bits=8, last_layer_bits=6))
    layers = {n: m for n, m in q.named_modules() if isinstance(m, (QuantConv2d, QuantLinear))}
    assert layers[first].weight_quantizer.bits == 8
    assert layers[last].weight_quantizer.bits == 6
    others = {m.weight_quantizer.bits for n, m in layers.items() if n not in (first, last)}
    assert others == {3}
    # a layer's input quantizer follows that layer's bits: the classifier's input gets last_layer_bits
    assert {a.bits for a in act_quantizers(q) if a.name != f"{last}.input_quantizer"} == {3}
    assert layers[last].input_quantizer.bits == 6


def test_float_mode_reproduces_the_float_model(float_model: tuple[nn.Module, torch.Tensor]) -> None:
    model, x = float_model
    q = ptq(model, SynQConfig(w_bits=4, a_bits=4), x, progress=False)
    for m in q.modules():
        if isinstance(m, (QuantConv2d, QuantLinear)):
            m.weight_quantizer.enabled = False
    with torch.no_grad(), quant_mode(q, "float"):
        assert torch.equal(q(x), model(x))


def test_error_decreases_with_bits(float_model: tuple[nn.Module, torch.Tensor]) -> None:
    model, x = float_model
    with torch.no_grad():
        ref = model(x)
    errors = {}
    for bits in (2, 3, 4, 8):
        q = ptq(model, SynQConfig(w_bits=bits, a_bits=bits), x, progress=False)
        with torch.no_grad():
            errors[bits] = ((q(x) - ref).pow(2).mean() / ref.pow(2).mean()).item()
    values = [errors[b] for b in sorted(errors)]
    assert values == sorted(values, reverse=True), errors  # monotone: more bits, less error
    assert errors[8] < 0.1 and errors[2] > 50 * errors[8], errors  # W8A8 close to float, W2A2 much worse


def test_gradients_reach_every_weight(float_model: tuple[nn.Module, torch.Tensor]) -> None:
    model, x = float_model
    q = ptq(model, SynQConfig(w_bits=4, a_bits=4), x, progress=False)
    q.train()
    for p in q.parameters():
        p.grad = None
    q(x[:4]).logsumexp(1).sum().backward()
    layers = [(n, m) for n, m in q.named_modules() if isinstance(m, (QuantConv2d, QuantLinear))]
    for name, m in layers:
        assert m.weight.grad is not None and m.weight.grad.abs().sum() > 0, name
    for name, p in q.named_parameters():
        assert p.grad is not None, name


def test_deepcopy_of_quantized_model_is_independent() -> None:
    model, x = _float_model("test_resnet", 32)
    q = ptq(model, SynQConfig(w_bits=4, a_bits=4), x, progress=False)
    q2 = copy.deepcopy(q)
    with torch.no_grad():
        assert torch.equal(q(x), q2(x))
        q2.fc.weight.mul_(2)
        assert not torch.equal(q(x), q2(x))
