"""Fake quantization: quantizer modules, quantized layers, placements per architecture, calibration."""

from .fake_quant import fake_quantize_tensor, fake_quantize_weight, minmax_qparams, qrange
from .layers import QuantConv2d, QuantLinear, attach_output_quantizer
from .placement import Placement, find_placement, register_placement
from .policy import LayerPolicy
from .quantize import (
    act_quantizers,
    calibrate,
    is_quantized,
    iter_batches,
    ptq,
    quant_mode,
    quantize_model,
    set_quant_mode,
)
from .quantizers import ActQuantizer, WeightQuantizer

__all__ = [
    "ActQuantizer",
    "LayerPolicy",
    "Placement",
    "QuantConv2d",
    "QuantLinear",
    "WeightQuantizer",
    "act_quantizers",
    "attach_output_quantizer",
    "calibrate",
    "fake_quantize_tensor",
    "fake_quantize_weight",
    "find_placement",
    "is_quantized",
    "iter_batches",
    "minmax_qparams",
    "ptq",
    "qrange",
    "quant_mode",
    "quantize_model",
    "register_placement",
    "set_quant_mode",
]
