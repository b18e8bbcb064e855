"""Biases on the int32 grid of integer kernels: BatchNorm folding and the ``deploy_placement="int8"`` convert step.

An integer conv or matmul (onnxruntime's QLinearConv and QGemm, which its QDQ fusion builds from
DequantizeLinear -> Conv/Gemm) adds its bias to the int32 accumulator, so the bias is stored as int32 in units of
``x_scale * w_scale[c]``: onnxruntime rounds a float bias ``b`` to ``Round(b / Mul(x_scale, w_scale))`` (float32
ops, half to even). A bias between two grid points moves the fused kernel's output by up to half a unit against the
fake-quant model; at 4 bits that flips a few percent of output codes. :func:`snap_biases_to_int32_grid` moves
each such bias (after a conv, the one BatchNorm folding gives) to the nearest grid point, so the fake-quant model,
the exported float graph and the fused integer kernels compute the same thing (to float32 rounding).

:func:`fold_batchnorm` is the one definition of the folding arithmetic: the ONNX exporter folds with it, and the
snapping reproduces it, so the bias written to the ONNX file is the one on the grid.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..errors import SynQError
from ..model_info import hooked_forward
from .coverage import example_input
from .layers import QuantConv2d, QuantLinear
from .quantizers import ActQuantizer

__all__ = ["fold_batchnorm", "int32_bias_unit", "snap_biases_to_int32_grid"]

logger = logging.getLogger(__name__)

_F32, _F64 = torch.float32, torch.float64


def fold_batchnorm(
    weight_scale: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
    eps: float, bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (weight scale, bias) of a conv with BatchNorm folded in, as float32 (the ONNX initializers).

    ``a = gamma / sqrt(var + eps)``; scale ``weight_scale * a`` (the integer codes stay), bias
    ``(bias - mean) * a + beta``; in float64, with ``eps`` rounded to float32 as the ONNX attribute stores it.
    The scale may be negative (``a < 0``); the exporter flips such channels' codes where it can.
    """
    a, shift = _bn_factor_shift(gamma, mean, var, eps, bias)
    scale = torch.broadcast_to(weight_scale.to(_F64), a.shape) * a
    return scale.to(_F32), (shift + beta.to(_F64)).to(_F32)


def _bn_factor_shift(
    gamma: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, eps: float, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 ``a = gamma / sqrt(var + float32(eps))`` and ``(bias - mean) * a``: the folded bias less beta."""
    a = gamma.to(_F64) / torch.sqrt(var.to(_F64) + float(torch.tensor(eps, dtype=_F32)))
    b = bias.to(_F64) if bias is not None else torch.zeros_like(a)
    return a, (b - mean.to(_F64)) * a


def int32_bias_unit(input_scale: torch.Tensor | float, weight_scale: torch.Tensor) -> torch.Tensor:
    """The int32 bias grid of an integer kernel: ``|input_scale * weight_scale|``, multiplied in float32."""
    return (torch.as_tensor(input_scale, dtype=_F32) * weight_scale.to(_F32)).abs()


def _grid_codes(bias: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
    """onnxruntime's int32 bias: ``Round(bias / unit)`` in float32, half to even."""
    return torch.round(bias.to(_F32) / unit)


@torch.no_grad()
def _trace(model: nn.Module, example: torch.Tensor) -> tuple[dict[str, ActQuantizer | str], dict[str, str]]:
    """One forward with hooks: each quantized layer's input quantizer (or why none) and the BatchNorm it feeds."""
    producer: dict[int, ActQuantizer] = {}  # id(tensor) -> the quantizer whose output it is
    layer_of: dict[int, str] = {}  # id(tensor) -> the quantized layer whose output it is
    inputs: dict[str, ActQuantizer | str] = {}
    bn_of: dict[str, str] = {}
    calls: dict[str, int] = {}
    alive: list[torch.Tensor] = []  # keep traced tensors alive so their ids are not reused
    handles = []

    def on_quantizer(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        producer[id(out)] = module
        alive.append(out)

    def on_max_pool(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        if id(out) not in producer and id(args[0]) in producer:  # max-pooling keeps values on the input's grid
            producer[id(out)] = producer[id(args[0])]
            alive.append(out)

    def before_layer(name: str):  # noqa: ANN202
        def hook(module: nn.Module, args: tuple) -> None:
            calls[name] = calls.get(name, 0) + 1
            q = module.input_quantizer if module.input_quantizer is not None else producer.get(id(args[0]))
            inputs[name] = q if q is not None else "its input is not the output of an activation quantizer"
        return hook

    def after_layer(name: str):  # noqa: ANN202
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            layer_of[id(out)] = name
            alive.append(out)
        return hook

    def before_bn(name: str):  # noqa: ANN202
        def hook(module: nn.Module, args: tuple) -> None:
            src = layer_of.get(id(args[0]))
            if src is not None:
                bn_of[src] = name if src not in bn_of else ""  # "" marks a layer output read by two BatchNorms
        return hook

    for name, m in model.named_modules():
        if isinstance(m, ActQuantizer):
            handles.append(m.register_forward_hook(on_quantizer))
        elif isinstance(m, nn.MaxPool2d):
            handles.append(m.register_forward_hook(on_max_pool))
        elif isinstance(m, (QuantConv2d, QuantLinear)):
            handles.append(m.register_forward_pre_hook(before_layer(name)))
            handles.append(m.register_forward_hook(after_layer(name)))
        elif isinstance(m, nn.BatchNorm2d):
            handles.append(m.register_forward_pre_hook(before_bn(name)))
    hooked_forward(model, example, handles)
    for name, n in calls.items():
        if n > 1:
            inputs[name] = f"it runs {n} times in one forward"
    return inputs, bn_of


def _best_beta(fold_args: tuple, target: torch.Tensor) -> torch.Tensor:
    """The float32 ``beta`` whose folded bias lies closest to ``target`` (float64), per channel: the float32
    rounding of ``target - shift`` or one of its two neighbours on either side."""
    weight_scale, gamma, mean, var, eps, bias = fold_args
    start = (target - _bn_factor_shift(gamma, mean, var, eps, bias)[1]).to(_F32)
    candidates = [start]
    for direction in (torch.full_like(start, float("inf")), torch.full_like(start, float("-inf"))):
        c = start
        for _ in range(2):
            c = torch.nextafter(c, direction)
            candidates.append(c)
    best, best_err = start, torch.full_like(target, float("inf"))
    for c in candidates:
        err = (fold_batchnorm(weight_scale, gamma, c, mean, var, eps, bias)[1].to(_F64) - target).abs()
        better = err < best_err
        best, best_err = torch.where(better, c, best), torch.where(better, err, best_err)
    return best


@torch.no_grad()
def snap_biases_to_int32_grid(model: nn.Module, example: torch.Tensor | None = None) -> dict[str, str]:
    """Move each integer-kernel bias of ``model`` (calibrated) to its int32 grid, in place; say what was done.

    For every ``QuantConv2d``/``QuantLinear`` with quantized weights whose input is the output of an activation
    quantizer (its own, another module's, or through max-pooling), traced with one forward of ``example``
    (default: a random image of the model's size): if a BatchNorm reads its output, the BatchNorm's ``bias``
    (beta) moves so that the folded bias (:func:`fold_batchnorm`, as the ONNX export computes it) is the nearest
    multiple of ``int32_bias_unit(x_scale, folded w_scale)``; otherwise the layer's own bias moves to the nearest
    multiple of ``int32_bias_unit(x_scale, w_scale)``. Returns ``{layer: "snapped" | why it was skipped}``.
    """
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (QuantConv2d, QuantLinear))}
    if not layers:
        raise SynQError(f"{type(model).__name__} has no quantized conv/linear layers: quantize it first")
    if example is None:
        example = example_input(model)
    if example is None:
        raise SynQError(f"cannot trace {type(model).__name__}: its input size is unknown, pass example=")
    param = next(model.parameters(), None)
    inputs, bn_of = _trace(model, example.to(param.device) if param is not None else example)
    modules = dict(model.named_modules())
    report: dict[str, str] = {}
    for name, layer in layers.items():
        source = inputs.get(name, "it does not run in a forward of the example")
        bn = modules[bn_of[name]] if bn_of.get(name) else None
        if not getattr(layer.weight_quantizer, "enabled", True):
            report[name] = "its weights stay float"
        elif isinstance(source, str):
            report[name] = source
        elif bn_of.get(name) == "":
            report[name] = "two BatchNorms read its output"
        elif bn is not None and (bn.weight is None or bn.running_mean is None):
            report[name] = f"{bn_of[name]} has no affine parameters or running statistics to fold"
        elif bn is None and layer.bias is None:
            report[name] = "no bias (zero is on the grid)"
        elif (bn.bias if bn is not None else layer.bias).dtype != _F32:
            report[name] = "its bias is not float32"
        else:
            if not source._is_calibrated and not bool(source.calibrated):
                raise SynQError(f"activation quantizer {source.name} is uncalibrated: calibrate first")
            _snap(layer, bn, float(source.qparams()[0]))
            report[name] = "snapped"
    skipped = {n: why for n, why in report.items() if why != "snapped"}
    logger.info("int32 bias grid: %d layer(s) snapped, %d skipped%s", len(report) - len(skipped), len(skipped),
                "".join(f"; {n}: {why}" for n, why in skipped.items()))
    return report


def _snap(layer: nn.Module, bn: nn.BatchNorm2d | None, x_scale: float) -> None:
    """Put ``layer``'s effective bias (through ``bn`` when given) on its int32 grid."""
    weight_scale = layer.weight_quantizer.qparams(layer.weight)[0].detach().cpu().to(_F32)
    if bn is None:
        unit = int32_bias_unit(x_scale, weight_scale).expand_as(layer.bias)
        bias = layer.bias.detach().cpu()
        layer.bias.copy_((_grid_codes(bias, unit).to(_F64) * unit.to(_F64)).to(_F32))
        return
    gamma, beta, mean, var = (t.detach().cpu() for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var))
    conv_bias = layer.bias.detach().cpu() if layer.bias is not None else None
    scale, folded = fold_batchnorm(weight_scale, gamma, beta, mean, var, bn.eps, conv_bias)
    unit = int32_bias_unit(x_scale, scale)
    target = _grid_codes(folded, unit).to(_F64) * unit.to(_F64)
    bn.bias.copy_(_best_beta((weight_scale, gamma, mean, var, bn.eps, conv_bias), target))
