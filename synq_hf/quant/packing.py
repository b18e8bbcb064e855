"""Packed integer weights: the on-disk form of a fake-quantized model's conv/linear weights.

A quantized layer's float ``weight`` is replaced by three tensors (``NAME`` is the module name):

* ``NAME.weight_codes``: the integer codes ``clamp(round_half_even(w / scale) + zero_point, qmin, qmax)``,
  stored at their true bit-width (``ceil(numel * bits / 8)`` bytes; :func:`code_bytes`):
  8 bits (container ``int8``/``uint8``): one code per byte, ``int8`` (symmetric) or ``uint8`` (asymmetric), in the
  weight's shape. 4 bits (``uint4x2``): two codes per byte (``uint8``, 1-D): the weight is flattened row-major,
  ``code - qmin`` (0-15) is stored, element ``2i`` in the low nibble and ``2i+1`` in the high nibble, an odd count
  padded with 0. 2, 3, 5, 6, 7 bits (``bitpacked``, format ``synq-packed-2``): the same layout generalized, a
  little-endian bit stream (``uint8``, 1-D) in which element ``i``'s ``code - qmin`` occupies stream bits
  ``[i * bits, (i + 1) * bits)``, least significant bit first (stream bit ``k`` is bit ``k % 8`` of byte ``k // 8``),
  the last byte padded with 0. (Folders written before format 2 kept 2-3-bit codes in ``uint4x2`` and 5-7-bit
  codes one per byte; the qmap names each weight's container, so they still load.)
* ``NAME.weight_scale`` (float32) and ``NAME.weight_zero_point`` (int32): shape ``[C_out]`` per channel
  (axis 0), 0-dim per tensor.

The qmap (:func:`pack_state_dict`'s second result, a JSON-able dict) records per weight its bits,
symmetry, axis, shape, dtype and container, and per activation quantizer its bits, symmetry, scale and
zero point. Dequantizing, ``(codes - zero_point) * scale``, reproduces the fake-quant weight bit for bit
(checked when packing). Loaded layers get a :class:`FrozenWeightQuantizer` holding the stored scale and
zero point: min-max ranges recomputed from dequantized weights can move by one ulp.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from .fake_quant import fake_quantize_weight_with, qrange
from .layers import QuantConv2d, QuantLinear
from .quantizers import ActQuantizer, WeightQuantizer

__all__ = [
    "PACKED_FORMAT",
    "PACKED_FORMAT_V1",
    "code_bytes",
    "QMAP_METADATA_KEY",
    "FrozenWeightQuantizer",
    "expect_packed_weights",
    "dequantize_codes",
    "pack_codes",
    "pack_model",
    "pack_state_dict",
    "packed_layers",
    "read_qmap",
    "unpack_codes",
    "unpack_packed_weights",
    "unpack_state_dict",
    "weight_codes",
]

PACKED_FORMAT = "synq-packed-2"
"""Name of this packing scheme, recorded in a qmap that uses the ``bitpacked`` container."""
PACKED_FORMAT_V1 = "synq-packed-1"
"""The scheme without ``bitpacked`` (4- and 8-bit containers only): still written when a model uses no other
bit-width, so uniform W4/W8 folders stay readable by older synq_hf versions."""
_READABLE_FORMATS = (PACKED_FORMAT_V1, PACKED_FORMAT)

QMAP_METADATA_KEY = "synq_qmap"
"""The safetensors metadata key holding the qmap (JSON) in a packed ``model.safetensors``."""

CODES, SCALE, ZERO_POINT = "weight_codes", "weight_scale", "weight_zero_point"


def _container(bits: int, symmetric: bool) -> str:
    if bits == 4:
        return "uint4x2"
    if bits == 8:
        return "int8" if symmetric else "uint8"
    return "bitpacked"


def _legacy_container(bits: int, symmetric: bool) -> str:
    """The container format 1 used for ``bits`` (2-4 bits in nibbles, 5-8 one per byte)."""
    if bits <= 4:
        return "uint4x2"
    return "int8" if symmetric else "uint8"


def code_bytes(numel: int, bits: int) -> int:
    """Bytes the packed codes of a ``numel``-element weight take at ``bits`` bits: ``ceil(numel * bits / 8)``."""
    return -(-int(numel) * int(bits) // 8)


def packed_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Conv/linear layers whose weights are stored as codes: every one with an enabled weight quantizer."""
    return {
        name: m for name, m in model.named_modules()
        if isinstance(m, (QuantConv2d, QuantLinear)) and getattr(m.weight_quantizer, "enabled", True)
    }


def _per_channel_view(t: torch.Tensor, ndim: int) -> torch.Tensor:
    return t.reshape(-1, *([1] * (ndim - 1))) if t.dim() else t


def dequantize_codes(codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """``(codes - zero_point) * scale`` in float32; per-channel qparams apply along axis 0."""
    s = _per_channel_view(scale.float(), codes.dim())
    z = _per_channel_view(zero_point, codes.dim())
    return (codes.to(torch.int32) - z.to(torch.int32)).float() * s


@torch.no_grad()
def weight_codes(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(int32 codes shaped like the weight, scale, zero point) of a quantized layer's weight.

    The codes are read back from the layer's own fake-quant output, and dequantizing them must give that
    output exactly; otherwise a ``CheckpointError`` says so (packing would change the model).
    """
    quantizer: WeightQuantizer = layer.weight_quantizer
    weight = layer.weight.detach()
    scale, zero_point = quantizer.qparams(weight)
    scale = scale.detach().float().cpu()
    zero_point = zero_point.detach().to(torch.int32).cpu()
    fq = quantizer(weight).detach().float().cpu()
    qmin, qmax = qrange(quantizer.bits, quantizer.symmetric)
    s = _per_channel_view(scale, fq.dim())
    z = _per_channel_view(zero_point, fq.dim())
    codes = torch.clamp(torch.round(fq / s) + z, qmin, qmax).to(torch.int32)
    if not torch.equal(dequantize_codes(codes, scale, zero_point).to(weight.dtype), fq.to(weight.dtype)):
        raise CheckpointError(
            f"cannot pack {type(layer).__name__} weights exactly: its quantizer's output is not "
            "(codes - zero_point) * scale for the scale/zero point its qparams() reports"
        )
    return codes, scale, zero_point


def _bitpack(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned ``values`` (< 2**bits) as a little-endian bit stream, ``bits`` per value (numpy's packbits)."""
    import numpy as np

    v = values.reshape(-1).to(torch.int64).numpy()
    stream = ((v[:, None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(-1)
    return torch.from_numpy(np.packbits(stream, bitorder="little"))


def _bitunpack(data: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    import numpy as np

    stream = np.unpackbits(data.reshape(-1).numpy(), bitorder="little")[: numel * bits].reshape(numel, bits)
    return torch.from_numpy((stream.astype(np.int64) << np.arange(bits)).sum(axis=1))


def pack_codes(codes: torch.Tensor, bits: int, symmetric: bool, container: str | None = None) -> torch.Tensor:
    """Store integer codes at their bit-width: ``int8``/``uint8`` at 8 bits, two per byte at 4, a bit stream
    otherwise (``container`` forces another layout, e.g. format 1's ``uint4x2`` for 3 bits)."""
    qmin, qmax = qrange(bits, symmetric)
    if codes.numel() and (int(codes.min()) < qmin or int(codes.max()) > qmax):
        raise CheckpointError(f"codes outside the {bits}-bit range [{qmin}, {qmax}]")
    container = container or _container(bits, symmetric)
    if container in ("int8", "uint8"):
        return codes.to(torch.int8 if symmetric else torch.uint8).contiguous()
    flat = codes.reshape(-1).to(torch.int32) - qmin
    if container == "bitpacked":
        return _bitpack(flat, bits).contiguous()
    flat = flat.to(torch.uint8)
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    return (flat[0::2] | (flat[1::2] << 4)).contiguous()


def unpack_codes(data: torch.Tensor, bits: int, symmetric: bool, shape: tuple[int, ...] | list[int],
                 container: str | None = None) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: int32 codes of ``shape`` (``container``: the qmap's, default this version's)."""
    qmin, _ = qrange(bits, symmetric)
    numel = 1
    for d in shape:
        numel *= int(d)
    container = container or _container(bits, symmetric)
    if container in ("int8", "uint8"):
        expected = torch.int8 if symmetric else torch.uint8
        if data.dtype != expected or data.numel() != numel:
            raise CheckpointError(f"packed codes are {data.dtype} x {data.numel()}, expected {expected} x {numel}")
        return data.to(torch.int32).reshape(tuple(shape))
    size = code_bytes(numel, bits) if container == "bitpacked" else (numel + 1) // 2
    if container not in ("bitpacked", "uint4x2") or data.dtype != torch.uint8 or data.numel() != size:
        raise CheckpointError(
            f"packed {bits}-bit codes ({container}) are {data.dtype} x {data.numel()}, expected torch.uint8 x {size}"
        )
    if container == "bitpacked":
        return (_bitunpack(data, bits, numel).to(torch.int32) + qmin).reshape(tuple(shape))
    flat = data.reshape(-1)
    out = torch.stack([flat & 0x0F, flat >> 4], dim=1).reshape(-1)[:numel]
    return (out.to(torch.int32) + qmin).reshape(tuple(shape))


class FrozenWeightQuantizer(WeightQuantizer):
    """A weight quantizer with a fixed scale and zero point (those stored in a packed checkpoint)."""

    def __init__(self, bits: int, symmetric: bool, scale: torch.Tensor, zero_point: torch.Tensor) -> None:
        super().__init__(bits, symmetric, per_channel=scale.dim() > 0)
        # Not persistent: the checkpoint keeps them as ``weight_scale``/``weight_zero_point`` of the layer.
        self.register_buffer("scale", scale.detach().float().clone(), persistent=False)
        self.register_buffer("zero_point", zero_point.detach().to(torch.int32).clone(), persistent=False)

    @torch.no_grad()
    def qparams(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.scale, self.zero_point

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return weight
        return fake_quantize_weight_with(weight, self.scale, self.zero_point, self.bits, self.symmetric)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", frozen"


def _check_format(qmap: Any) -> None:
    if not isinstance(qmap, dict) or qmap.get("format") not in _READABLE_FORMATS:
        found = qmap.get("format") if isinstance(qmap, dict) else type(qmap).__name__
        raise CheckpointError(f"unknown packed weight format {found!r} (this synq_hf reads "
                              f"{', '.join(map(repr, _READABLE_FORMATS))}): upgrade synq_hf")


def pack_state_dict(
    model: nn.Module, state_dict: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors with every quantized weight replaced by its codes/scale/zero point, qmap) for ``model``.

    ``state_dict`` is ``model``'s (CPU) state dict; float layers and every other tensor pass through.
    """
    out = dict(state_dict)
    weights: dict[str, Any] = {}
    for name, layer in packed_layers(model).items():
        key = f"{name}.weight"
        if key not in out:
            raise CheckpointError(f"{key} is not in the state dict to pack")
        codes, scale, zero_point = weight_codes(layer)
        q = layer.weight_quantizer
        del out[key]
        out[f"{name}.{CODES}"] = pack_codes(codes, q.bits, q.symmetric)
        out[f"{name}.{SCALE}"] = scale.contiguous()
        out[f"{name}.{ZERO_POINT}"] = zero_point.contiguous()
        weights[key] = {
            "bits": q.bits,
            "symmetric": q.symmetric,
            "axis": 0 if scale.dim() else None,
            "shape": list(layer.weight.shape),
            "dtype": str(layer.weight.dtype).removeprefix("torch."),
            "container": _container(q.bits, q.symmetric),
        }
    activations: dict[str, Any] = {}
    for name, m in model.named_modules():
        if isinstance(m, ActQuantizer) and m._is_calibrated:
            scale, zero_point = m.qparams()
            activations[name] = {
                "bits": m.bits, "symmetric": m.symmetric,
                "scale": float(scale), "zero_point": int(zero_point),
            }
    fmt = PACKED_FORMAT if any(w["container"] == "bitpacked" for w in weights.values()) else PACKED_FORMAT_V1
    return out, {"format": fmt, "weights": weights, "activations": activations}


def unpack_state_dict(
    model: nn.Module, tensors: dict[str, torch.Tensor], qmap: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """Tensors with float weights (the exact fake-quant values) restored from codes; freezes the qparams.

    ``model`` is the quantized architecture about to receive the tensors: every packed layer must exist
    with the recorded bit-width, and gets a :class:`FrozenWeightQuantizer` with the stored scale/zero point.
    """
    _check_format(qmap)
    out = dict(tensors)
    layers = packed_layers(model)
    entries = qmap.get("weights") or {}
    unlisted = sorted(set(layers) - {k.removesuffix(".weight") for k in entries})
    if unlisted:
        raise CheckpointError(f"the checkpoint has no packed weights for quantized layer(s) {unlisted[:4]}")
    for key, info in entries.items():
        name = key.removesuffix(".weight")
        layer = layers.get(name)
        if layer is None:
            raise CheckpointError(f"packed weight {key} has no quantized layer in the model built from config.json")
        q = layer.weight_quantizer
        if (int(info["bits"]), bool(info["symmetric"])) != (q.bits, q.symmetric):
            raise CheckpointError(
                f"{key}: stored as {info['bits']}-bit symmetric={info['symmetric']}, but config.json builds "
                f"{q.bits}-bit symmetric={q.symmetric}"
            )
        try:
            data, scale, zero_point = (out.pop(f"{name}.{s}") for s in (CODES, SCALE, ZERO_POINT))
        except KeyError as e:
            raise CheckpointError(f"{key}: packed tensor {e} is missing; re-save or re-download the model") from e
        container = info.get("container") or _legacy_container(q.bits, q.symmetric)
        codes = unpack_codes(data, q.bits, q.symmetric, info["shape"], container)
        dtype = getattr(torch, str(info.get("dtype", "float32")))
        out[key] = dequantize_codes(codes, scale, zero_point).to(dtype)
        frozen = FrozenWeightQuantizer(q.bits, q.symmetric, scale, zero_point)
        layer.weight_quantizer = frozen.to(layer.weight.device)
    return out


def pack_model(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(``model``'s whole CPU state dict packed, qmap): the tensors of one packed ``model.safetensors``.

    The weight quantizers of packed layers leave no tensors (their range is the stored scale/zero point).
    """
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    packed, qmap = pack_state_dict(model, state)
    frozen = tuple(f"{k.removesuffix('.weight')}.weight_quantizer." for k in qmap["weights"])
    return {k: v for k, v in packed.items() if not k.startswith(frozen)}, qmap


def _packed_shapes(layer: nn.Module, info: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    q = layer.weight_quantizer
    numel = 1
    for d in info["shape"]:
        numel *= int(d)
    container = info.get("container") or _legacy_container(q.bits, q.symmetric)
    if container == "bitpacked":
        codes = (code_bytes(numel, q.bits),), torch.uint8
    elif container == "uint4x2":
        codes = ((numel + 1) // 2,), torch.uint8
    else:
        codes = tuple(int(d) for d in info["shape"]), torch.int8 if q.symmetric else torch.uint8
    channels = (int(info["shape"][0]),) if info.get("axis") is not None else ()
    return {CODES: codes, SCALE: (channels, torch.float32), ZERO_POINT: (channels, torch.int32)}


def expect_packed_weights(model: nn.Module, qmap: dict[str, Any]) -> list[str]:
    """Give each packed layer empty ``weight_codes``/``weight_scale``/``weight_zero_point`` buffers to load into.

    For loaders that fill a model's own state dict (transformers' ``from_pretrained``). Returns the regex
    patterns of the keys the checkpoint no longer has (float weights and weight-quantizer state of those
    layers). :func:`unpack_packed_weights` turns the loaded buffers back into weights.
    """
    _check_format(qmap)
    import re

    layers = packed_layers(model)
    absent: list[str] = []
    for key, info in (qmap.get("weights") or {}).items():
        name = key.removesuffix(".weight")
        layer = layers.get(name)
        if layer is None:
            raise CheckpointError(f"packed weight {key} has no quantized layer in the model built from config.json")
        device = layer.weight.device
        for suffix, (shape, dtype) in _packed_shapes(layer, info).items():
            layer.register_buffer(suffix, torch.zeros(shape, dtype=dtype, device=device))
        absent += [rf"^{re.escape(key)}$", rf"^{re.escape(name)}\.weight_quantizer\."]
    return absent


@torch.no_grad()
def unpack_packed_weights(model: nn.Module, qmap: dict[str, Any]) -> None:
    """After :func:`expect_packed_weights` and loading: exact fake-quant weights from the codes, frozen qparams."""
    layers = packed_layers(model)
    tensors: dict[str, torch.Tensor] = {}
    for key in qmap.get("weights") or {}:
        name = key.removesuffix(".weight")
        for suffix in (CODES, SCALE, ZERO_POINT):
            tensors[f"{name}.{suffix}"] = getattr(layers[name], suffix).cpu()
    weights = unpack_state_dict(model, tensors, qmap)
    for key in qmap.get("weights") or {}:
        name = key.removesuffix(".weight")
        layer = layers[name]
        for suffix in (CODES, SCALE, ZERO_POINT):
            delattr(layer, suffix)
        layer.weight.data = weights[key].to(layer.weight.device)


def read_qmap(path: str | os.PathLike) -> dict[str, Any] | None:
    """The qmap in a safetensors file's metadata, or None when its weights are float (no packing)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get(QMAP_METADATA_KEY)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: the packed-weight map in its metadata is not valid JSON ({e})") from e
