"""AdaRound soft rounding of weights (Nagel et al. 2020) with learned per-channel scales, and its regulariser.

During a block's reconstruction every quantized conv/linear of the block reads its weight through an
:class:`AdaRoundQuantizer` instead of its own learnable :class:`~synq_hf.quant.WeightQuantizer`: the integer
grid point below each weight is fixed at the start (``floor(w / s0)``), a learned ``h = rectified_sigmoid(V)``
in [0, 1] chooses between it and the one above, and the per-channel step size ``s`` (the wrapped quantizer's
own LSQ ``scale``, initialised from the clip search) is learned as well (Genie, Jeon et al. 2023)::

    w_soft = (clamp(floor(w / s0) + h + z, qmin, qmax) - z) * s

At the start ``h`` is the fractional part of ``w / s0``, so the soft weight equals the float weight wherever it
is not clipped. :func:`rounding_regularizer` pushes every ``h`` to 0 or 1 (``1 - |2h - 1|^beta``, summed), with
``beta`` annealed from 20 to 2 (:class:`RoundingSchedule`). At the end :meth:`AdaRoundQuantizer.harden` writes
``(clamp(floor + [V >= 0] + z) - z) * s`` into the layer's weight and gives the layer its own quantizer back: an
ordinary fake-quant layer whose quantizer maps that weight to itself, so it saves, packs and exports like any other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import SynQError
from ..quant import QuantConv2d, QuantLinear, WeightQuantizer, qrange

__all__ = ["GAMMA", "ZETA", "AdaRoundQuantizer", "RoundingSchedule", "rectified_sigmoid", "rounding_regularizer"]

GAMMA, ZETA = -0.1, 1.1
"""Stretch of the rectified sigmoid (AdaRound): ``h`` reaches exactly 0 and 1 for finite ``V``."""

_EPS = torch.finfo(torch.float32).eps


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    """``clamp(sigmoid(v) · (ZETA - GAMMA) + GAMMA, 0, 1)``: AdaRound's soft rounding variable ``h(V)``."""
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def _inverse_rectified_sigmoid(h: torch.Tensor) -> torch.Tensor:
    """The ``V`` with ``rectified_sigmoid(V) == h`` for ``h`` in [0, 1)."""
    return -torch.log((ZETA - GAMMA) / (h - GAMMA) - 1.0)


class AdaRoundQuantizer(nn.Module):
    """Soft-rounding stand-in for a layer's learnable weight quantizer during reconstruction.

    ``layer`` is a ``QuantConv2d``/``QuantLinear`` whose ``weight_quantizer`` is learnable (LSQ ``scale``
    initialised by :func:`synq_hf.apply.calibrate`). :meth:`attach` swaps this quantizer in; the wrapped
    quantizer's ``scale`` stays the trained parameter, ``V`` (``self.logits``) is the rounding variable.
    ``soft=False`` gives the hard rounding ``[V >= 0]`` (what :meth:`harden` writes).
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        base = getattr(layer, "weight_quantizer", None)
        if not isinstance(layer, (QuantConv2d, QuantLinear)) or not isinstance(base, WeightQuantizer):
            raise SynQError(f"AdaRound needs a quantized conv/linear layer, got {type(layer).__name__}")
        if not base.learnable:
            raise SynQError("AdaRound learns the weight step sizes: quantize with learnable_weight_scale=True")
        self.layer = [layer]  # a list: not a registered submodule (no cycle in named_modules)
        self.base = base
        self.bits, self.symmetric = base.bits, base.symmetric
        self.qmin, self.qmax = qrange(base.bits, base.symmetric)
        self.soft = True
        w = layer.weight.detach().float()
        scale = self._view(self._scale().detach(), w)
        ratio = w / scale
        self.register_buffer("floor", torch.floor(ratio))
        self.logits = nn.Parameter(_inverse_rectified_sigmoid(ratio - self.floor))

    # -- the quantizer ------------------------------------------------------------------------------------------
    def _scale(self) -> torch.Tensor:
        return self.base.scale.abs().clamp_min(_EPS)  # what the wrapped LSQ quantizer divides by

    def _zero_point(self) -> torch.Tensor:
        return torch.clamp(torch.round(self.base.zero_point), self.qmin, self.qmax)

    @staticmethod
    def _view(t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return t.reshape(-1, *([1] * (w.dim() - 1))) if t.numel() > 1 else t.reshape(())

    def rounding(self) -> torch.Tensor:
        """``h`` in [0, 1] (soft) or ``[V >= 0]`` (hard), shaped like the weight."""
        if self.soft:
            return rectified_sigmoid(self.logits)
        return (self.logits >= 0).to(self.floor.dtype)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """The quantized weight (the layer passes its float weight, which only fixed ``floor``)."""
        w = weight.float()
        z = self._view(self._zero_point(), w)
        codes = torch.clamp(self.floor + self.rounding() + z, self.qmin, self.qmax)
        return ((codes - z) * self._view(self._scale(), w)).to(weight.dtype)

    def regularizer(self, beta: float) -> torch.Tensor:
        """AdaRound's ``sum(1 - |2h - 1|^beta)``: 0 when every ``h`` is 0 or 1."""
        h = rectified_sigmoid(self.logits)
        return (1.0 - (2.0 * h - 1.0).abs().pow(beta)).sum()

    # -- swapping in and out ----------------------------------------------------------------------------------
    @classmethod
    def attach(cls, layer: nn.Module, *, fixed: bool = False) -> AdaRoundQuantizer:
        """Put a new soft-rounding quantizer on ``layer`` (its own quantizer is kept in ``.base``).

        ``fixed=True`` keeps the weight's current integer codes (hard, nearest) and leaves only the step sizes to
        learn: for a layer already reconstructed, whose weight sits on its grid.
        """
        quantizer = cls(layer).to(layer.weight.device)
        if fixed:
            with torch.no_grad():
                w = layer.weight.detach().float()
                quantizer.floor.copy_(torch.round(w / quantizer._view(quantizer._scale(), w)))
                quantizer.logits.fill_(-1.0)  # h = 0: the code is the rounded one
            quantizer.logits.requires_grad_(False)
            quantizer.soft = False
        layer.weight_quantizer = quantizer
        return quantizer

    @torch.no_grad()
    def harden(self) -> None:
        """Write the hard-rounded weight into the layer and give it its own (learnable) quantizer back.

        Afterwards the layer is an ordinary fake-quant layer: its quantizer, with the learned step sizes,
        maps the written weight exactly onto itself (checked).
        """
        layer = self.layer[0]
        self.soft = False
        hard = self.forward(layer.weight.detach())
        layer.weight.data.copy_(hard)
        layer.weight_quantizer = self.base
        if not torch.equal(self.base(layer.weight).detach(), layer.weight.detach()):
            raise SynQError(f"{type(layer).__name__}: the hardened weight is not a fixed point of its quantizer")

    @torch.no_grad()
    def restore(self) -> None:
        """Give the layer its own quantizer back without changing the weight (e.g. when a run is interrupted)."""
        self.layer[0].weight_quantizer = self.base

    def extra_repr(self) -> str:
        return f"bits={self.bits}, symmetric={self.symmetric}, soft={self.soft}"


def rounding_regularizer(quantizers: list[AdaRoundQuantizer], beta: float) -> torch.Tensor:
    """Sum of :meth:`AdaRoundQuantizer.regularizer` over ``quantizers`` (a 0-dim tensor)."""
    total = None
    for q in quantizers:
        r = q.regularizer(beta)
        total = r if total is None else total + r
    return total if total is not None else torch.zeros(())


@dataclass(frozen=True)
class RoundingSchedule:
    """When the rounding regulariser is on and its ``beta``: off for the first ``warmup`` fraction of
    ``iterations``, then ``beta`` decays linearly from ``start`` to ``end`` (AdaRound; Genie's ``LinearTempDecay``).
    """

    iterations: int
    warmup: float = 0.2
    start: float = 20.0
    end: float = 2.0

    def active(self, step: int) -> bool:
        """Whether the regulariser counts at ``step`` (1-based)."""
        return step > self.warmup * self.iterations

    def beta(self, step: int) -> float:
        """``beta`` at ``step`` (1-based): ``start`` during warm-up, ``end`` at the last step."""
        begin = self.warmup * self.iterations
        if step <= begin:
            return self.start
        progress = (step - begin) / max(self.iterations - begin, 1e-12)
        return self.end + (self.start - self.end) * max(0.0, 1.0 - progress)
