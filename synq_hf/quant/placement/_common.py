"""Quantizer insertion steps shared by the timm and transformers ViT/Swin placements (PSAQ-ViT)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ...errors import UnsupportedModelError
from ..layers import QuantConv2d, QuantLinear, attach_output_quantizer
from ..policy import LayerPolicy


def policy_name(policy: LayerPolicy, name: str, heads: tuple[str, ...]) -> str:
    """The name whose bit-widths ``name`` uses: every classifier head follows ``policy.last``."""
    return policy.last if name in heads and policy.last else name


def quantize_conv(conv: nn.Conv2d, policy: LayerPolicy, name: str) -> None:
    """Patch-embedding conv: quantized weights; its input (the image) stays float."""
    QuantConv2d.from_float(conv, policy.weight_quantizer(name))


def quantize_linear(linear: nn.Linear, policy: LayerPolicy, name: str, bits_from: str) -> None:
    """Linear layer: quantized weights and a quantized input (``bits_from`` picks the bit-widths)."""
    input_q = policy.act_quantizer(f"{name}.input_quantizer", bits=policy.a_bits(bits_from))
    QuantLinear.from_float(linear, policy.weight_quantizer(bits_from), input_q)


def quantize_output(module: nn.Module, policy: LayerPolicy, name: str, bits_from: str) -> None:
    """Quantize the output of a block or a classifier head (logits)."""
    quantizer = policy.act_quantizer(f"{name}.output_quantizer", bits=policy.a_bits(bits_from))
    attach_output_quantizer(module, quantizer)


def classifier_names(model: nn.Module, candidates: tuple[str, ...]) -> tuple[str, ...]:
    """Those of ``candidates`` that name an ``nn.Linear`` of ``model`` (a head may be ``nn.Identity``)."""
    modules = dict(model.named_modules())
    return tuple(n for n in candidates if isinstance(modules.get(n), nn.Linear))


def require_quantized_linear(model: nn.Module) -> None:
    """Fail clearly when include/exclude left nothing quantized."""
    if not any(isinstance(m, QuantLinear) for m in model.modules()):
        raise UnsupportedModelError(
            f"{type(model).__name__}: no Linear layer left to quantize (check include/exclude)"
        )


def place_transformer_quantizers(
    model: nn.Module,
    policy: LayerPolicy,
    *,
    heads: tuple[str, ...],
    attention_classes: dict[type, type],
    is_block: Callable[[str, nn.Module], bool],
) -> None:
    """PSAQ-ViT placement shared by the timm and transformers ViTs: conv/Linear weights and inputs,
    quantized attention (class swap + q/k/v/score quantizers), block outputs, then the heads' logits."""
    from ._attention import add_attention_quantizers

    for name, module in list(model.named_modules()):
        if not name or not policy.enabled(name):
            continue
        kind = type(module)
        if kind is nn.Conv2d:
            quantize_conv(module, policy, name)
        elif kind is nn.Linear:
            quantize_linear(module, policy, name, policy_name(policy, name, heads))
        elif kind in attention_classes:
            module.__class__ = attention_classes[kind]
            add_attention_quantizers(module, policy, name)
        elif is_block(name, module):
            quantize_output(module, policy, name, name)
    modules = dict(model.named_modules())
    for name in heads:
        if policy.enabled(name):
            quantize_output(modules[name], policy, name, policy_name(policy, name, heads))
    require_quantized_linear(model)
