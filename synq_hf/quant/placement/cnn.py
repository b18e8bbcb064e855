"""CNN placement (timm ResNets/MobileNetV2, the CIFAR ResNets): the authors' setting.

Every ``nn.Conv2d``/``nn.Linear`` gets a min-max weight quantizer; every ReLU/ReLU6 quantizes its
output (so every conv after the stem sees quantized inputs). The model input and non-ReLU
activations (e.g. MobileNetV2's linear bottlenecks) stay float, as in the authors' code.
"""

from __future__ import annotations

from torch import nn

from ...errors import UnsupportedModelError
from ..layers import QuantConv2d, QuantLinear, attach_output_quantizer
from ..policy import LayerPolicy
from . import Placement, register_placement

_ACTS = (nn.ReLU, nn.ReLU6)


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def layer_names(model: nn.Module) -> list[str]:
    """Names of the conv/linear layers in registration (for these CNNs: forward) order."""
    return [n for n, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]


def first_last(model: nn.Module) -> tuple[str | None, str | None]:
    """First conv and classifier: from timm's ``pretrained_cfg`` when present, else module order."""
    names = layer_names(model)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    first = cfg.get("first_conv") if cfg.get("first_conv") in names else (names[0] if names else None)
    classifier = cfg.get("classifier")
    last = classifier if classifier in names else (names[-1] if names else None)
    return first, last


def apply(model: nn.Module, policy: LayerPolicy) -> None:
    """Swap conv/linear layers for quantized ones and quantize every ReLU/ReLU6 output.

    First/last-layer bit overrides apply to those layers' weights (their inputs are the image and
    the pooled output of the last ReLU, which is quantized with ``a_bits``).
    """
    for name, module in list(model.named_modules()):
        if not name or not policy.enabled(name):
            continue
        if type(module) is nn.Conv2d:
            QuantConv2d.from_float(module, policy.weight_quantizer(name))
        elif type(module) is nn.Linear:
            QuantLinear.from_float(module, policy.weight_quantizer(name))
        elif type(module) in _ACTS:
            attach_output_quantizer(module, policy.act_quantizer(name))
    if not any(isinstance(m, (QuantConv2d, QuantLinear)) for m in model.modules()):
        raise UnsupportedModelError(
            f"{type(model).__name__}: no nn.Conv2d/nn.Linear layer left to quantize (check include/exclude)"
        )


register_placement(Placement("cnn", "cnn", _has_batchnorm, first_last, apply))
