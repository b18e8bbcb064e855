"""QDrop (Wei et al. 2022) and the activation quantizers' forward while a unit is reconstructed.

QDrop: while a block is reconstructed, each element of its input comes from the float network with probability
``p`` (else from the quantized network), and each activation quantizer of the block lets each element through
unquantized with probability ``p``. Masks are float {0, 1} tensors mixed with ``torch.lerp``: on CPUs
``torch.where`` with a bool mask (and every op that reads one) is 20-80x slower than a float multiply, and
sampling a fresh uniform per element every step costs as much as the block's convolutions, so masks are read
from a pre-sampled pool (:class:`MaskBank`).

:func:`training_quantizers` gives learnable :class:`~synq_hf.quant.ActQuantizer` s a forward with the same values
as their own (``x / scale`` rounded half to even, the integer zero point) and LSQ/LSQ+ gradients to the step size
and zero point, computed with float ops only (:class:`LSQDropFunction`; torch's fused learnable kernel has a slow
backward on CPUs). LSQ's constant gradient factor is left out: Adam does not see it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ..errors import SynQError
from ..quant import ActQuantizer, qrange

__all__ = ["LSQDropFunction", "MaskBank", "qdrop_mix", "training_quantizers"]

_EPS = torch.finfo(torch.float32).eps


class MaskBank:
    """QDrop masks (float, 1 where the element stays float, with probability ``p``) read from one pool.

    The pool holds ``size`` Bernoulli(``p``) draws; each mask is a slice at a random offset (one scalar draw from
    ``generator``), so masks change every step at no cost. Larger requests sample directly. Deterministic given
    ``generator``.
    """

    def __init__(self, p: float, size: int, generator: torch.Generator, device: torch.device) -> None:
        self.p, self.generator, self.device, self.size = p, generator, device, max(int(size), 1)
        pool = (torch.rand(self.size, generator=generator, device=device) < p).float()
        self.pool = torch.cat([pool, pool])  # a slice of up to ``size`` elements never wraps

    def __call__(self, shape: torch.Size) -> torch.Tensor:
        n = math.prod(shape)
        if n > self.size:
            return (torch.rand(shape, generator=self.generator, device=self.device) < self.p).float()
        offset = torch.randint(0, self.size, (1,), generator=self.generator, device=self.device)
        return self.pool[offset:offset + n].view(shape)


def qdrop_mix(x_q: torch.Tensor, x_fp: torch.Tensor, masks: MaskBank | None) -> torch.Tensor:
    """A block's QDrop input: each element from the float network (probability ``p``) or the quantized one."""
    if masks is None:
        return x_q
    return torch.lerp(x_q, x_fp.to(x_q.dtype), masks(x_q.shape).to(x_q.dtype))


class LSQDropFunction(torch.autograd.Function):
    """``lerp(q(x), x, keep)`` with ``q(x) = (clamp(round(x / s) + z, qmin, qmax) - z) · s``; LSQ gradients.

    ``d/dx``: ``keep + (1 - keep) · inside``; ``d/ds``: ``(1 - keep) · ((c - z) - inside · x / s)``; ``d/dz``:
    ``(1 - keep) · (inside - 1) · s`` (only where the zero point learns); ``inside`` marks unclipped elements.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                keep: torch.Tensor | None, qmin: int, qmax: int, zero: bool = False) -> torch.Tensor:
        """``zero=True`` promises ``zero_point == 0`` (ranges anchored at 0, after a ReLU): fewer passes."""
        v = x / scale
        shifted = torch.round(v)
        if not zero:
            shifted += zero_point
        codes = shifted.clamp(qmin, qmax)
        q = codes * scale if zero else (codes - zero_point) * scale
        out = q if keep is None else torch.lerp(q, x, keep)
        ctx.zero = zero
        ctx.save_for_backward(v, shifted, codes, scale, zero_point, keep)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        v, shifted, codes, scale, zero_point, keep = ctx.saved_tensors  # never changed in place: a CAM term
        outside = (shifted - codes).abs_().clamp_(max=1.0)  # 1 where clamped (integer distances), else 0
        inside = 1.0 - outside
        if keep is None:
            g, grad_x = grad, grad * inside
        else:
            kept = grad * keep
            g = grad - kept
            grad_x = kept.addcmul_(g, inside)
        grad_scale = grad_zp = None
        if ctx.needs_input_grad[1]:
            term = (codes if ctx.zero else codes - zero_point) - inside * v  # (c - z) - inside * v
            grad_scale = torch.dot(g.reshape(-1), term.reshape(-1)).reshape(scale.shape)
        if ctx.needs_input_grad[2]:
            grad_zp = (-torch.dot(g.reshape(-1), outside.reshape(-1)) * scale).reshape(zero_point.shape)
        return grad_x, grad_scale, grad_zp, None, None, None, None


def _forward(q: ActQuantizer, x: torch.Tensor, masks: MaskBank | None, nonnegative: bool,
             zero: bool) -> torch.Tensor:
    qmin, qmax = qrange(q.bits, q.symmetric)
    xf = x.float()
    scale = q.scale.abs().clamp_min(_EPS)
    zp = q.zero_point.detach() if nonnegative else q.zero_point  # as ActQuantizer: fixed when anchored at 0
    zp = zp + (torch.clamp(torch.round(zp), qmin, qmax) - zp).detach()  # the integer zero point qparams() uses
    keep = masks(x.shape) if masks is not None else None
    return LSQDropFunction.apply(xf, scale, zp, keep, qmin, qmax, zero).to(x.dtype)


@contextmanager
def training_quantizers(quantizers: list[ActQuantizer], masks: MaskBank | None) -> Iterator[None]:
    """While active, ``quantizers`` (learnable, in quantize mode) run the LSQ forward with QDrop masks."""
    for q in quantizers:
        if not q.learnable or q.mode != "quantize":
            raise SynQError(f"activation quantizer {q.name} must be learnable and in quantize mode to reconstruct")
    # ranges anchored at 0 keep a zero point of exactly 0 (ActQuantizer detaches it): checked once, not per step
    flags = {}
    for q in quantizers:
        nonneg = q.nonnegative
        flags[id(q)] = (nonneg, nonneg and float(torch.round(q.zero_point.detach()).abs().sum()) == 0.0)
    try:
        for q in quantizers:
            q.forward = (lambda x, q=q: _forward(q, x, masks, *flags[id(q)]))  # shadows the class forward
        yield
    finally:
        for q in quantizers:
            q.__dict__.pop("forward", None)
