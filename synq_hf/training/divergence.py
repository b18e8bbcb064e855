"""Divergence detection for fine-tuning without a host sync per step (issue 24).

Reading a loss back every step (``.item()``, ``.tolist()``) stops the host until the GPU has finished the step, so
the next step's kernels cannot be queued meanwhile; at batch 16 that idle time is a large part of a step. The
monitor keeps its flags on the device: :meth:`DivergenceMonitor.update` records, with tensor ops only, the first
step whose loss was non-finite or whose KD term exploded; :meth:`DivergenceMonitor.first_divergence` reads them
back (one sync) and is called where the trainer syncs anyway: at each log, before each checkpoint, at the end.
"""

from __future__ import annotations

import math

import torch


class DivergenceMonitor:
    """The first step at which fine-tuning diverged, tracked on the device.

    Diverged: a non-finite loss, or a KD term above ``max(4·ln K·T², 10 × the first step's KD)`` (far worse than a
    uniform guess, whose KD is at most ln K·T², and than where fine-tuning or the resumed run started). The first
    step seen is the reference and is judged for finiteness only.
    """

    def __init__(self, num_classes: int, temperature: float) -> None:
        self.base_limit = 4.0 * math.log(max(num_classes, 2)) * temperature**2
        self.reset()

    def reset(self) -> None:
        """Forget everything (a new run, or a resumed one: its first step is the new reference)."""
        self._names: list[str] = []
        self._kd_start: torch.Tensor | None = None
        # first bad step, whether it was non-finite, its KD, the limit then, then one flag per part
        self._record: torch.Tensor | None = None

    def update(self, step: int, loss: torch.Tensor, parts: dict[str, torch.Tensor]) -> None:
        """Record step ``step`` (1-based) from its loss and its parts (``parts["kd"]`` is the KD term); no sync."""
        with torch.no_grad():
            loss = loss.detach().float()
            kd = parts["kd"].detach().float()
            nonfinite = ~torch.isfinite(loss)
            # (tensors made with full/full_like: a tensor built from host data is a blocking copy, i.e. a sync)
            if self._kd_start is None:
                self._names = list(parts)
                self._kd_start = torch.where(nonfinite, torch.full_like(kd, math.nan), kd)
                limit = torch.full_like(kd, math.inf)
            else:
                limit = torch.clamp_min(self._kd_start * 10.0, self.base_limit)  # NaN start: no KD judgement
            exploded = kd > limit
            terms = torch.stack([~torch.isfinite(v.detach().float()).all() for v in parts.values()]).float()
            now = torch.cat([torch.full((1,), float(step), device=kd.device), nonfinite.float().view(1), kd.view(1),
                             limit.view(1), terms])
            bad = nonfinite | exploded
            if self._record is None:
                self._record = torch.where(bad, now, torch.full_like(now, -1.0))
            else:
                fresh = bad & (self._record[0] < 0)
                self._record = torch.where(fresh, now, self._record)

    def first_divergence(self) -> tuple[int, str] | None:
        """``(step, what happened)`` of the first diverged step so far, or None (reads the flags back: one sync)."""
        if self._record is None:
            return None
        values = self._record.tolist()
        if values[0] < 0:
            return None
        step = int(values[0])
        if values[1] > 0:
            names = [n for n, flag in zip(self._names, values[4:]) if flag > 0] or ["total"]
            return step, (f"the loss is not finite at step {step} "
                          f"(term{'s' if len(names) > 1 else ''}: {', '.join(names)})")
        return step, f"the KD term exploded at step {step} ({values[2]:.3g} > {values[3]:.3g})"
