"""Fake quantization: quantizer modules, quantized layers, placements (chosen by ``synq_hf.architectures``),
coverage reports, calibration."""

from .coverage import coverage_report, coverage_summary
from .fake_quant import fake_quantize_tensor, fake_quantize_weight, minmax_qparams, qrange
from .integer_bias import fold_batchnorm, int32_bias_unit, snap_biases_to_int32_grid
from .layers import QuantConv2d, QuantLinear, attach_output_quantizer
from .policy import LayerPolicy
from .quantize import (
    act_quantizers,
    calibrate,
    deploy_convert,
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
    "QuantConv2d",
    "QuantLinear",
    "WeightQuantizer",
    "act_quantizers",
    "attach_output_quantizer",
    "calibrate",
    "coverage_report",
    "coverage_summary",
    "deploy_convert",
    "fake_quantize_tensor",
    "fake_quantize_weight",
    "fold_batchnorm",
    "int32_bias_unit",
    "is_quantized",
    "iter_batches",
    "minmax_qparams",
    "ptq",
    "qrange",
    "quant_mode",
    "quantize_model",
    "set_quant_mode",
    "snap_biases_to_int32_grid",
]
