"""Quantizer insertion steps shared by the timm and transformers ViT/Swin placements (PSAQ-ViT)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ...errors import UnsupportedModelError
from ...quant.layers import QuantConv2d, QuantLinear, attach_output_quantizer
from ...quant.policy import LayerPolicy


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


RESIDUAL_QUANTIZER = "residual_quantizer"


def add_residual_quantizer(block: nn.Module, policy: LayerPolicy, name: str) -> None:
    """Give block ``name`` (already one of the ``QuantBlock`` classes) its mid-block residual-stream quantizer."""
    block.add_module(RESIDUAL_QUANTIZER, policy.act_quantizer(f"{name}.{RESIDUAL_QUANTIZER}", bits=policy.a_bits(name)))


@dataclass(frozen=True)
class PsaqSites:
    """Where the tensors that only the faithful PSAQ-ViT placement quantizes live in one model family.

    ``embeddings``: modules whose output is quantized (patch embedding, embeddings plus position);
    ``block_classes``: block class -> subclass quantizing the mid-block residual stream;
    ``branch_outputs``: block-relative names of the Linears whose output is quantized (attention
    projection, fc2), as PSAQ-ViT's ``qact3``/``QuantAct2`` do before each residual add.
    """

    patch_conv: str
    embeddings: tuple[str, ...]
    block_classes: dict[type, type]
    branch_outputs: tuple[str, ...]


def place_transformer_quantizers(
    model: nn.Module,
    policy: LayerPolicy,
    *,
    heads: tuple[str, ...],
    attention_classes: dict[type, type],
    is_block: Callable[[str, nn.Module], bool],
    psaq: PsaqSites | None = None,
) -> None:
    """PSAQ-ViT placement shared by the timm and transformers ViTs: conv/Linear weights and inputs,
    quantized attention (class swap + q/k/v/score quantizers), block outputs, then the heads' logits.

    With ``psaq`` (``vit_placement="psaq"``, the default) also the image (the patch conv's input), the
    embeddings, the mid-block residual stream and the attention-projection/fc2 outputs, as PSAQ-ViT does.
    """
    from ._attention import add_attention_quantizers

    branch_outputs: list[str] = []
    for name, module in list(model.named_modules()):
        if not name or not policy.enabled(name):
            continue
        kind = type(module)
        if kind is nn.Conv2d:
            quantize_conv(module, policy, name)
            if psaq is not None and name == psaq.patch_conv and not policy.first_reads_float:
                module.input_quantizer = policy.act_quantizer(f"{name}.input_quantizer", bits=policy.a_bits(name))
        elif kind is nn.Linear:
            quantize_linear(module, policy, name, policy_name(policy, name, heads))
        elif kind in attention_classes:
            module.__class__ = attention_classes[kind]
            add_attention_quantizers(module, policy, name)
        elif is_block(name, module):
            if psaq is not None:
                if kind not in psaq.block_classes:
                    raise UnsupportedModelError(f"{type(model).__name__}: block {name} ({kind.__name__}) has no "
                                                "PSAQ-ViT residual placement; use vit_placement='loose'")
                module.__class__ = psaq.block_classes[kind]
                add_residual_quantizer(module, policy, name)
                branch_outputs += [f"{name}.{b}" for b in psaq.branch_outputs]
            quantize_output(module, policy, name, name)
    modules = dict(model.named_modules())
    if psaq is not None:
        for name in (*psaq.embeddings, *branch_outputs):
            if name not in modules:
                raise UnsupportedModelError(f"{type(model).__name__}: no module {name} for the PSAQ-ViT placement")
            if policy.enabled(name):
                quantize_output(modules[name], policy, name, name)
    for name in heads:
        if policy.enabled(name):
            quantize_output(modules[name], policy, name, policy_name(policy, name, heads))
    require_quantized_linear(model)
