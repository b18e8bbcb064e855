"""Functional uniform fake quantization (min-max, round-to-nearest) built on torch's fused kernels.

Straight-through estimator: the fused ``torch.fake_quantize_*`` ops pass the gradient unchanged
inside the quantization range and zero it where values clamp ("clipped STE"). Weight ranges are the
weights' own min/max, so nothing clamps and weights get the plain identity STE. For activations the
``identity`` variant (the authors' code) passes gradients everywhere via ``x + (q(x) - x).detach()``.
Quantizer math always runs in float32 (the fused kernels require it). Activations round ``x / scale``
half to even, as ONNX ``QuantizeLinear`` does (:func:`quantize_dequantize`), so an exported QDQ graph
reproduces them code for code.
"""

from __future__ import annotations

import torch

_EPS = torch.finfo(torch.float32).eps


def qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    """Integer range of a ``bits``-bit quantizer: [0, 2^b-1] asymmetric, [-2^(b-1), 2^(b-1)-1] symmetric."""
    if symmetric:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


@torch.no_grad()
def minmax_qparams(
    min_val: torch.Tensor, max_val: torch.Tensor, bits: int, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale (float32) and zero point (int32) mapping [min, max] (widened to include 0) onto the grid."""
    qmin, qmax = qrange(bits, symmetric)
    min_val = torch.clamp(min_val.float(), max=0.0)
    max_val = torch.clamp(max_val.float(), min=0.0)
    if symmetric:
        # PSAQ-ViT/FQ-ViT grid: amax / ((qmax - qmin) / 2), so -amax lands on qmin (-8 at 4 bits) and +amax
        # rounds to qmax + 1/2 and clamps; all 2^b codes are used (amax / qmax would never use qmin)
        amax = torch.maximum(-min_val, max_val)
        scale = torch.clamp(amax / ((qmax - qmin) / 2), min=_EPS)
        zero_point = torch.zeros_like(scale, dtype=torch.int32)
    else:
        scale = torch.clamp((max_val - min_val) / (qmax - qmin), min=_EPS)
        zero_point = torch.clamp(qmin - torch.round(min_val / scale), qmin, qmax).to(torch.int32)
    return scale, zero_point


def weight_qparams(
    weight: torch.Tensor, bits: int, symmetric: bool, per_channel: bool, clip: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max qparams of ``weight`` (its min/max shrunk by ``clip`` ratios when given): [C_out] or 0-dim."""
    w = weight.detach().float()
    flat = w.reshape(w.shape[0], -1) if per_channel else w.reshape(1, -1)
    lo, hi = flat.amin(dim=1), flat.amax(dim=1)
    if clip is not None:
        lo, hi = lo * clip, hi * clip
    scale, zp = minmax_qparams(lo, hi, bits, symmetric)
    return (scale, zp) if per_channel else (scale.reshape(()), zp.reshape(()))


def fake_quantize_weight_with(
    weight: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bits: int, symmetric: bool
) -> torch.Tensor:
    """Quantize-dequantize a weight with given qparams: per output channel ([C_out]) or per tensor (0-dim)."""
    w = weight.float()
    qmin, qmax = qrange(bits, symmetric)
    if scale.dim():
        out = torch.fake_quantize_per_channel_affine(w, scale, zero_point, 0, qmin, qmax)
    else:
        out = torch.fake_quantize_per_tensor_affine(w, scale, zero_point, qmin, qmax)
    return out.to(weight.dtype)


def fake_quantize_weight(
    weight: torch.Tensor, bits: int, symmetric: bool, per_channel: bool, clip: torch.Tensor | None = None
) -> torch.Tensor:
    """Quantize-dequantize a weight with min-max ranges recomputed from its current values (shrunk by ``clip``).

    Per-channel ranges are taken over every dimension but the first (output channels / features).
    """
    scale, zp = weight_qparams(weight, bits, symmetric, per_channel, clip)
    return fake_quantize_weight_with(weight, scale, zp, bits, symmetric)


def quantize_dequantize(
    x: torch.Tensor, scale: torch.Tensor | float, zero_point: torch.Tensor | int, qmin: int, qmax: int
) -> torch.Tensor:
    """``(clamp(round_half_even(x / scale) + zero_point, qmin, qmax) - zero_point) * scale`` in float32, per tensor.

    This is ONNX ``QuantizeLinear`` -> ``DequantizeLinear`` to the bit: torch's fused kernel rounds
    ``x * (1 / scale)`` instead, which lands on the other side of a tie for some inputs (x / scale = k + 1/2
    is common where inputs are products of quantized values, e.g. attention scores). Dividing first and
    quantizing with scale 1 keeps the fused kernel (and its clipped-STE gradient mask).
    """
    xf = x.float()
    if isinstance(scale, torch.Tensor):
        scale = scale.to(xf.device, torch.float32).reshape(())
    if isinstance(zero_point, torch.Tensor):  # the tensor overload: no host sync on accelerators
        zp = zero_point.to(xf.device, torch.int32).reshape(())
        codes = torch.fake_quantize_per_tensor_affine(xf / scale, torch.ones_like(zp, dtype=torch.float32), zp, qmin, qmax)
    else:
        codes = torch.fake_quantize_per_tensor_affine(xf / scale, 1.0, int(zero_point), qmin, qmax)
    return codes * scale


def fake_quantize_tensor(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bits: int, symmetric: bool, ste: str
) -> torch.Tensor:
    """Per-tensor fake quantization of an activation with given qparams and STE variant (ONNX rounding)."""
    qmin, qmax = qrange(bits, symmetric)
    xf = x.float()
    if ste == "identity":
        with torch.no_grad():
            q = quantize_dequantize(xf, scale, zero_point, qmin, qmax)
        out = xf + (q - xf).detach()
    else:
        out = quantize_dequantize(xf, scale, zero_point, qmin, qmax)
    return out.to(x.dtype)
