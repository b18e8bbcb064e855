"""CNN quantizer placements: the authors' after-ReLU one and quantized inputs of every conv/linear.

``after_relu`` (SynQ's code, kept for plain ReLU ResNets so the CIFAR numbers stay comparable with
the paper): every ``nn.Conv2d``/``nn.Linear`` gets a min-max weight quantizer and every
``nn.ReLU``/``nn.ReLU6`` module quantizes its output. ``layer_inputs`` (every other CNN): every
conv/linear gets a weight quantizer and an input quantizer, except the first layer, which reads the
image. Quantizing layer inputs catches every activation that reaches a quantized layer (GELU, SiLU,
Hardswish, functional ``F.relu``, a ReLU module reused twice, a residual sum) without knowing how
the network computes it. ``apply_deploy_sites`` adds the quantizers an integer runtime needs on top
(``deploy_placement="int8"``); the spec names the sites.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from ...errors import UnsupportedModelError
from ...quant.layers import OutputQuantized, QuantConv2d, QuantLinear, attach_output_quantizer
from ...quant.policy import LayerPolicy

_ACTS = (nn.ReLU, nn.ReLU6)
_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)


def plain_kind(module: nn.Module) -> type | None:
    """``nn.Conv2d``/``nn.Linear`` when ``module`` computes exactly that (timm's torchscript ``Linear`` too), else None."""
    kind = type(module)
    if kind in (nn.Conv2d, nn.Linear):
        return kind
    if kind.__name__ == "Linear" and kind.__module__.startswith("timm.layers") and issubclass(kind, nn.Linear):
        return nn.Linear  # same math as nn.Linear (it only casts for torchscript)
    return None


def check_plain_layers(model: nn.Module) -> None:
    """Refuse conv/linear variants whose forward a quantized swap would silently change (before any edit)."""
    for name, m in model.named_modules():
        if isinstance(m, _WEIGHTED) and plain_kind(m) is None:
            raise UnsupportedModelError(
                f"{type(model).__name__}: layer {name} is a {type(m).__name__}, which synq_hf cannot quantize "
                "(only plain nn.Conv2d and nn.Linear layers; weight-standardized or 'same'-padded convs are not)"
            )


def _require_layers(model: nn.Module) -> None:
    if not any(isinstance(m, (QuantConv2d, QuantLinear)) for m in model.modules()):
        raise UnsupportedModelError(
            f"{type(model).__name__}: no nn.Conv2d/nn.Linear layer left to quantize (check include/exclude)"
        )


def apply_after_relu(model: nn.Module, policy: LayerPolicy) -> None:
    """Swap conv/linear layers for quantized ones and quantize every ReLU/ReLU6 output (the authors' setting).

    First/last-layer bit overrides apply to those layers' weights (their inputs are the image and
    the pooled output of the last ReLU, which is quantized with ``a_bits``, or with the last layer's 8 bits under
    ``layer_rule="genie"``).
    """
    check_plain_layers(model)
    acts = [n for n, m in model.named_modules() if n and type(m) in _ACTS and policy.enabled(n)]
    feeds_classifier = acts[-1] if acts else None  # in these plain ResNets only pooling follows the last ReLU
    for name, module in list(model.named_modules()):
        if not name or not policy.enabled(name):
            continue
        if plain_kind(module) is nn.Conv2d:
            QuantConv2d.from_float(module, policy.weight_quantizer(name))
        elif plain_kind(module) is nn.Linear:
            QuantLinear.from_float(module, policy.weight_quantizer(name))
        elif type(module) in _ACTS:
            bits = policy.classifier_input_bits(name) if name == feeds_classifier else None
            attach_output_quantizer(module, policy.act_quantizer(name, bits=bits))
    _require_layers(model)


def apply_layer_inputs(model: nn.Module, policy: LayerPolicy) -> None:
    """Quantize the weights and the input of every conv/linear; the first layer's input (the image) stays float.

    A layer's input quantizer uses that layer's ``a_bits`` (``last_layer_bits`` for the classifier).
    """
    check_plain_layers(model)
    for name, module in list(model.named_modules()):
        kind = plain_kind(module)
        if not name or not policy.enabled(name) or kind is None:
            continue
        input_q = None if name == policy.first else policy.act_quantizer(f"{name}.input_quantizer",
                                                                       bits=policy.a_bits(name))
        layer = QuantConv2d if kind is nn.Conv2d else QuantLinear
        layer.from_float(module, policy.weight_quantizer(name), input_q)
    _require_layers(model)


DeploySite = tuple[str, Literal["input", "output"]]
"""A tensor an integer runtime needs quantized: the input of conv/linear ``name``, or the output of module ``name``."""


def apply_deploy_sites(model: nn.Module, policy: LayerPolicy, sites: list[DeploySite], bits: int) -> None:
    """Add a ``bits``-bit activation quantizer at every site (``deploy_placement="int8"``; after the placement).

    Sites whose module the config leaves float (include/exclude) are skipped; an input site needs a quantized
    conv/linear without an input quantizer, an output site a module that does not quantize its output yet.
    """
    modules = dict(model.named_modules())
    for name, where in sites:
        module = modules.get(name)
        if module is None:
            raise UnsupportedModelError(f"{type(model).__name__}: no module {name} for deploy_placement")
        if not policy.enabled(name):
            continue
        quantizer = policy.act_quantizer(f"{name}.{where}_quantizer", bits=bits)
        if where == "input":
            if isinstance(module, (QuantConv2d, QuantLinear)) and module.input_quantizer is None:
                module.input_quantizer = quantizer
        elif not isinstance(module, OutputQuantized):
            attach_output_quantizer(module, quantizer)
