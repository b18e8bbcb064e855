"""CNN synthesis objective: BatchNorm-statistics matching plus the hard-sample (focal) cross-entropy.

``L_g = mean_l(||mu_l - running_mean_l||^2 + ||var_l - running_var_l||^2) + beta * mean((1 - p_y)^gamma * CE)``
for every group ``g`` of images separately (METHOD.md step 1), with the batch statistics of group ``g`` only,
even when several groups share one forward. ``reduction="mean"`` divides each layer's squared norms by its channel
count, as the authors' ``nn.MSELoss`` does; ``"sum"`` keeps the norms (``synthesis_bn_reduction``).
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import nn

from ..model_info import model_logits
from ..precision import autocast
from .augment import random_resized_crop_flip


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that track running statistics (the targets of the BN loss)."""
    return [
        m for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None and m.running_var is not None
    ]


def hard_sample_ce(logits: torch.Tensor, labels: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample ``(1 - p_y)^gamma * CE`` (focal CE); ``1 - p_y`` is floored at 1e-6 so gamma < 1 stays finite."""
    ce = F.cross_entropy(logits.float(), labels, reduction="none")
    hardness = (-torch.expm1(-ce)).clamp_min(1e-6)
    return hardness.pow(gamma) * ce


class _GroupBNStatsLoss(torch.autograd.Function):
    """``||mu_g - running_mean||^2 + ||var_g - running_var||^2`` per group ``g`` of a BN input ``(G*B, C, ...)``.

    Squared L2 norms summed over channels (METHOD.md's formula), or averaged over them (``channel_mean=True``, the
    authors' ``nn.MSELoss``: the same value and gradient divided by C).

    Same value and gradient as ``torch.var_mean`` + squares, but cheaper on CPU: statistics come from per-(image,
    channel) sums over contiguous pixels (two fast reductions instead of a strided one), and the backward is the
    closed form ``dL/dx = A[g, c] * x + B[g, c]``, a single fused pass. A channels_last input (CNNs on CUDA) is
    reduced over its contiguous pixel axis without a copy; a bf16/fp16 input (autocast) accumulates in float32
    (the sums read the low-precision tensor, no float32 copy of it is made).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, groups: int, running_mean: torch.Tensor,  # type: ignore[override]
                running_var: torch.Tensor, channel_mean: bool = False) -> torch.Tensor:
        n, c = x.shape[:2]
        acc = None if x.dtype in (torch.float32, torch.float64) else torch.float32
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            flat, axis = x.permute(0, 2, 3, 1).reshape(n, -1, c), 1  # a view: (N, H*W, C)
        else:
            flat, axis = x.reshape(n, c, -1), -1
        count = (n // groups) * flat.shape[axis]
        s1 = flat.sum(axis, dtype=acc).double().view(groups, -1, c).sum(1)
        s2 = torch.linalg.vector_norm(flat, dim=axis, dtype=acc).double().square().view(groups, -1, c).sum(1)
        mean = s1 / count
        var = (s2 / count - mean.square()).clamp_min(0)
        dmean = mean - running_mean.double()
        dvar = var - running_var.double()
        dt = acc or x.dtype
        ctx.save_for_backward(x, mean.to(dt), dmean.to(dt), dvar.to(dt))
        ctx.groups, ctx.count, ctx.norm = groups, count, (c if channel_mean else 1)
        return ((dmean.square().sum(-1) + dvar.square().sum(-1)) / ctx.norm).to(dt)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        x, mean, dmean, dvar = ctx.saved_tensors
        g = grad.view(-1, 1) / ctx.norm
        a = g * 4 * dvar / ctx.count  # (G, C)
        b = g * 2 * dmean / ctx.count - a * mean
        shape = (ctx.groups, 1, x.shape[1], *([1] * (x.dim() - 2)))
        xg = x.unflatten(0, (ctx.groups, -1))
        out = torch.addcmul(b.view(shape).to(x.dtype), xg, a.view(shape).to(x.dtype))
        return out.flatten(0, 1), None, None, None, None


class BNStatsObjective:
    """Per-group BN-statistics + hard-sample CE loss of a frozen teacher, computed through forward hooks.

    Use as a context manager: hooks are registered on entry and always removed on exit (even on error). Calling
    it with pixels ``(G, B, C, H, W)`` and labels ``(G, B)`` returns the loss per group ``(G,)`` and its parts.
    """

    optimizer: dict = {}
    """The pixel optimizer's settings (``run_groups`` keywords): the defaults, Adam and a per-group plateau."""

    def __init__(self, teacher: nn.Module, *, beta: float, gamma: float, augment: bool,
                 generator: torch.Generator | None = None, host_rng: random.Random | None = None,
                 precision: str = "fp32", channels_last: bool = False, reduction: str = "sum"):
        self.teacher = teacher
        self.precision, self.channels_last = precision, channels_last
        self.layers = batchnorm_layers(teacher)
        if not self.layers:
            raise ValueError("the teacher has no BatchNorm layer with running statistics")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction={reduction!r} is not allowed; choose 'mean' or 'sum'")
        self.beta, self.gamma, self.augment, self.reduction = beta, gamma, augment, reduction
        self.generator = generator
        self.host_rng = host_rng or random.Random(0)
        self._groups = 0
        self._terms: list[torch.Tensor] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> BNStatsObjective:
        self._handles = [m.register_forward_hook(self._hook) for m in self.layers]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._terms = []

    def _hook(self, module: nn.modules.batchnorm._BatchNorm, inputs: tuple[torch.Tensor, ...], _out: object) -> None:
        if not self._groups:
            return
        self._terms.append(_GroupBNStatsLoss.apply(inputs[0], self._groups, module.running_mean, module.running_var,
                                                   self.reduction == "mean"))

    def __call__(self, pixels: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss per group and its parts (``bn``, ``ce``), all ``(G,)`` tensors on the device."""
        g, b = pixels.shape[:2]
        x = pixels.flatten(0, 1)
        if self.augment and self.host_rng.random() < 0.5:
            x = random_resized_crop_flip(x, self.generator)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        self._groups, self._terms = g, []
        try:
            with autocast(self.precision, x.device):
                logits = model_logits(self.teacher, x)
        finally:
            self._groups = 0
        bn = torch.stack(self._terms).mean(0)
        self._terms = []
        ce = hard_sample_ce(logits, labels.flatten(), self.gamma).view(g, b).mean(1)
        with torch.no_grad():
            acc = (logits.argmax(-1) == labels.flatten()).float().view(g, b).mean(1)
        return bn + self.beta * ce, {"bn": bn.detach(), "ce": ce.detach(), "acc": acc}
