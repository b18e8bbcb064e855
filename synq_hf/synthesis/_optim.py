"""Per-group Adam and ReduceLROnPlateau kept on the device, so groups sharing a forward never sync the host.

Every group of images (the leading axis of the pixel tensor) has its own learning rate, plateau counter and
best loss, exactly as if each group had its own ``torch.optim.Adam`` + ``ReduceLROnPlateau``; the updates are
elementwise, so one call updates all groups without ``.item()``.
"""

from __future__ import annotations

import math

import torch


class GroupAdam:
    """Adam (PyTorch's formula, no weight decay) on a ``(G, ...)`` tensor with one learning rate per group."""

    def __init__(self, param: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.param = param
        self.lr = torch.full((param.shape[0],), float(lr), device=param.device, dtype=torch.float32)
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)
        self.steps = 0

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        """One Adam update of every group with its own learning rate (bias correction shared: same step count)."""
        self.steps += 1
        b1, b2 = self.beta1, self.beta2
        self.exp_avg.lerp_(grad, 1 - b1)
        self.exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        bias1 = 1 - b1**self.steps
        bias2_sqrt = math.sqrt(1 - b2**self.steps)
        denom = (self.exp_avg_sq.sqrt() / bias2_sqrt).add_(self.eps)
        step_size = (self.lr / -bias1).view(-1, *([1] * (self.param.dim() - 1)))
        self.param.addcmul_(self.exp_avg / denom, step_size)


class GroupPlateau:
    """``ReduceLROnPlateau(mode='min', threshold=1e-4 rel)`` per group, updating ``GroupAdam.lr`` in place.

    The improvement test is ``loss < best - threshold * |best|`` (torch's ``best * (1 - threshold)`` for positive
    losses, and still a strict improvement for the negative losses of ViT synthesis).
    """

    def __init__(self, optimizer: GroupAdam, factor: float, patience: int, min_lr: float, threshold: float = 1e-4):
        self.optimizer = optimizer
        self.factor, self.patience, self.min_lr, self.threshold = factor, patience, min_lr, threshold
        g = optimizer.lr.shape[0]
        self.best = torch.full((g,), math.inf, device=optimizer.lr.device)
        self.num_bad = torch.zeros(g, dtype=torch.int64, device=optimizer.lr.device)

    @torch.no_grad()
    def step(self, loss: torch.Tensor) -> None:
        """Record each group's loss and decay the learning rate of groups without improvement for ``patience``."""
        loss = loss.detach().float()
        bar = torch.where(torch.isfinite(self.best), self.best - self.threshold * self.best.abs(), self.best)
        improved = loss < bar
        self.best = torch.where(improved, loss, self.best)
        self.num_bad = torch.where(improved, torch.zeros_like(self.num_bad), self.num_bad + 1)
        reduce = self.num_bad > self.patience
        lr = self.optimizer.lr
        lr.copy_(torch.where(reduce, (lr * self.factor).clamp_min(self.min_lr), lr))
        self.num_bad = torch.where(reduce, torch.zeros_like(self.num_bad), self.num_bad)


def cycle_of(iteration: int, iterations: int, cycles: int) -> tuple[int, int, int]:
    """``(cycle, its first iteration, its length)`` of 0-based ``iteration`` when ``iterations`` are cut into
    ``cycles`` consecutive cycles of (near) equal length (iterations past the end stay in the last cycle)."""
    cycles = max(1, min(cycles, iterations))
    c = min(iteration * cycles // max(iterations, 1), cycles - 1)
    start, end = c * iterations // cycles, (c + 1) * iterations // cycles
    return c, start, max(end - start, 1)


class GroupWarmupCosine:
    """PSAQ-ViT's schedule: ``cycles`` equal cycles, each a linear warm-up over its first ``warmup`` fraction and
    then a cosine decay towards 0, Adam's state kept across cycles; one learning rate for all groups.

    PSAQ-ViT runs 2 cycles of 500 iterations with 100 warm-up iterations; ``iterations`` scales the cycles. Like
    ``GroupPlateau`` it is stepped after every Adam update and sets the learning rate of the next iteration.
    """

    def __init__(self, optimizer: GroupAdam, base_lr: float, iterations: int, cycles: int = 2, warmup: float = 0.2):
        self.optimizer, self.base_lr, self.iterations = optimizer, float(base_lr), iterations
        self.cycles, self.warmup = cycles, warmup
        self.iteration = 0
        optimizer.lr.fill_(self.lr_at(0))

    def lr_at(self, iteration: int) -> float:
        """Learning rate of 0-based ``iteration``."""
        _, start, length = cycle_of(iteration, self.iterations, self.cycles)
        warm = max(1, round(length * self.warmup))
        pos = iteration - start
        if pos < warm:
            return self.base_lr * (pos + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (pos - warm) / max(length - warm, 1))) * self.base_lr

    def step(self, loss: torch.Tensor | None = None) -> None:
        """Move to the next iteration (``loss`` is ignored: the schedule depends on the step count only)."""
        self.iteration += 1
        self.optimizer.lr.fill_(self.lr_at(self.iteration))
