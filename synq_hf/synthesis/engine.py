"""The synthesis loop shared by CNN and ViT objectives: per-group Adam + a learning-rate schedule, no host sync between logs.

The loss of the ``G`` groups sent through one forward is the *sum* of their per-group losses, so each group's
gradient is exactly the gradient of its own loss; ``GroupAdam``/``GroupPlateau`` keep each group's learning
rate. Non-finite losses are accumulated on the device and inspected only every ``log_every`` iterations; a group
that ever produced NaN/Inf is reported to the caller, which restarts it from fresh noise.

Each group returns the pixels with the lowest loss it reached (tracked on the device): Adam at lr 0.5 can spike
late — on the CIFAR ResNet-20 one group's BN loss jumped from 1.2 to 440 around iteration 330 and the plateau
decay then froze it near 48 — and the spike must not be what gets saved.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ._optim import GroupAdam, GroupPlateau, GroupWarmupCosine

Objective = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]


@dataclass
class RunResult:
    """Per group the lowest-loss pixels reached, which groups went non-finite, and the logged loss parts."""

    pixels: torch.Tensor
    nonfinite: torch.Tensor
    history: list[dict[str, float]] = field(default_factory=list)


class GroupOptimizer:
    """Optimizes pixels ``(G, B, C, H, W)`` against an objective; ``step()`` is one synthesis iteration."""

    def __init__(self, objective: Objective, pixels: torch.Tensor, labels: torch.Tensor, *, lr: float,
                 patience: int, factor: float, min_lr: float,
                 clamp: tuple[torch.Tensor, torch.Tensor] | None = None, betas: tuple[float, float] = (0.9, 0.999),
                 schedule: str = "plateau", iterations: int | None = None):
        self.objective = objective
        self.pixels = pixels.detach().clone().requires_grad_(True)
        self.labels = labels
        self.adam = GroupAdam(self.pixels, lr, betas=betas)
        if schedule == "plateau":
            self.schedule: GroupPlateau | GroupWarmupCosine = GroupPlateau(self.adam, factor=factor, patience=patience,
                                                                          min_lr=min_lr)
        elif schedule == "warmup_cosine":
            self.schedule = GroupWarmupCosine(self.adam, lr, iterations if iterations is not None else 1000)
        else:
            raise ValueError(f"unknown synthesis schedule {schedule!r}; choose 'plateau' or 'warmup_cosine'")
        self.clamp = clamp
        self.nonfinite = torch.zeros(pixels.shape[0], dtype=torch.bool, device=pixels.device)
        self.last_parts: dict[str, torch.Tensor] = {}
        self.last_loss: torch.Tensor | None = None
        self.best_pixels = self.pixels.detach().clone()
        self.best_loss = torch.full((pixels.shape[0],), float("inf"), device=pixels.device)

    def step(self) -> None:
        """Forward, backward to the pixels, Adam and plateau update of every group (no host synchronization)."""
        loss, parts = self.objective(self.pixels, self.labels)
        (grad,) = torch.autograd.grad(loss.sum(), self.pixels)
        with torch.no_grad():
            finite = torch.isfinite(loss)
            self.nonfinite |= ~finite
            # A diverged group must not poison the others' statistics: zero its update, it is restarted anyway.
            grad = torch.where(finite.view(-1, *([1] * (grad.dim() - 1))), grad, torch.zeros_like(grad))
            improved = finite & (loss.detach() < self.best_loss)  # ``loss`` is that of the pixels before the step
            self.best_loss = torch.where(improved, loss.detach(), self.best_loss)
            self.best_pixels = torch.where(improved.view(-1, *([1] * (grad.dim() - 1))), self.pixels.detach(),
                                           self.best_pixels)
            self.adam.step(grad)
            if self.clamp is not None:
                self.pixels.clamp_(self.clamp[0], self.clamp[1])
            self.schedule.step(loss)
        self.last_loss, self.last_parts = loss.detach(), parts

    def summary(self) -> dict[str, float]:
        """Host copy of the last losses, averaged over the finite groups (this syncs: call it every k steps)."""
        if self.last_loss is None:
            return {}
        ok = ~self.nonfinite
        vals = torch.stack([self.last_loss, *self.last_parts.values(), self.adam.lr])
        denom = ok.sum().clamp_min(1)
        means = (torch.where(ok, vals, torch.zeros_like(vals)).sum(1) / denom).tolist()
        return dict(zip(["loss", *self.last_parts.keys(), "lr"], means))


def run_groups(objective: Objective, pixels: torch.Tensor, labels: torch.Tensor, *, iterations: int, lr: float,
               patience: int, factor: float, min_lr: float, log_every: int,
               clamp: tuple[torch.Tensor, torch.Tensor] | None = None,
               on_log: Callable[[int, dict[str, float]], None] | None = None,
               betas: tuple[float, float] = (0.9, 0.999), schedule: str = "plateau") -> RunResult:
    """Run ``iterations`` synthesis steps; losses are read back (one sync) only every ``log_every`` steps.

    ``schedule``: ``"plateau"`` (per-group ReduceLROnPlateau, CNNs) or ``"warmup_cosine"`` (PSAQ-ViT's two
    warm-up + cosine cycles over ``iterations``; ``patience``/``factor``/``min_lr`` are then unused).
    """
    opt = GroupOptimizer(objective, pixels, labels, lr=lr, patience=patience, factor=factor, min_lr=min_lr,
                         clamp=clamp, betas=betas, schedule=schedule, iterations=iterations)
    history: list[dict[str, float]] = []
    for it in range(1, iterations + 1):
        opt.step()
        if it % log_every == 0 or it == iterations or it == 1:
            entry = {"iteration": it, **opt.summary()}
            history.append(entry)
            if on_log is not None:
                on_log(it, entry)
    return RunResult(pixels=opt.best_pixels, nonfinite=opt.nonfinite.clone(), history=history)
