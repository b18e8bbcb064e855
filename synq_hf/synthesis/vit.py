"""ViT/DeiT/Swin synthesis objective (PSAQ-ViT): entropy of patch-token similarities, CE and an image prior.

For every attention block the input of its output projection (``attn @ v`` with heads concatenated, present with
fused SDPA too) is averaged over heads, the prefix tokens (class/distillation) are dropped, and the pairwise
cosine similarities of the patch tokens are computed as ``normalize`` then one batched matmul (``B x P x P``,
never ``B x P x P x d``). Their density per image is a Gaussian KDE (bandwidth 0.01) evaluated at 10 points between
the group's min and max similarity; the differential entropy (trapezoid rule, PSAQ-ViT's ``pdf + 1e-4``) summed
over blocks is maximized. Swin attends within windows, so its similarities are taken per window (the tokens that
attention actually compares), and an image's density pools all its windows.

Two forms compute the same value and gradient (``kde=``): the per-block ``loop`` with truncated kernels (the
fastest on CPU) and the ``fused`` form (:func:`fused_similarity_entropy`), which stacks the blocks of one shape and
evaluates every grid point at once in a few large kernels, for GPUs, where the loop's many small kernels left the
device waiting on launches; ``auto`` picks fused on CUDA, loop elsewhere. Under bf16/fp16 autocast the
similarities, the KDE and the entropy are computed in float32.

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

from ..architectures import ArchSpec, find_spec
from ..errors import ConfigError
from ..model_info import model_logits
from ..precision import autocast, float32
from ._optim import cycle_of
from .augment import roll_jitter_flip


def attention_modules(model: nn.Module, spec: ArchSpec | None = None) -> list[tuple[nn.Module, nn.Linear, int]]:
    """``(attention, output projection, num_heads)`` for every multi-head attention, as the model's spec lists them
    (``spec``: the one the caller matched; default: matched here)."""
    spec = spec if spec is not None else find_spec(model)
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


def _grid_offsets(samples: torch.Tensor, points: torch.Tensor, reach: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(frac, index, step)`` of each sample on the uniform grid ``points``: the index of its nearest point in the
    grid padded with ``2 * reach + 1`` points on both sides (clamped so that index +- ``reach`` stays in the padded
    grid and off the real one for samples beyond its edges), and its distance to that point in grid steps
    (``frac``; its distance to the point ``o`` steps further is ``(frac - o) * step``)."""
    first = points[..., :1]
    step = (points[..., 1:2] - first).clamp_min(torch.finfo(samples.dtype).tiny)
    u = (samples - first).div_(step)
    nearest = u.round()
    frac = u.sub_(nearest)
    index = nearest.clamp_(-(reach + 1), points.shape[-1] + reach).long().add_(2 * reach + 1)
    return frac, index, step


def _dense_kernels(samples: torch.Tensor, points: torch.Tensor, bandwidth: float):
    """``(u, step, kernels)``: the samples in grid steps from the first point, the grid step, and an iterator of
    ``(k, exp(-(s - p_k)^2 / 2h^2))`` over every point ``k`` of the uniform grid ``points``.

    The kernels come without ``exp`` per point: from the middle point outwards, each is its neighbour's times a
    per-sample ratio that itself changes by the constant ``exp(-step^2 / h^2)`` per step (the yielded tensor is
    updated in place; use it before the next). Starting in the middle keeps every factor within float range where
    the dense sum is used (a step below ~12 bandwidths / (K - 1)); a sample more than K - 1 steps from the middle,
    whose kernels are then all below exp(-18) of a peak, may count as 0.
    """
    first = points[..., :1]
    step = (points[..., 1:2] - first if points.shape[-1] > 1 else torch.ones_like(first))
    step = step.clamp_min(torch.finfo(samples.dtype).tiny)
    coef = step.square().mul_(-0.5 / bandwidth**2)
    u = (samples - first).div_(step)
    k, mid = points.shape[-1], (points.shape[-1] - 1) // 2

    def kernels():
        t = u - mid
        kern = t.square().mul_(coef).exp_()
        yield mid, kern
        per_step = coef.mul(2).exp_()
        if mid + 1 < k:
            up, ratio = kern.clone(), t.mul(-2).add_(1).mul_(coef).exp_()
            for j in range(mid + 1, k):
                yield j, up.mul_(ratio)
                ratio.mul_(per_step)
        ratio = t.mul_(2).add_(1).mul_(coef).exp_()
        for j in range(mid - 1, -1, -1):
            yield j, kern.mul_(ratio)
            ratio.mul_(per_step)

    return u, step, kernels()


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
            # The density at every point within ``reach`` of a sample's nearest one, in a grid padded on both sides
            # (points beyond the grid's edges collect what falls there and are dropped): no gather, no mask.
            pad, k = 2 * reach + 1, points.shape[-1]
            frac, index, step = _grid_offsets(samples, points, reach)
            coef = step.square().mul_(inv)
            out = points.new_zeros(*points.shape[:-1], k + 2 * pad)
            for offset in range(-reach, reach + 1):
                kern = (frac - offset).square_().mul_(coef).exp_()
                out.scatter_add_(-1, index + offset if offset else index, kern)
            return out[..., pad:pad + k] * norm
        _, _, kernels = _dense_kernels(samples, points, bandwidth)
        cols = dict((j, kern.sum(-1)) for j, kern in kernels)
        return torch.stack([cols[j] for j in range(points.shape[-1])], -1) * norm

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        samples, points = ctx.saved_tensors
        h, reach = ctx.bandwidth, ctx.reach
        norm = 1.0 / (samples.shape[-1] * h * math.sqrt(2 * math.pi))
        out = torch.zeros_like(samples)
        if reach is not None:
            pad = 2 * reach + 1
            frac, index, step = _grid_offsets(samples, points, reach)
            coef = step.square().mul_(-0.5 / h**2)
            grad = F.pad(grad, (pad, pad))
            for offset in range(-reach, reach + 1):
                t = frac - offset  # (s - p) / step
                kern = t.square().mul_(coef).exp_()
                # d/ds exp(-(s - p)^2 / 2h^2) = -(s - p) / h^2 * kern
                out.addcmul_(kern.mul_(t), grad.gather(-1, index + offset if offset else index))
            return out.mul_(step * (-norm / h**2)), None, None
        # sum_k g_k (p_k - s) / h^2 * kern_k, with p_k - s = (k - u) * step: (sum_k k g_k kern_k - u sum_k g_k kern_k)
        u, step, kernels = _dense_kernels(samples, points, h)
        weighted = torch.zeros_like(samples)
        for j, kern in kernels:
            out.addcmul_(kern, grad[..., j, None])
            weighted.addcmul_(kern, grad[..., j, None] * j)
        return weighted.sub_(out.mul_(u)).mul_(step * (norm / h**2)), None, None


def _grid(parts: list[torch.Tensor], num_points: int) -> torch.Tensor:
    """``num_points`` between the min and max over every part of each group (the leading axis), ``(G, K)``."""
    lo = torch.stack([p.detach().flatten(1).amin(-1) for p in parts]).amin(0)
    hi = torch.stack([p.detach().flatten(1).amax(-1) for p in parts]).amax(0)
    steps = torch.linspace(0, 1, num_points, device=lo.device, dtype=lo.dtype)
    return lo[:, None] + (hi - lo)[:, None] * steps


def _entropy(pdf: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    pdf = pdf + 1e-4  # PSAQ-ViT's floor
    return torch.trapezoid(-pdf * pdf.log(), points, dim=-1)


def _expand(points: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return points.view(points.shape[0], *([1] * (like.dim() - 2)), -1).expand(*like.shape[:-1], -1).contiguous()


def kde_entropy(samples: torch.Tensor, bandwidth: float, num_points: int) -> torch.Tensor:
    """Differential entropy of the KDE of each row of ``samples (G, B, M)``, grid between each group's min/max.

    Returns ``(G, B)``. The grid (``num_points`` between the group's min and max) is treated as a constant.
    """
    points = _expand(_grid([samples], num_points), samples)
    return _entropy(_GaussianKDE.apply(samples, points, bandwidth), points)


def similarity_entropy(sims: torch.Tensor, bandwidth: float, num_points: int) -> torch.Tensor:
    """``kde_entropy`` of symmetric similarity matrices ``sims (G, B, W, P, P)``, pooled over ``W`` per image.

    The same density as over all ``W * P * P`` entries at half the kernel work: each pair above the diagonal
    stands for itself and its mirror (weight 2), the diagonal counts once. Returns ``(G, B)``.
    """
    g, b, w, p, _ = sims.shape
    rows, cols = torch.triu_indices(p, p, 1, device=sims.device)
    upper = sims.flatten(-2)[..., rows * p + cols].reshape(g, b, -1)
    diag = sims.diagonal(dim1=-2, dim2=-1).contiguous().view(g, b, -1)  # a copy: sims itself is not kept
    points = _grid([upper, diag], num_points)
    pu, pd = _expand(points, upper), _expand(points, diag)
    mu, md = upper.shape[-1], diag.shape[-1]
    pdf = (_GaussianKDE.apply(upper, pu, bandwidth) * (2 * mu) + _GaussianKDE.apply(diag, pd, bandwidth) * md)
    return _entropy(pdf / (2 * mu + md), pu)


PSAQ_TV_TARGET = (2500.0, 3000.0)
"""PSAQ-ViT's image-prior target range, for 32 images of 3 x 224 x 224 (``PSAQ_TV_NUMEL`` values)."""
PSAQ_TV_NUMEL = 32 * 3 * 224 * 224
PSAQ_JITTER = (15, 30)
"""PSAQ-ViT's roll-jitter limits in pixels at 224 px, for the first and second of its two schedule cycles."""


def jitter_limit(side: int, cycle: int) -> int:
    """PSAQ-ViT's roll-jitter limit in pixels for an image ``side`` px wide in schedule cycle ``cycle`` (at least 1)."""
    return max(1, round(PSAQ_JITTER[min(cycle, len(PSAQ_JITTER) - 1)] * side / 224))


_PRIOR_PAIRS = (  # (minuend, subtrahend) slices of (H, W) for the row, column and both diagonal differences
    ((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
    ((slice(None, -1), slice(None)), (slice(1, None), slice(None))),
    ((slice(1, None), slice(None, -1)), (slice(None, -1), slice(1, None))),
    ((slice(None, -1), slice(None, -1)), (slice(1, None), slice(1, None))),
)


class _ImagePrior(torch.autograd.Function):
    """Sum over the four directions of the per-group L2 norm of the pixel differences; keeps only the images for
    backward (the differences are recomputed), where autograd would keep all four difference tensors."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, groups: int) -> torch.Tensor:  # type: ignore[override]
        norms = torch.stack([torch.linalg.vector_norm((x[..., a[0], a[1]] - x[..., b[0], b[1]]).reshape(groups, -1), dim=1)
                             for a, b in _PRIOR_PAIRS])  # (4, G)
        ctx.save_for_backward(x, norms)
        ctx.groups = groups
        return norms.sum(0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        x, norms = ctx.saved_tensors
        out = torch.zeros_like(x)
        view = (ctx.groups, -1, *([1] * (x.dim() - 1)))
        for (a, b), norm in zip(_PRIOR_PAIRS, norms):
            # d||d||/dd = d / ||d|| (0 where the norm is 0)
            scale = (grad / norm.clamp_min(torch.finfo(norm.dtype).tiny)).view(view)
            d = (x[..., a[0], a[1]] - x[..., b[0], b[1]]).unflatten(0, (ctx.groups, -1)).mul_(scale).flatten(0, 1)
            out[..., a[0], a[1]] += d
            out[..., b[0], b[1]] -= d
        return out, None


def image_prior(x: torch.Tensor, groups: int) -> torch.Tensor:
    """PSAQ-ViT's image prior per group of ``x (G*B, C, H, W)``: the sum of the L2 norms (over the group) of the
    neighbouring-pixel differences along rows, columns and both diagonals, ``(G,)``."""
    return _ImagePrior.apply(x, groups)


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def patch_similarity(features: torch.Tensor, heads: int, prefix: int) -> torch.Tensor:
    """Cosine similarities ``(N, P, P)`` of head-averaged tokens ``(N, T, heads*d)``, prefix tokens dropped.

    Computed in float32 whatever the features' dtype (bf16/fp16 under autocast) and with autocast off."""
    with float32(features.device):
        tokens = _at_least_fp32(features).unflatten(-1, (heads, -1)).mean(-2)[:, prefix:]
        unit = F.normalize(tokens, dim=-1)
        return torch.bmm(unit, unit.transpose(1, 2))


class _WeightedKDE(torch.autograd.Function):
    """Weighted Gaussian KDE of ``samples (..., M)`` (sample weights ``weights (M,)`` summing to ``total``) at
    ``points (..., K)``: all ``K`` points at once, one ``(..., M, K)`` kernel tensor and one matmul over the samples;
    recomputed in backward, so only the samples are kept.

    The accelerator form of ``_GaussianKDE`` (a few large kernels instead of a Python loop over grid points or
    offsets): the exact dense sum, with no truncation and no division by the grid step (equal grid points are fine).
    """

    @staticmethod
    def forward(ctx, samples: torch.Tensor, weights: torch.Tensor, points: torch.Tensor,  # type: ignore[override]
                bandwidth: float, total: float) -> torch.Tensor:
        ctx.save_for_backward(samples, weights, points)
        ctx.bandwidth, ctx.total = bandwidth, total
        kern = (points.unsqueeze(-2) - samples.unsqueeze(-1)).square_().mul_(-0.5 / bandwidth**2).exp_()
        return torch.matmul(weights, kern).mul_(1.0 / (total * bandwidth * math.sqrt(2 * math.pi)))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        samples, weights, points = ctx.saved_tensors
        h = ctx.bandwidth
        diff = points.unsqueeze(-2) - samples.unsqueeze(-1)  # (..., M, K): p_k - s_m
        # d/ds exp(-(s - p)^2 / 2h^2) = (p - s) / h^2 * exp(...)
        kern = diff.square().mul_(-0.5 / h**2).exp_().mul_(diff)
        out = torch.matmul(kern, grad.unsqueeze(-1)).squeeze(-1)
        return out.mul_(weights).mul_(1.0 / (ctx.total * h**3 * math.sqrt(2 * math.pi))), None, None, None, None


def fused_similarity_entropy(features: list[torch.Tensor], heads: int, prefix: int, groups: int, images: int,
                             bandwidth: float, num_points: int) -> torch.Tensor:
    """Sum over blocks of the per-group mean (over its ``images``) KDE entropy of patch similarities, for blocks whose
    captured features ``(groups*images*windows, T, heads*d)`` share one shape.

    The same value as :func:`similarity_entropy` of each block's :func:`patch_similarity`, summed, up to float
    rounding, from one stacked computation (one bmm, one gather, one kernel tensor, one matmul) instead of ~100
    small kernels per block: on a GPU the loop form is launch-bound (BENCHMARKS.md, "GPU speed (issue 24)").
    Float32 whatever the features' dtype. Returns ``(groups,)``.
    """
    with float32(features[0].device):
        x = torch.stack([_at_least_fp32(f) for f in features])  # (L, N, T, C)
        blocks, n = x.shape[:2]
        tokens = x.unflatten(-1, (heads, -1)).mean(-2)[:, :, prefix:]  # (L, N, P, d)
        unit = F.normalize(tokens, dim=-1).flatten(0, 1)
        sims = torch.bmm(unit, unit.transpose(1, 2))  # (L*N, P, P)
        p = sims.shape[-1]
        windows = n // (groups * images)
        rows, cols = torch.triu_indices(p, p, 0, device=sims.device)
        # the pairs on and above the diagonal; an off-diagonal pair stands for itself and its mirror (weight 2)
        weights = torch.where(rows == cols, 1.0, 2.0).to(sims.dtype).repeat(windows)
        samples = sims.flatten(-2)[:, rows * p + cols].reshape(blocks, groups, images, -1)  # (L, G, B, W*M)
        flat = samples.detach().flatten(2)
        lo, hi = flat.amin(-1), flat.amax(-1)  # (L, G): each block's grid spans its group's similarities
        steps = torch.linspace(0, 1, num_points, device=sims.device, dtype=sims.dtype)
        points = (lo.unsqueeze(-1) + (hi - lo).unsqueeze(-1) * steps).unsqueeze(2)  # (L, G, 1, K)
        pdf = _WeightedKDE.apply(samples, weights, points, bandwidth, float(windows * p * p))
        entropy = _entropy(pdf, points.expand_as(pdf))  # (L, G, B)
        return entropy.mean(-1).sum(0)


KDE_FORMS = ("auto", "fused", "loop")
"""Patch-similarity KDE forms: ``loop`` (per block, truncated kernels: fastest on CPU), ``fused`` (all blocks of one
shape at once: few large kernels, for accelerators), ``auto`` (fused on CUDA, loop elsewhere: CPU results unchanged)."""


class PatchSimilarityObjective:
    """Per-group PSAQ-ViT loss ``-sum_blocks entropy + CE + tv_weight * |prior - target|`` through hooks.

    As in PSAQ-ViT, every iteration rolls the images by one random offset on both axes (at most 15 then, in the
    second half of ``iterations``, 30 pixels at 224 px, scaled with the image side) and flips each group with
    probability 0.5; the image prior (:func:`image_prior`, on the jittered images) is pulled towards a target drawn
    per group from ``PSAQ_TV_TARGET``, scaled by the square root of the group's pixel count. A context manager like
    ``BNStatsObjective``: hooks (forward pre-hooks on the output projections, so fused attention stays on) exist
    only inside ``with``; :meth:`start` begins a new set of groups.
    """

    optimizer: dict = {"betas": PSAQ_BETAS, "schedule": PSAQ_SCHEDULE}
    """The pixel optimizer's settings (``run_groups`` keywords): PSAQ-ViT's Adam betas and schedule."""

    def __init__(self, teacher: nn.Module, *, family: str, tv_weight: float, bandwidth: float, num_points: int,
                 generator: torch.Generator | None = None, host_rng: random.Random | None = None,
                 iterations: int = 1000, precision: str = "fp32", kde: str = "auto", spec: ArchSpec | None = None):
        if kde not in KDE_FORMS:
            raise ConfigError(f"kde={kde!r} is not allowed; choose one of {list(KDE_FORMS)}")
        self.teacher = teacher
        self.precision, self.kde = precision, kde
        self.blocks = attention_modules(teacher, spec)
        if not self.blocks:
            raise ValueError("the teacher has no multi-head attention module")
        self.prefix = prefix_tokens(teacher, family)
        self.tv_weight, self.bandwidth, self.num_points = tv_weight, bandwidth, num_points
        self.generator = generator
        self.host_rng = host_rng or random.Random(0)
        self.iterations = iterations
        self._step = 0
        self._targets: list[float] = []
        self._target_tensor: torch.Tensor | None = None
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
        self._target_tensor = None  # on the device at the first call: one copy per start

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
            with autocast(self.precision, x.device):
                logits = model_logits(self.teacher, x)
        finally:
            self._active = False
        entropy = pixels.new_zeros(g)
        if self.kde == "fused" or (self.kde == "auto" and x.device.type == "cuda"):
            shapes: dict[tuple, list[torch.Tensor]] = {}  # blocks of one feature shape go through one computation
            for feats, heads in self._features:
                shapes.setdefault((tuple(feats.shape), heads), []).append(feats)
            for (_, heads), feats in shapes.items():
                entropy = entropy + fused_similarity_entropy(feats, heads, self.prefix, g, b, self.bandwidth,
                                                             self.num_points)
        else:
            for feats, heads in self._features:
                sims = patch_similarity(feats, heads, self.prefix)  # (G*B*windows, P, P)
                sims = sims.view(g, b, -1, *sims.shape[-2:])
                entropy = entropy + similarity_entropy(sims, self.bandwidth, self.num_points).mean(1)
        self._features = []
        ce = F.cross_entropy(logits.float(), labels.flatten(), reduction="none").view(g, b).mean(1)
        scale = math.sqrt(x[: x.shape[0] // g].numel() / PSAQ_TV_NUMEL)
        if self._target_tensor is None or self._target_tensor.device != x.device:
            # built once per start(): a tensor from host data is a blocking copy (a host sync on CUDA)
            self._target_tensor = torch.tensor(self._targets, device=x.device, dtype=torch.float32)
        target = self._target_tensor * scale
        tv = (image_prior(x.float(), g) - target).abs()
        with torch.no_grad():
            acc = (logits.argmax(-1) == labels.flatten()).float().view(g, b).mean(1)
        loss = -entropy + ce + self.tv_weight * tv
        return loss, {"entropy": entropy.detach(), "ce": ce.detach(), "tv": tv.detach(), "acc": acc}
