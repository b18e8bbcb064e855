"""Fake-quantized drop-in layers: subclasses of the float modules, so float state-dict keys are unchanged.

``QuantConv2d``/``QuantLinear`` quantize their weight (and optionally their input); ``attach_output_quantizer``
makes any module (ReLU/ReLU6, a ViT block, a head) quantize its output. Because they subclass the
float classes, ``weight``/``bias`` keep their names and a timm loader still finds the float weights;
quantizer state lives under ``*.input_quantizer.*`` / ``*.output_quantizer.*``.

The output-quantizing class of each module type is registered per type (as optimum-quanto's ``register_qmodule``):
``OutputQuantizedReLU``, ``OutputQuantizedReLU6`` and ``OutputQuantizedQuantLinear`` (heads, branch outputs) are
defined here; any other type (a ViT block, an embedding) gets one built and registered on first use. Every one
pickles by its base type, so ``pickle``/``torch.save`` of a whole quantized model round-trip.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

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
    base_class: ClassVar[type[nn.Module]]  # the module type this class quantizes the output of

    def forward(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        out = super().forward(*args, **kwargs)  # type: ignore[misc]
        if isinstance(out, torch.Tensor):
            return self.output_quantizer(out)
        if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor):
            return (self.output_quantizer(out[0]), *out[1:])
        raise TypeError(f"cannot quantize the output of {type(self).__name__}: got {type(out).__name__}")

    def __reduce_ex__(self, protocol: int) -> tuple:
        """Pickle by the base type (importable wherever the model's own classes are), not by this class."""
        reduced = super().__reduce_ex__(protocol)
        return (new_output_quantized, (self.base_class,), *reduced[2:])


_OUTPUT_QUANTIZED: dict[type, type] = {}


def register_output_quantized(base: type[nn.Module]) -> Callable[[type], type]:
    """Class decorator: register the decorated ``OutputQuantized`` subclass of ``base`` as the class for ``base``."""

    def register(cls: type) -> type:
        if not (issubclass(cls, OutputQuantized) and issubclass(cls, base)):
            raise TypeError(f"{cls.__name__} must subclass OutputQuantized and {base.__name__}")
        if base in _OUTPUT_QUANTIZED:
            raise ValueError(f"{base.__name__} already has an output-quantized class: {_OUTPUT_QUANTIZED[base].__name__}")
        cls.base_class = base
        _OUTPUT_QUANTIZED[base] = cls
        return cls

    return register


def output_quantized_class(base: type[nn.Module]) -> type:
    """The class that quantizes the output of ``base`` modules: the registered one, else one built and registered."""
    cls = _OUTPUT_QUANTIZED.get(base)
    if cls is None:
        built = type(f"OutputQuantized{base.__name__}", (OutputQuantized, base), {"__module__": __name__})
        cls = register_output_quantized(base)(built)
    return cls


def new_output_quantized(base: type[nn.Module]) -> nn.Module:
    """An empty instance of ``output_quantized_class(base)``: the constructor unpickling calls."""
    cls = output_quantized_class(base)
    return cls.__new__(cls)


@register_output_quantized(nn.ReLU)
class OutputQuantizedReLU(OutputQuantized, nn.ReLU):
    """``nn.ReLU`` whose output is quantized (the after-ReLU CNN placement)."""


@register_output_quantized(nn.ReLU6)
class OutputQuantizedReLU6(OutputQuantized, nn.ReLU6):
    """``nn.ReLU6`` whose output is quantized (the after-ReLU CNN placement)."""


@register_output_quantized(QuantLinear)
class OutputQuantizedQuantLinear(OutputQuantized, QuantLinear):
    """``QuantLinear`` whose output is quantized (classifier logits, ViT branch outputs)."""


def attach_output_quantizer(module: nn.Module, quantizer: ActQuantizer) -> nn.Module:
    """Make ``module`` quantize its output with ``quantizer`` (in place; returns the module)."""
    base = type(module)
    if issubclass(base, OutputQuantized):
        raise ValueError(f"{base.__name__} already quantizes its output")
    module.__class__ = output_quantized_class(base)
    module.output_quantizer = quantizer
    return module
