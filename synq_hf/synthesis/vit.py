"""ViT/DeiT/Swin synthesis objective (PSAQ-ViT): entropy of patch-token similarities, CE and an image prior.

For every attention block the input of its output projection (``attn @ v`` with heads concatenated, present with
fused SDPA too) is averaged over heads, the prefix tokens (class/distillation) are dropped, and the pairwise
cosine similarities of the patch tokens are computed as ``normalize`` then one batched matmul (``B x P x P``,
never ``B x P x P x d``). Their density per image is a Gaussian KDE (bandwidth 0.01) evaluated at 10 points between
the group's min and max similarity; the differential entropy (trapezoid rule, PSAQ-ViT's ``pdf + 1e-4``) summed
over blocks is maximized. Swin attends within windows, so its similarities are taken per window (the tokens that
attention actually compares), and an image's density pools all its windows.

The optimizer is PSAQ-ViT's too (``PSAQ_BETAS``, ``PSAQ_SCHEDULE``): Adam with betas (0.5, 0.9) and two cycles of
linear warm-up (the first fifth of each) and cosine decay over the iterations, where CNN synthesis keeps its
plateau schedule.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from torch import nn

from ..architectures import find_spec
from ..model_info import model_logits
from ._optim import cycle_of
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


PSAQ_BETAS = (0.5, 0.9)
"""Adam betas of PSAQ-ViT's pixel optimizer."""
PSAQ_SCHEDULE = "warmup_cosine"
"""PSAQ-ViT's learning-rate schedule (``synq_hf.synthesis.engine.run_groups``)."""

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


PSAQ_TV_TARGET = (2500.0, 3000.0)
"""PSAQ-ViT's image-prior target range, for 32 images of 3 x 224 x 224 (``PSAQ_TV_NUMEL`` values)."""
PSAQ_TV_NUMEL = 32 * 3 * 224 * 224
PSAQ_JITTER = (15, 30)
"""PSAQ-ViT's roll-jitter limits in pixels at 224 px, for the first and second of its two schedule cycles."""


def jitter_limit(side: int, cycle: int) -> int:
    """PSAQ-ViT's roll-jitter limit in pixels for an image ``side`` px wide in schedule cycle ``cycle`` (at least 1)."""
    return max(1, round(PSAQ_JITTER[min(cycle, len(PSAQ_JITTER) - 1)] * side / 224))


def image_prior(x: torch.Tensor, groups: int) -> torch.Tensor:
    """PSAQ-ViT's image prior per group of ``x (G*B, C, H, W)``: the sum of the L2 norms (over the group) of the
    neighbouring-pixel differences along rows, columns and both diagonals, ``(G,)``."""
    diffs = (x[..., :, :-1] - x[..., :, 1:], x[..., :-1, :] - x[..., 1:, :],
             x[..., 1:, :-1] - x[..., :-1, 1:], x[..., :-1, :-1] - x[..., 1:, 1:])
    return sum(torch.linalg.vector_norm(d.reshape(groups, -1), dim=1) for d in diffs)


def patch_similarity(features: torch.Tensor, heads: int, prefix: int) -> torch.Tensor:
    """Cosine similarities ``(N, P, P)`` of head-averaged tokens ``(N, T, heads*d)``, prefix tokens dropped."""
    tokens = features.unflatten(-1, (heads, -1)).mean(-2)[:, prefix:]
    unit = F.normalize(tokens.float(), dim=-1)
    return torch.bmm(unit, unit.transpose(1, 2))


class PatchSimilarityObjective:
    """Per-group PSAQ-ViT loss ``-sum_blocks entropy + CE + tv_weight * |prior - target|`` through hooks.

    As in PSAQ-ViT, every iteration rolls the images by one random offset on both axes (at most 15 then, in the
    second half of ``iterations``, 30 pixels at 224 px, scaled with the image side) and flips each group with
    probability 0.5; the image prior (:func:`image_prior`, on the jittered images) is pulled towards a target drawn
    per group from ``PSAQ_TV_TARGET``, scaled by the square root of the group's pixel count. A context manager like
    ``BNStatsObjective``: hooks (forward pre-hooks on the output projections, so fused attention stays on) exist
    only inside ``with``; :meth:`start` begins a new set of groups.
    """

    def __init__(self, teacher: nn.Module, *, family: str, tv_weight: float, bandwidth: float, num_points: int,
                 generator: torch.Generator | None = None, host_rng: random.Random | None = None,
                 iterations: int = 1000):
        self.teacher = teacher
        self.blocks = attention_modules(teacher)
        if not self.blocks:
            raise ValueError("the teacher has no multi-head attention module")
        self.prefix = prefix_tokens(teacher, family)
        self.tv_weight, self.bandwidth, self.num_points = tv_weight, bandwidth, num_points
        self.generator = generator
        self.host_rng = host_rng or random.Random(0)
        self.iterations = iterations
        self._step = 0
        self._targets: list[float] = []
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

    def start(self, groups: int) -> None:
        """Begin ``groups`` new groups: restart the jitter schedule and draw each group's image-prior target."""
        self._step = 0
        self._targets = [self.host_rng.uniform(*PSAQ_TV_TARGET) for _ in range(groups)]

    def _make_hook(self, heads: int):
        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            if self._active:
                self._features.append((inputs[0], heads))

        return hook

    def __call__(self, pixels: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss per group and its parts (``entropy``, ``ce``, ``tv``: the prior's distance to its target), ``(G,)``."""
        g, b = pixels.shape[:2]
        if len(self._targets) != g:
            self.start(g)
        x = pixels.flatten(0, 1)
        cycle = cycle_of(self._step, self.iterations, len(PSAQ_JITTER))[0]
        self._step += 1
        lim = jitter_limit(x.shape[-1], cycle)
        off = self.host_rng.randint(-lim, lim)
        x = roll_jitter_flip(x, (off, off), self.generator, groups=g)
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
        scale = math.sqrt(x[: x.shape[0] // g].numel() / PSAQ_TV_NUMEL)
        target = torch.tensor(self._targets, device=x.device, dtype=torch.float32) * scale
        tv = (image_prior(x.float(), g) - target).abs()
        with torch.no_grad():
            acc = (logits.argmax(-1) == labels.flatten()).float().view(g, b).mean(1)
        loss = -entropy + ce + self.tv_weight * tv
        return loss, {"entropy": entropy.detach(), "ce": ce.detach(), "tv": tv.detach(), "acc": acc}
