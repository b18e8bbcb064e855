"""Fake-quantized drop-in layers: subclasses of the float modules, so float state-dict keys are unchanged.

``QuantConv2d``/``QuantLinear`` quantize their weight (and optionally their input); ``attach_output_quantizer``
makes any module (ReLU/ReLU6, a ViT block, a head) quantize its output. Because they subclass the
float classes, ``weight``/``bias`` keep their names and a timm loader still finds the float weights;
quantizer state lives under ``*.input_quantizer.*`` / ``*.output_quantizer.*``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .quantizers import ActQuantizer, WeightQuantizer


class QuantConv2d(nn.Conv2d):
    """``nn.Conv2d`` with a fake-quantized weight and an optional input activation quantizer."""

    weight_quantizer: WeightQuantizer
    input_quantizer: ActQuantizer | None

    @classmethod
    def from_float(
        cls, conv: nn.Conv2d, weight_quantizer: WeightQuantizer, input_quantizer: ActQuantizer | None = None
    ) -> QuantConv2d:
        """Turn ``conv`` into a ``QuantConv2d`` in place (shares its parameters and hooks)."""
        conv.__class__ = cls
        weight_quantizer.bind(conv.weight)
        conv.weight_quantizer = weight_quantizer
        conv.input_quantizer = input_quantizer
        return conv  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        return self._conv_forward(x, self.weight_quantizer(self.weight), self.bias)


class QuantLinear(nn.Linear):
    """``nn.Linear`` with a fake-quantized weight and an optional input activation quantizer."""

    weight_quantizer: WeightQuantizer
    input_quantizer: ActQuantizer | None

    @classmethod
    def from_float(
        cls, linear: nn.Linear, weight_quantizer: WeightQuantizer, input_quantizer: ActQuantizer | None = None
    ) -> QuantLinear:
        """Turn ``linear`` into a ``QuantLinear`` in place (shares its parameters and hooks)."""
        linear.__class__ = cls
        weight_quantizer.bind(linear.weight)
        linear.weight_quantizer = weight_quantizer
        linear.input_quantizer = input_quantizer
        return linear  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        return F.linear(x, self.weight_quantizer(self.weight), self.bias)


class OutputQuantized:
    """Mixin placed in front of a module's class: runs the original forward, then quantizes the output.

    Used for activations after ReLU/ReLU6 (CNNs) and for block outputs / logits (ViTs). The module
    keeps its own parameters and names; only ``output_quantizer`` is added. Tuple outputs (as some
    transformers layers return) have their first element quantized.
    """

    output_quantizer: ActQuantizer

    def forward(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        out = super().forward(*args, **kwargs)  # type: ignore[misc]
        if isinstance(out, torch.Tensor):
            return self.output_quantizer(out)
        if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor):
            return (self.output_quantizer(out[0]), *out[1:])
        raise TypeError(f"cannot quantize the output of {type(self).__name__}: got {type(out).__name__}")


_OUTPUT_QUANT_CLASSES: dict[type, type] = {}


def attach_output_quantizer(module: nn.Module, quantizer: ActQuantizer) -> nn.Module:
    """Make ``module`` quantize its output with ``quantizer`` (in place; returns the module)."""
    base = type(module)
    if issubclass(base, OutputQuantized):
        raise ValueError(f"{base.__name__} already quantizes its output")
    cls = _OUTPUT_QUANT_CLASSES.get(base)
    if cls is None:
        cls = type(f"OutputQuantized{base.__name__}", (OutputQuantized, base), {"__module__": __name__})
        _OUTPUT_QUANT_CLASSES[base] = cls
    module.__class__ = cls
    module.output_quantizer = quantizer
    return module
