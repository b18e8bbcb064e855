"""ViT/DeiT/Swin synthesis objective (PSAQ-ViT): entropy of patch-token similarities, CE and a TV prior.

For every attention block the input of its output projection (``attn @ v`` with heads concatenated, present with
fused SDPA too) is averaged over heads, the prefix tokens (class/distillation) are dropped, and the pairwise
cosine similarities of the patch tokens are computed as ``normalize`` then one batched matmul (``B x P x P``,
never ``B x P x P x d``). Their density per image is a Gaussian KDE (bandwidth 0.01) evaluated at 10 points between
the group's min and max similarity; the differential entropy (trapezoid rule, PSAQ-ViT's ``pdf + 1e-4``) summed
over blocks is maximized. Swin attends within windows, so its similarities are taken per window (the tokens that
attention actually compares), and an image's density pools all its windows.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from torch import nn

from ..architectures import find_spec
from ..model_info import model_logits
from .augment import roll_jitter_flip


def attention_modules(model: nn.Module) -> list[tuple[nn.Module, nn.Linear, int]]:
    """``(attention, output projection, num_heads)`` for every multi-head attention, as the model's spec lists them."""
    spec = find_spec(model)
    return spec.attention_modules(model) if spec is not None and spec.attention_modules is not None else []


def prefix_tokens(model: nn.Module, family: str) -> int:
    """Class/distillation tokens before the patch tokens (0 for Swin's windows)."""
    if family == "swin":
        return 0
    n = getattr(model, "num_prefix_tokens", None)
    if isinstance(n, int):
        return n
    model_type = getattr(getattr(model, "config", None), "model_type", "")
    return 2 if model_type == "deit" else 1


KDE_CUTOFF = 6.0
"""Kernel truncation in bandwidths: a sample further than this from a grid point adds < exp(-18) ~ 2e-8 of its peak."""


def _nearest_point(samples: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Index of each sample's nearest point on the uniform grid ``points`` (float, not yet clamped to the grid)."""
    first, step = points[..., :1], points[..., 1:2] - points[..., :1]
    return ((samples - first) / step.clamp_min(torch.finfo(samples.dtype).tiny)).round_()


def _reach(points: torch.Tensor, bandwidth: float) -> int | None:
    """Grid points on each side of a sample's nearest one that lie within ``KDE_CUTOFF`` bandwidths of it;
    None when the dense sum is as cheap (a sample is at most half a step from its nearest point)."""
    k = points.shape[-1]
    if k < 2:
        return None
    step = float((points[..., 1] - points[..., 0]).amin())
    if step <= 0.0:
        return None
    reach = max(0, math.ceil(KDE_CUTOFF * bandwidth / step - 0.5))
    return reach if 2 * reach + 1 < k else None


class _GaussianKDE(torch.autograd.Function):
    """Gaussian KDE of ``samples (..., M)`` at the uniform grid ``points (..., K)``; recomputes in backward.

    A sample further than ``KDE_CUTOFF`` bandwidths from a point adds < exp(-KDE_CUTOFF^2 / 2) of a peak there, so
    each sample only visits the ``2 * reach + 1`` grid points around its nearest one (``_reach``: one point when the
    step is >= 2 * KDE_CUTOFF bandwidths, e.g. bandwidth 0.01 and 10 points over a similarity range wider than
    1.08) with a scatter, instead of ``K`` dense exps. Memory stays O(samples): no ``(..., M, K)`` kernel is stored.
    """

    @staticmethod
    def forward(ctx, samples: torch.Tensor, points: torch.Tensor, bandwidth: float) -> torch.Tensor:  # type: ignore[override]
        reach = _reach(points, bandwidth)
        ctx.save_for_backward(samples, points)
        ctx.bandwidth, ctx.reach = bandwidth, reach
        norm = 1.0 / (samples.shape[-1] * bandwidth * math.sqrt(2 * math.pi))
        inv = -0.5 / bandwidth**2
        if reach is not None:
            nearest, k = _nearest_point(samples, points), points.shape[-1]
            out = torch.zeros_like(points)
            for offset in range(-reach, reach + 1):
                idx = (nearest + offset).clamp_(0, k - 1).long()
                kern = (samples - points.gather(-1, idx)).square_().mul_(inv).exp_()
                if offset:  # a clamped index repeats an edge point that another offset already counts
                    kern = kern.masked_fill_((nearest + offset < 0) | (nearest + offset > k - 1), 0.0)
                out.scatter_add_(-1, idx, kern)
            return out * norm
        cols = [torch.exp((samples - points[..., k, None]).square_().mul_(inv)).sum(-1) for k in range(points.shape[-1])]
        return torch.stack(cols, -1) * norm

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        samples, points = ctx.saved_tensors
        h, reach = ctx.bandwidth, ctx.reach
        norm = 1.0 / (samples.shape[-1] * h * math.sqrt(2 * math.pi))
        out = torch.zeros_like(samples)
        if reach is not None:
            nearest, k = _nearest_point(samples, points), points.shape[-1]
            for offset in range(-reach, reach + 1):
                idx = (nearest + offset).clamp_(0, k - 1).long()
                diff = points.gather(-1, idx) - samples
                kern = diff.square().mul_(-0.5 / h**2).exp_()
                if offset:
                    kern = kern.masked_fill_((nearest + offset < 0) | (nearest + offset > k - 1), 0.0)
                # d/ds exp(-(s - p)^2 / 2h^2) = (p - s) / h^2 * kern
                out.addcmul_(kern.mul_(diff), grad.gather(-1, idx), value=norm / h**2)
            return out, None, None
        for k in range(points.shape[-1]):
            diff = points[..., k, None] - samples
            kern = torch.exp(diff.square() * (-0.5 / h**2))
            out.addcmul_(kern * diff, grad[..., k, None] * (norm / h**2))
        return out, None, None


def kde_entropy(samples: torch.Tensor, bandwidth: float, num_points: int, group_dims: int = 1) -> torch.Tensor:
    """Differential entropy of the KDE of each row of ``samples (G, B, M)``, grid between each group's min/max.

    Returns ``(G, B)``. The grid (``num_points`` between the group's min and max) is treated as a constant.
    """
    flat = samples.detach().flatten(group_dims)
    lo, hi = flat.amin(-1), flat.amax(-1)
    steps = torch.linspace(0, 1, num_points, device=samples.device, dtype=samples.dtype)
    points = lo[:, None] + (hi - lo)[:, None] * steps  # (G, K)
    points = points.view(*points.shape[:1], *([1] * (samples.dim() - 2)), num_points).expand(*samples.shape[:-1], -1)
    pdf = _GaussianKDE.apply(samples, points.contiguous(), bandwidth) + 1e-4
    return torch.trapezoid(-pdf * pdf.log(), points, dim=-1)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels per image (the TV prior), ``(N, C, H, W) -> (N,)``."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    return dh + dw


def patch_similarity(features: torch.Tensor, heads: int, prefix: int) -> torch.Tensor:
    """Cosine similarities ``(N, P, P)`` of head-averaged tokens ``(N, T, heads*d)``, prefix tokens dropped."""
    tokens = features.unflatten(-1, (heads, -1)).mean(-2)[:, prefix:]
    unit = F.normalize(tokens.float(), dim=-1)
    return torch.bmm(unit, unit.transpose(1, 2))


class PatchSimilarityObjective:
    """Per-group PSAQ-ViT loss ``-sum_blocks entropy + CE + tv_weight * TV`` through hooks on attention outputs.

    A context manager like ``BNStatsObjective``: hooks (forward pre-hooks on the output projections, so fused
    attention stays on) exist only inside ``with``.
    """

    def __init__(self, teacher: nn.Module, *, family: str, tv_weight: float, bandwidth: float, num_points: int,
                 generator: torch.Generator | None = None, host_rng: random.Random | None = None):
        self.teacher = teacher
        self.blocks = attention_modules(teacher)
        if not self.blocks:
            raise ValueError("the teacher has no multi-head attention module")
        self.prefix = prefix_tokens(teacher, family)
        self.tv_weight, self.bandwidth, self.num_points = tv_weight, bandwidth, num_points
        self.generator = generator
        self.host_rng = host_rng or random.Random(0)
        self._active = False
        self._features: list[tuple[torch.Tensor, int]] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> PatchSimilarityObjective:
        for _, proj, heads in self.blocks:
            self._handles.append(proj.register_forward_pre_hook(self._make_hook(heads)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles, self._features = [], []

    def _make_hook(self, heads: int):
        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            if self._active:
                self._features.append((inputs[0], heads))

        return hook

    def __call__(self, pixels: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss per group and its parts (``entropy``, ``ce``, ``tv``), all ``(G,)`` tensors on the device."""
        g, b = pixels.shape[:2]
        x = pixels.flatten(0, 1)
        jitter = max(1, x.shape[-1] // 8)
        shift = (self.host_rng.randint(-jitter, jitter), self.host_rng.randint(-jitter, jitter))
        x = roll_jitter_flip(x, shift, self.generator)
        self._active, self._features = True, []
        try:
            logits = model_logits(self.teacher, x)
        finally:
            self._active = False
        entropy = pixels.new_zeros(g)
        for feats, heads in self._features:
            sims = patch_similarity(feats, heads, self.prefix)  # (G*B*windows, P, P)
            entropy = entropy + kde_entropy(sims.reshape(g, b, -1), self.bandwidth, self.num_points).mean(1)
        self._features = []
        ce = F.cross_entropy(logits.float(), labels.flatten(), reduction="none").view(g, b).mean(1)
        tv = total_variation(pixels.flatten(0, 1)).view(g, b).mean(1)
        with torch.no_grad():
            acc = (logits.argmax(-1) == labels.flatten()).float().view(g, b).mean(1)
        loss = -entropy + ce + self.tv_weight * tv
        return loss, {"entropy": entropy.detach(), "ce": ce.detach(), "tv": tv.detach(), "acc": acc}
