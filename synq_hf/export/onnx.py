"""ONNX export of fake-quantized models as standard QuantizeLinear/DequantizeLinear (QDQ) graphs.

Every quantizer becomes QDQ on an 8-bit container, so onnxruntime's QDQ fusion can turn the pairs
around Conv/MatMul into integer kernels:

* weights: integer initializers with ``DequantizeLinear`` (per channel along axis 0). Symmetric codes are
  ``int8`` as they are; asymmetric codes of <= 7 bits become ``int8`` with zero point 0 (``code - zp`` fits
  in [-127, 127], exactly the same values); 8-bit asymmetric codes stay ``uint8`` with their zero points.
* activations: ``QuantizeLinear`` to ``uint8`` (asymmetric) or ``int8`` (symmetric) with the quantizer's
  scale and zero point; below 8 bits an integer ``Clip`` to the low-bit range sits between Q and DQ, so the
  codes are exactly those of the fake-quant model, on the low-bit grid.
* BatchNorm: before ``torch.onnx.export``, each BatchNorm that alone reads the output of a conv with a quantized
  weight is folded, in the export copy (the model passed in is not modified), into that conv's per-channel weight
  scale (the integer codes do not change) and bias (:func:`synq_hf.quant.integer_bias.fold_batchnorm`), and
  replaced by what follows its normalization, so the exporter writes DQ -> Conv -> Q with no BatchNormalization.
  Other BatchNorms (after an Add, reading an output something else reads too, after a conv that runs twice, without
  affine parameters) stay BatchNormalization nodes.
  Biases stay float: the graph computes what the fake-quant model computes
  (to float rounding). onnxruntime's fused integer kernels round each bias to int32 in units of
  ``x_scale * w_scale``; for models whose biases are on that grid (``deploy_placement="int8"`` snaps them,
  :func:`synq_hf.quant.integer_bias.snap_biases_to_int32_grid`) the fused kernels compute the same codes.

The batch dimension is dynamic; the file is checked with ``onnx.checker`` and written atomically.
"""

from __future__ import annotations

import collections
import copy
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..apply import SYNQ_CONFIG_ATTR, is_quantized
from ..architectures import get_spec
from ..errors import ConfigError, SynQError
from ..hub.outputs import write_file
from ..model_info import model_logits
from ..quant import ActQuantizer, QuantConv2d, QuantLinear, qrange
from ..quant.fake_quant import quantize_dequantize
from ..quant.integer_bias import fold_batchnorm
from ..quant.layers import OutputQuantized
from ..quant.packing import packed_layers, weight_codes

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_OPSET", "export_onnx", "require_onnx"]

DEFAULT_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "pixel_values", "logits"


def require_onnx() -> Any:
    """Import ``onnx``, or fail in one line naming the extra to install."""
    try:
        import onnx
    except ImportError as e:
        raise SynQError(
            "ONNX export needs the onnx package: pip install 'synq-hf[export]' (installs onnx and onnxruntime)"
        ) from e
    return onnx


# -- export-time stand-ins for the quantizers ------------------------------------------------------------


class _QDQ(torch.autograd.Function):
    """Fake quantization in torch; QuantizeLinear [-> Clip] -> DequantizeLinear in ONNX."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax, container):  # noqa: ANN001, ANN205
        return quantize_dequantize(x.float(), scale, zero_point, qmin, qmax).to(x.dtype)

    @staticmethod
    def symbolic(g, x, scale, zero_point, qmin, qmax, container):  # noqa: ANN001, ANN205
        dtype = torch.uint8 if container == "uint8" else torch.int8
        s = g.op("Constant", value_t=torch.tensor(scale, dtype=torch.float32))
        z = g.op("Constant", value_t=torch.tensor(zero_point, dtype=dtype))
        q = g.op("QuantizeLinear", x, s, z)
        info = torch.iinfo(dtype)
        if (qmin, qmax) != (info.min, info.max):
            lo = g.op("Constant", value_t=torch.tensor(qmin, dtype=dtype))
            hi = g.op("Constant", value_t=torch.tensor(qmax, dtype=dtype))
            q = g.op("Clip", q, lo, hi)
        return g.op("DequantizeLinear", q, s, z)


class _ExportAct(nn.Module):
    def __init__(self, quantizer: ActQuantizer) -> None:
        super().__init__()
        scale, zero_point = quantizer.qparams()
        self.scale, self.zero_point = float(scale), int(zero_point)
        self.qmin, self.qmax = qrange(quantizer.bits, quantizer.symmetric)
        self.container = "int8" if quantizer.symmetric else "uint8"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _QDQ.apply(x, self.scale, self.zero_point, self.qmin, self.qmax, self.container)


class _DQ(torch.autograd.Function):
    """Dequantization of constant integer codes; DequantizeLinear in ONNX."""

    @staticmethod
    def forward(ctx, codes, scale, zero_point, axis):  # noqa: ANN001, ANN205
        shape = (-1,) + (1,) * (codes.dim() - 1) if scale.dim() else ()
        return (codes.to(torch.int32) - zero_point.to(torch.int32).reshape(shape)).float() * scale.reshape(shape)

    @staticmethod
    def symbolic(g, codes, scale, zero_point, axis):  # noqa: ANN001, ANN205
        if axis is None:
            return g.op("DequantizeLinear", codes, scale, zero_point)
        return g.op("DequantizeLinear", codes, scale, zero_point, axis_i=axis)


class _ExportWeight(nn.Module):
    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        codes, scale, zero_point = weight_codes(layer)
        q = layer.weight_quantizer
        if q.symmetric:
            codes, zero_point, dtype = codes, zero_point, torch.int8
        elif q.bits <= 7:  # code - zp lies in [-127, 127]: the same values with zero point 0, as int8
            shape = (-1,) + (1,) * (codes.dim() - 1) if scale.dim() else ()
            codes, zero_point, dtype = codes - zero_point.reshape(shape), torch.zeros_like(zero_point), torch.int8
        else:
            dtype = torch.uint8
        self.register_buffer("codes", codes.to(dtype))
        self.register_buffer("scale", scale.float())
        self.register_buffer("zero_point", zero_point.to(dtype))
        self.axis = 0 if scale.dim() else None

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return _DQ.apply(self.codes, self.scale, self.zero_point, self.axis)


class _Logits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return model_logits(self.model, pixel_values)


def _export_copy(model: nn.Module) -> nn.Module:
    """A CPU float32 copy of ``model`` whose quantizers are the ONNX stand-ins (BatchNorm: :func:`_fold_batchnorms`)."""
    model = copy.deepcopy(model).cpu().float().eval()
    for layer in packed_layers(model).values():
        layer.weight_quantizer = _ExportWeight(layer)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, ActQuantizer):
                if child.mode != "quantize":
                    raise SynQError(f"activation quantizer {child.name or name} is in {child.mode!r} mode, not 'quantize'")
                if not child._is_calibrated:
                    raise SynQError(f"activation quantizer {child.name or name} is uncalibrated: calibrate first")
                setattr(module, name, _ExportAct(child))
    return _Logits(model)


# -- BatchNorm folding ------------------------------------------------------------------------------------


def _after_batchnorm(bn: nn.Module) -> nn.Module | None:
    """What ``bn`` computes after its normalization (its stand-in once folded); None for a type not known here."""
    from timm.layers import BatchNormAct2d

    base = bn.base_class if isinstance(bn, OutputQuantized) else type(bn)
    if base is nn.BatchNorm2d:
        rest = []
    elif base is BatchNormAct2d:  # timm's BatchNorm + dropout + activation in one module
        rest = [bn.drop, bn.act]
    else:
        return None
    if isinstance(bn, OutputQuantized):
        rest.append(bn.output_quantizer)
    return nn.Sequential(*rest) if len(rest) > 1 else rest[0] if rest else nn.Identity()


@torch.enable_grad()
def _conv_batchnorm_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """(conv, BatchNorm) module names where the BatchNorm is the only reader of the conv's output.

    One forward of ``example`` with hooks: the conv (a quantized ``QuantConv2d`` with its DQ stand-in) and the
    BatchNorm (a ``BatchNorm2d`` or timm ``BatchNormAct2d``, eval, affine, running statistics) each run once, the BatchNorm's input is the conv's output, and no other
    operation reads that output (counted in the autograd graph: one reference to the conv's node).
    """
    convs = {n: m for n, m in model.named_modules() if isinstance(m, QuantConv2d) and not isinstance(m, OutputQuantized)
             and isinstance(m.weight_quantizer, _ExportWeight)}
    bns = {n: m for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) and not m.training and m.affine
           and m.running_mean is not None and m.running_var is not None and _after_batchnorm(m) is not None}
    if not convs or not bns:
        return []
    calls: collections.Counter[str] = collections.Counter()
    conv_out: dict[int, tuple[str, Any]] = {}  # id(output) -> (conv, its autograd node)
    bn_in: dict[str, int] = {}
    alive: list[torch.Tensor] = []  # keep traced tensors alive so their ids are not reused

    def after_conv(name: str):  # noqa: ANN202
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            calls[name] += 1
            conv_out[id(out)] = (name, out.grad_fn)
            alive.append(out)
        return hook

    def before_bn(name: str):  # noqa: ANN202
        def hook(module: nn.Module, args: tuple) -> None:
            calls[name] += 1
            bn_in[name] = id(args[0])
        return hook

    handles = [m.register_forward_hook(after_conv(n)) for n, m in convs.items()]
    handles += [m.register_forward_pre_hook(before_bn(n)) for n, m in bns.items()]
    try:
        logits = model(example.detach().clone().requires_grad_(True))
    finally:
        for h in handles:
            h.remove()
    readers: collections.Counter[Any] = collections.Counter()  # autograd node -> how many nodes read its output
    seen, todo = set(), [logits.grad_fn] if logits.grad_fn is not None else []
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        for parent, _ in node.next_functions:
            if parent is not None:
                readers[parent] += 1
                todo.append(parent)
    pairs = []
    for bn, source in bn_in.items():
        conv, node = conv_out.get(source, (None, None))
        if conv is not None and node is not None and calls[conv] == calls[bn] == 1 and readers[node] == 1:
            pairs.append((conv, bn))
    return pairs


@torch.no_grad()
def _fold_batchnorms(model: nn.Module, example: torch.Tensor) -> int:
    """Fold each BatchNorm that alone reads a quantized conv's output into that conv (in the export copy).

    The conv's integer codes stay; its per-channel DQ scale and its bias become :func:`fold_batchnorm`'s, and the
    BatchNorm is replaced by what follows its normalization (nothing, a timm activation, an output quantizer), so
    the exporter writes DQ -> Conv without BatchNormalization. A channel whose folded scale is negative has its
    codes negated instead where its container allows (8-bit asymmetric: ``255 - code``; symmetric codes with zero
    point 0 above -128), so the scale stays positive. Any other BatchNorm stays (a BatchNormalization node).
    """
    modules = dict(model.named_modules())
    pairs = _conv_batchnorm_pairs(model, example)
    for conv_name, bn_name in pairs:
        conv, bn = modules[conv_name], modules[bn_name]
        w: _ExportWeight = conv.weight_quantizer
        channels = w.codes.shape[0]
        scale, bias = fold_batchnorm(w.scale, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps, conv.bias)
        codes, zero_point = w.codes.clone(), w.zero_point.expand(channels).clone()
        for c in torch.nonzero(scale < 0).flatten().tolist():  # keep scales positive: negate the codes instead
            if codes.dtype == torch.uint8:
                codes[c], zero_point[c] = 255 - codes[c], 255 - zero_point[c]
            elif int(codes[c].min()) > -128 and int(zero_point[c]) == 0:
                codes[c] = -codes[c]
            else:
                continue
            scale[c] = -scale[c]
        w.codes, w.scale, w.zero_point, w.axis = codes, scale, zero_point, 0
        conv.bias = nn.Parameter(bias, requires_grad=False)
        parent, _, attr = bn_name.rpartition(".")
        setattr(modules[parent], attr, _after_batchnorm(bn))
    return len(pairs)


# -- graph cleanup ---------------------------------------------------------------------------------------------


def _bypass_identities(graph: Any) -> None:
    """Drop Identity nodes that forward an initializer (the exporter's de-duplicated constants), so that every
    DequantizeLinear reads its codes, scale and zero point straight from initializers."""
    inits = {i.name for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    alias: dict[str, str] = {}
    for n in list(graph.node):
        if n.op_type == "Identity" and alias.get(n.input[0], n.input[0]) in inits and n.output[0] not in outputs:
            alias[n.output[0]] = alias.get(n.input[0], n.input[0])
            graph.node.remove(n)
    for n in graph.node:
        for k, name in enumerate(n.input):
            if name in alias:
                n.input[k] = alias[name]


# -- public entry point ----------------------------------------------------------------------------------


def export_onnx(
    model: nn.Module,
    out: str | os.PathLike,
    *,
    input_size: tuple[int, int, int] | list[int],
    opset: int = DEFAULT_OPSET,
    quantized: bool = True,
) -> Path:
    """Write ``model`` (fake-quantized, calibrated) to ``out`` as a QDQ ONNX model with a dynamic batch.

    ``input_size`` is (C, H, W) (``LoadedModel.data_config["input_size"]``). ``quantized=False`` exports the
    same network with every quantizer left out (the float reference). Returns the written path.
    """
    onnx = require_onnx()
    if opset < 13:
        raise ConfigError(f"opset {opset} is too old: per-channel DequantizeLinear needs opset 13 or newer")
    if len(tuple(input_size)) != 3:
        raise ConfigError(f"input_size must be (C, H, W), got {input_size!r}")
    if quantized and not is_quantized(model):
        raise SynQError(f"{type(model).__name__} is not quantized: quantize and calibrate it first, or quantized=False")
    if quantized:
        _warn_if_not_deploy_placed(model)
        wrapped = _export_copy(model)
    else:
        wrapped = _Logits(_float_copy(model))
    path = Path(out)
    if path.is_dir():
        raise ConfigError(f"--out {str(path)!r} is a folder; give a file name such as model.onnx")
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(2, *(int(v) for v in input_size))

    def write(tmp: Path) -> None:
        import warnings

        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            if quantized:
                _fold_batchnorms(wrapped, dummy)
            torch.onnx.export(
                wrapped, (dummy,), str(tmp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=opset, do_constant_folding=True, dynamo=False,
            )
        proto = onnx.load(str(tmp))
        if quantized:
            _bypass_identities(proto.graph)
        proto.producer_name = "synq-hf"
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))

    try:
        write_file(path, write)
    except (RuntimeError, ValueError, TypeError) as e:
        raise SynQError(f"ONNX export of {type(model).__name__} failed: {e}") from e
    return path


def _warn_if_not_deploy_placed(model: nn.Module) -> None:
    """One warning when a model whose family offers ``deploy_placement="int8"`` was quantized without it."""
    config = getattr(model, SYNQ_CONFIG_ATTR, None)
    if config is None or config.deploy_placement != "off" or get_spec(model).deploy is None:
        return
    logger.warning(
        "%s uses the paper's placement: onnxruntime will keep some convs in float (slower than deploy_placement) "
        "and round its fused biases differently from this model; for an exact, faster integer model quantize with "
        "deploy_placement='int8' (--deploy-placement int8)", type(model).__name__,
    )


def _float_copy(model: nn.Module) -> nn.Module:
    """``model`` without quantization: quantized layers run their float weights, activations pass through."""
    model = copy.deepcopy(model).cpu().float().eval()
    for layer in model.modules():
        if isinstance(layer, (QuantConv2d, QuantLinear)):
            layer.weight_quantizer = nn.Identity()
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, ActQuantizer):
                setattr(module, name, nn.Identity())
    return model
