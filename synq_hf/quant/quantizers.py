"""Quantizer modules: ``WeightQuantizer`` (stateless min-max) and ``ActQuantizer`` (calibrated range)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..errors import SynQError
from .fake_quant import fake_quantize_tensor, fake_quantize_weight, minmax_qparams, qrange

Mode = Literal["float", "calibrate", "quantize"]


class WeightQuantizer(nn.Module):
    """Min-max weight fake quantizer; ranges are recomputed from the current weights on every call."""

    def __init__(self, bits: int, symmetric: bool = False, per_channel: bool = True) -> None:
        super().__init__()
        self.bits, self.symmetric, self.per_channel = bits, symmetric, per_channel
        self.enabled = True

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return weight
        return fake_quantize_weight(weight, self.bits, self.symmetric, self.per_channel)

    @torch.no_grad()
    def qparams(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale (float32) and zero point (int32) for ``weight``: shape [C_out] per channel, 0-dim per tensor."""
        w = weight.detach().float()
        if self.per_channel:
            flat = w.reshape(w.shape[0], -1)
            return minmax_qparams(flat.amin(dim=1), flat.amax(dim=1), self.bits, self.symmetric)
        scale, zp = minmax_qparams(w.amin(), w.amax(), self.bits, self.symmetric)
        return scale.reshape(()), zp.reshape(())

    def extra_repr(self) -> str:
        gran = "per_channel" if self.per_channel else "per_tensor"
        return f"bits={self.bits}, symmetric={self.symmetric}, {gran}"


class ActQuantizer(nn.Module):
    """Per-tensor activation fake quantizer with an EMA min-max observer.

    Modes: ``calibrate`` observes batch min/max (EMA with ``momentum`` after the first batch) and
    returns its input unchanged; ``quantize`` fake-quantizes with the frozen range (or, with
    ``learnable=True``, with an LSQ-learned scale/zero point initialized from it); ``float`` is a
    pass-through used to run the teacher-equivalent network. The range lives in the ``min_val`` /
    ``max_val`` buffers, so it is saved and restored with the state dict.
    """

    def __init__(
        self,
        bits: int,
        symmetric: bool = False,
        momentum: float = 0.9,
        ste: str = "clipped",
        learnable: bool = False,
    ) -> None:
        super().__init__()
        self.bits, self.symmetric, self.momentum, self.ste, self.learnable = bits, symmetric, momentum, ste, learnable
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

    # -- calibration ------------------------------------------------------------------------------
    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        """Update the EMA range with one batch (the first batch sets it)."""
        lo, hi = torch.aminmax(x.detach().float())
        if self._is_calibrated:
            m = self.momentum
            self.min_val.mul_(m).add_(lo, alpha=1 - m)
            self.max_val.mul_(m).add_(hi, alpha=1 - m)
        else:
            self.min_val.copy_(lo)
            self.max_val.copy_(hi)
            self.calibrated.fill_(True)
            self._is_calibrated = True

    @torch.no_grad()
    def reset(self) -> None:
        self.min_val.zero_()
        self.max_val.zero_()
        self.calibrated.fill_(False)
        self._is_calibrated = False

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001, ANN002
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._is_calibrated = bool(self.calibrated)

    @torch.no_grad()
    def init_learnable(self) -> None:
        """Initialize the learnable scale/zero point from the calibrated range."""
        if self.learnable:
            scale, zp = minmax_qparams(self.min_val, self.max_val, self.bits, self.symmetric)
            self.scale.copy_(scale)
            self.zero_point.copy_(zp.float())

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero point currently used in ``quantize`` mode (the learned ones when learnable)."""
        if self.learnable:
            qmin, qmax = qrange(self.bits, self.symmetric)
            zp = torch.clamp(torch.round(self.zero_point.detach()), qmin, qmax).to(torch.int32)
            return self.scale.detach().reshape(()), zp.reshape(())
        return minmax_qparams(self.min_val, self.max_val, self.bits, self.symmetric)

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "float":
            return x
        if self.mode == "calibrate":
            self.observe(x)
            return x
        if not self._is_calibrated:
            # The mirror is only a cache: loaders that copy buffers directly (transformers) bypass it.
            self._is_calibrated = bool(self.calibrated)
        if not self._is_calibrated:
            raise SynQError(
                f"activation quantizer {self.name or ''} has no range: calibrate the model "
                "(synq_hf.quant.calibrate) before running it quantized"
            )
        if self.learnable:
            qmin, qmax = qrange(self.bits, self.symmetric)
            grad_factor = 1.0 / (x.numel() * qmax) ** 0.5
            out = torch._fake_quantize_learnable_per_tensor_affine(
                x.float(), self.scale, self.zero_point, qmin, qmax, grad_factor
            )
            return out.to(x.dtype)
        scale, zp = minmax_qparams(self.min_val, self.max_val, self.bits, self.symmetric)
        return fake_quantize_tensor(x, scale, zp, self.bits, self.symmetric, self.ste)

    def extra_repr(self) -> str:
        rng = f"[{float(self.min_val):.4g}, {float(self.max_val):.4g}]" if self._is_calibrated else "uncalibrated"
        return f"bits={self.bits}, symmetric={self.symmetric}, range={rng}, mode={self.mode}"
