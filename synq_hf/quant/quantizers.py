"""Quantizer modules: ``WeightQuantizer`` (per-channel ranges, optionally searched or learned) and ``ActQuantizer``."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..config import RANGE_SEARCH_P
from ..errors import SynQError
from .fake_quant import (
    fake_quantize_tensor,
    fake_quantize_weight,
    minmax_qparams,
    qrange,
    quantize_dequantize,
    weight_qparams,
)
from .range_search import HIST_BINS, search_hist_range, search_weight_clip

_EPS = torch.finfo(torch.float32).eps

Mode = Literal["float", "calibrate", "histogram", "quantize"]


class WeightQuantizer(nn.Module):
    """Weight fake quantizer: per-channel (or per-tensor) ranges from the current weights, optionally shrunk.

    ``range_init="minmax"`` uses the weights' own min/max on every call (stateless). ``"search"`` stores one
    shrink ratio per output channel (``clip``, found by :func:`search_weight_clip` at calibration) applied
    to the current min/max, so the range follows the weights while they train. ``learnable=True`` (LSQ)
    stores the step size itself (``scale``), initialized from that range and trained with the weights.
    """

    def __init__(self, bits: int, symmetric: bool = False, per_channel: bool = True, *,
                 range_init: str = "minmax", learnable: bool = False, search_p: float = RANGE_SEARCH_P) -> None:
        super().__init__()
        self.bits, self.symmetric, self.per_channel = bits, symmetric, per_channel
        self.range_init, self.learnable, self.search_p = range_init, learnable, search_p
        self.enabled = True

    @property
    def stateful(self) -> bool:
        """Whether the range is stored (clip ratios, learned step sizes) rather than recomputed min-max."""
        return self.range_init != "minmax" or self.learnable

    def bind(self, weight: torch.Tensor) -> None:
        """Allocate the stored range for ``weight``'s channels (ratio 1: min-max until :meth:`init_range`)."""
        if not self.stateful:
            return
        shape = (weight.shape[0],) if self.per_channel else (1,)
        self.register_buffer("clip", torch.ones(shape, device=weight.device))
        if self.learnable:
            self.scale = nn.Parameter(torch.ones(shape, device=weight.device))
            self.register_buffer("zero_point", torch.zeros(shape, device=weight.device))

    @torch.no_grad()
    def reset_range(self) -> None:
        """Back to min-max (ratio 1, unit step): e.g. after loading a float checkpoint into uninitialized memory."""
        if hasattr(self, "clip"):
            self.clip.fill_(1.0)
        if self.learnable and hasattr(self, "scale"):
            self.scale.fill_(1.0)
            self.zero_point.zero_()

    @torch.no_grad()
    def init_range(self, weight: torch.Tensor) -> None:
        """Search the clip ratios (``range_init="search"``) and initialize the learnable step sizes from them."""
        if not hasattr(self, "clip"):
            return
        if self.range_init == "search":
            clip = search_weight_clip(weight, self.bits, self.symmetric, self.per_channel, self.search_p)
            self.clip.copy_(clip.reshape(self.clip.shape))
        else:
            self.clip.fill_(1.0)
        if self.learnable:
            scale, zp = self._minmax_qparams(weight)
            self.scale.copy_(scale.reshape(self.scale.shape))
            self.zero_point.copy_(zp.reshape(self.zero_point.shape).float())

    def _minmax_qparams(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return weight_qparams(weight, self.bits, self.symmetric, self.per_channel, getattr(self, "clip", None))

    @torch.no_grad()
    def qparams(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale (float32) and zero point (int32) used for ``weight``: per output channel, or 0-dim per tensor."""
        if self.learnable:
            scale = self.scale.detach().abs().clamp_min(_EPS)
            qmin, qmax = qrange(self.bits, self.symmetric)
            zp = torch.clamp(torch.round(self.zero_point), qmin, qmax).to(torch.int32)
            return (scale, zp) if self.per_channel else (scale.reshape(()), zp.reshape(()))
        return self._minmax_qparams(weight)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return weight
        if not self.learnable:
            return fake_quantize_weight(weight, self.bits, self.symmetric, self.per_channel, getattr(self, "clip", None))
        qmin, qmax = qrange(self.bits, self.symmetric)
        w = weight.float()
        # LSQ gradient scale: 1/sqrt(weights per step size * Q_P) (Esser et al. 2020)
        per_scale = w[0].numel() if self.per_channel else w.numel()
        grad_factor = 1.0 / (per_scale * qmax) ** 0.5
        scale = self.scale.abs().clamp_min(_EPS)  # SGD may push a step size through zero
        if self.per_channel:
            out = torch._fake_quantize_learnable_per_channel_affine(
                w, scale, self.zero_point, 0, qmin, qmax, grad_factor)
        else:
            out = torch._fake_quantize_learnable_per_tensor_affine(
                w, scale, self.zero_point, qmin, qmax, grad_factor)
        return out.to(weight.dtype)

    def extra_repr(self) -> str:
        gran = "per_channel" if self.per_channel else "per_tensor"
        extra = f", range={self.range_init}" + (", learnable" if self.learnable else "")
        return f"bits={self.bits}, symmetric={self.symmetric}, {gran}{extra}"


class ActQuantizer(nn.Module):
    """Per-tensor activation fake quantizer with an EMA min-max observer and an optional clip search.

    Modes: ``calibrate`` observes batch min/max (EMA with ``momentum`` after the first batch) and
    returns its input unchanged; ``histogram`` (the second calibration pass of ``range_init="search"``)
    collects a histogram over the observed range; ``quantize`` fake-quantizes with the frozen range (or,
    with ``learnable=True``, with an LSQ-learned scale/zero point initialized from it); ``float`` is a
    pass-through used to run the teacher-equivalent network. The range lives in the ``min_val`` /
    ``max_val`` buffers, so it is saved and restored with the state dict. Inputs that were never negative
    during calibration (after ReLU) keep the zero point fixed at 0 when learnable.
    """

    def __init__(
        self,
        bits: int,
        symmetric: bool = False,
        momentum: float = 0.9,
        ste: str = "clipped",
        learnable: bool = False,
        *,
        range_init: str = "minmax",
        search_p: float = RANGE_SEARCH_P,
    ) -> None:
        super().__init__()
        self.bits, self.symmetric, self.momentum, self.ste, self.learnable = bits, symmetric, momentum, ste, learnable
        self.range_init, self.search_p = range_init, search_p
        self.register_buffer("min_val", torch.zeros(()))
        self.register_buffer("max_val", torch.zeros(()))
        self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool))
        if learnable:
            # shape (1,): torch's learnable per-tensor kernel indexes scale[0] (0-dim tensors fail)
            self.scale = nn.Parameter(torch.ones(1))
            self.zero_point = nn.Parameter(torch.zeros(1))
        self.mode: Mode = "quantize"
        self.name = ""  # filled by quantize_model for error messages
        self._is_calibrated = False  # host-side mirror of ``calibrated``: no device sync per forward
        self._hist: torch.Tensor | None = None
        self._extent: tuple[torch.Tensor, torch.Tensor] | None = None  # true min/max seen (the EMA is narrower)
        self._nonneg: bool | None = None  # cached ``nonnegative`` (host-side, no sync per forward)

    # -- calibration ------------------------------------------------------------------------------
    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        """Update the EMA range with one batch (the first batch sets it)."""
        lo, hi = torch.aminmax(x.detach().float())
        if self._is_calibrated:
            m = self.momentum
            self.min_val.mul_(m).add_(lo, alpha=1 - m)
            self.max_val.mul_(m).add_(hi, alpha=1 - m)
            self._extent = (torch.minimum(self._extent[0], lo), torch.maximum(self._extent[1], hi))
        else:
            self.min_val.copy_(lo)
            self.max_val.copy_(hi)
            self.calibrated.fill_(True)
            self._is_calibrated = True
            self._extent = (lo.clone(), hi.clone())

    @torch.no_grad()
    def observe_histogram(self, x: torch.Tensor) -> None:
        """Accumulate a histogram of one batch over the full range seen in the first pass."""
        lo, hi = self._histogram_range()
        h = torch.histc(x.detach().float().clamp(lo, hi), bins=HIST_BINS, min=lo, max=hi)
        self._hist = h if self._hist is None else self._hist + h

    def _histogram_range(self) -> tuple[float, float]:
        lo, hi = self._extent if self._extent is not None else (self.min_val, self.max_val)
        lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
        return lo, hi if hi > lo else lo + 1e-8

    @torch.no_grad()
    def finish_calibration(self) -> None:
        """Set the final range: the EMA min-max, or the Lp-optimal clip of the histogram; then init LSQ."""
        if self.range_init == "search" and self._hist is not None:
            lo, hi = self._histogram_range()
            lo, hi = search_hist_range(self._hist.cpu(), lo, hi, self.bits, self.symmetric, self.search_p)
            self.min_val.fill_(lo)
            self.max_val.fill_(hi)
        self._hist, self._extent = None, None
        self.init_learnable()

    @property
    def nonnegative(self) -> bool:
        """Whether the calibrated range starts at 0 (inputs after ReLU): the zero point stays fixed at 0."""
        return self._is_calibrated and not self.symmetric and float(self.min_val) >= 0.0

    @torch.no_grad()
    def reset(self) -> None:
        self.min_val.zero_()
        self.max_val.zero_()
        self.calibrated.fill_(False)
        self._is_calibrated = False
        self._hist, self._extent = None, None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001, ANN002
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._is_calibrated = bool(self.calibrated)
        self._nonneg = None

    @torch.no_grad()
    def init_learnable(self) -> None:
        """Initialize the learnable scale/zero point from the calibrated range."""
        if self.learnable:
            scale, zp = minmax_qparams(self.min_val, self.max_val, self.bits, self.symmetric)
            self.scale.copy_(scale)
            self.zero_point.copy_(zp.float())
        self._nonneg = None

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero point currently used in ``quantize`` mode (the learned ones when learnable)."""
        if self.learnable:
            qmin, qmax = qrange(self.bits, self.symmetric)
            zp = torch.clamp(torch.round(self.zero_point.detach()), qmin, qmax).to(torch.int32)
            return self.scale.detach().abs().clamp_min(_EPS).reshape(()), zp.reshape(())
        return minmax_qparams(self.min_val, self.max_val, self.bits, self.symmetric)

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "float":
            return x
        if self.mode == "calibrate":
            self.observe(x)
            return x
        if self.mode == "histogram":
            self.observe_histogram(x)
            return x
        if not self._is_calibrated:
            # The mirror is only a cache: loaders that copy buffers directly (transformers) bypass it.
            self._is_calibrated = bool(self.calibrated)
        if not self._is_calibrated:
            raise SynQError(
                f"activation quantizer {self.name or ''} has no range: calibrate the model "
                "(synq_hf.apply.calibrate) before running it quantized"
            )
        if self.learnable:
            qmin, qmax = qrange(self.bits, self.symmetric)
            # LSQ gradient scale 1/sqrt(N * Q_P) with N the elements of ONE sample (Esser et al. 2020):
            # the batch is already summed over by the loss
            per_sample = x[0].numel() if x.dim() > 1 else x.numel()
            grad_factor = 1.0 / (per_sample * qmax) ** 0.5
            if self._nonneg is None:
                self._nonneg = self.nonnegative
            zero_point = self.zero_point.detach() if self._nonneg else self.zero_point
            out = torch._fake_quantize_learnable_per_tensor_affine(
                x.float(), self.scale.abs().clamp_min(_EPS), zero_point, qmin, qmax, grad_factor
            )
            # forward values with ONNX rounding (x / scale; the LSQ kernel multiplies by 1 / scale), LSQ gradients
            scale, zp = self.qparams()
            out = out + (quantize_dequantize(x, scale, zp, qmin, qmax) - out).detach()
            return out.to(x.dtype)
        scale, zp = minmax_qparams(self.min_val, self.max_val, self.bits, self.symmetric)
        return fake_quantize_tensor(x, scale, zp, self.bits, self.symmetric, self.ste)

    def extra_repr(self) -> str:
        rng = f"[{float(self.min_val):.4g}, {float(self.max_val):.4g}]" if self._is_calibrated else "uncalibrated"
        return f"bits={self.bits}, symmetric={self.symmetric}, range={rng}, mode={self.mode}"
