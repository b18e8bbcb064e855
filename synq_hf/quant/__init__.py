"""Fake quantization's building blocks: fake-quant functions, quantizer modules, quantized layers, layer policies,
packing, integer biases and coverage reports. Nothing here knows an architecture: placements live in
``synq_hf.architectures.placement`` and putting a model together (quantize, calibrate, PTQ) in ``synq_hf.apply``."""

from .coverage import coverage_report, coverage_summary
from .fake_quant import fake_quantize_tensor, fake_quantize_weight, minmax_qparams, qrange
from .integer_bias import fold_batchnorm, int32_bias_unit, snap_biases_to_int32_grid
from .layers import QuantConv2d, QuantLinear, attach_output_quantizer
from .policy import LayerPolicy
from .quantizers import ActQuantizer, WeightQuantizer

__all__ = [
    "ActQuantizer",
    "LayerPolicy",
    "QuantConv2d",
    "QuantLinear",
    "WeightQuantizer",
    "attach_output_quantizer",
    "coverage_report",
    "coverage_summary",
    "fake_quantize_tensor",
    "fake_quantize_weight",
    "fold_batchnorm",
    "int32_bias_unit",
    "minmax_qparams",
    "qrange",
    "snap_biases_to_int32_grid",
]
