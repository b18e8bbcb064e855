"""Mixed precision under a budget: check it, measure the sensitivities, allocate the bits, record what was chosen.

:func:`check_budget` refuses, in one line and before any synthesis, a budget no allocation reaches (below the
model at its smallest candidate bits) or one at or above the float model's size. :func:`plan_mixed_precision`
measures the per-layer sensitivities on the synthetic images (:mod:`.sensitivity`), solves the allocation exactly
(:mod:`.allocation`) and returns a :class:`MixedPrecisionPlan`, whose :meth:`~MixedPrecisionPlan.apply` writes the
chosen bits into the config's ``layer_w_bits``/``layer_a_bits``: every later step (calibration, SynQ or block
reconstruction fine-tuning, saving, reloading, ONNX export) builds its quantizers from those.

Weights and activations are allocated separately: weights under ``size_budget`` (stored bytes, :mod:`.size`) or
``avg_w_bits`` (bits per weight), activations under ``avg_a_bits`` (bits per activation value, each quantizer
weighted by its elements per image); without ``avg_a_bits`` every activation keeps ``a_bits``. Layers fixed by
``first_layer_bits``/``last_layer_bits`` or listed in ``layer_w_bits``/``layer_a_bits`` keep their bits and count
toward the budget.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import SynQConfig, has_weight_budget, parse_size_budget
from ..errors import ConfigError
from .allocation import Frontier, pareto_frontier
from .sensitivity import (
    SENSITIVITY_FILE,
    SensitivityTable,
    activation_sensitivity,
    fingerprint,
    placement_activations,
    weight_sensitivity,
)
from .size import SizeModel

__all__ = ["MixedPrecisionPlan", "check_budget", "needs_allocation", "plan_mixed_precision"]

FRONTIER_POINTS = 48
"""Points of the weight frontier kept in the record (config.json, results.json, the card)."""


def needs_allocation(config: SynQConfig, layers: list[str] | None = None, activations: list[str] | None = None) -> bool:
    """Whether ``config`` has a budget whose per-layer bits are not all chosen yet (for the quantized ``layers`` and
    placement ``activations`` when given; else: whether none is)."""
    def missing(chosen: dict[str, int], names: list[str] | None) -> bool:
        return not chosen if names is None else bool(set(names) - set(chosen))

    return (has_weight_budget(config) and missing(config.layer_w_bits, layers)) or (
        config.avg_a_bits is not None and missing(config.layer_a_bits, activations))


def _fmt_bytes(n: float) -> str:
    return f"{int(n):,} bytes ({n / 1e6:.3g} MB)"


def weight_pins(model: nn.Module, config: SynQConfig, size: SizeModel) -> dict[str, int]:
    """Layers whose weight bits are fixed: ``layer_w_bits`` entries, then first/last-layer overrides."""
    from ..architectures import get_spec

    unknown = sorted(set(config.layer_w_bits) - set(size.numel))
    if unknown:
        raise ConfigError(f"layer_w_bits names {', '.join(unknown[:4])}, which {type(model).__name__} does not quantize")
    first, last = get_spec(model).first_last(model)
    pins = {n: b for n, b in ((first, config.first_layer_bits), (last, config.last_layer_bits))
            if n in size.numel and b is not None}
    return {**pins, **config.layer_w_bits}


def weight_budget_bytes(config: SynQConfig, size: SizeModel, pins: dict[str, int]) -> int:
    """``size_budget`` in bytes (``"w3"``: the stored size of the model with 3-bit weights, pins kept)."""
    kind, value = parse_size_budget(config.size_budget)
    if kind == "bytes":
        return int(math.floor(value))
    return size.total_bytes({n: pins.get(n, int(value)) for n in size.numel})


def check_budget(model: nn.Module, config: SynQConfig) -> SizeModel | None:
    """Refuse a budget that no allocation reaches or that is not below the float model, in one line (``ConfigError``).

    Returns the :class:`SizeModel` of ``model`` (None without a weight budget), reused by the allocation.
    """
    if not has_weight_budget(config):
        return None
    size = SizeModel.of(model, config)
    pins = weight_pins(model, config, size)
    smallest = min(config.w_bits_candidates)
    low = {n: pins.get(n, smallest) for n in size.numel}
    if config.size_budget is not None:
        budget = weight_budget_bytes(config, size, pins)
        reach = size.total_bytes(low)
        name = f"size_budget={config.size_budget!r} ({_fmt_bytes(budget)})"
        if budget < reach:
            raise ConfigError(
                f"{name} is below the smallest this model reaches with w_bits_candidates {config.w_bits_candidates}: "
                f"{_fmt_bytes(reach)} ({smallest}-bit weights plus {size.fixed_bytes:,} bytes of scales, biases and "
                "other float tensors)")
        if budget >= size.float_bytes:
            raise ConfigError(f"{name} is not below the float model's size, {_fmt_bytes(size.float_bytes)}: "
                              "nothing needs quantizing to fit it")
    else:
        reach = size.average_bits(low)
        if config.avg_w_bits < reach - 1e-9:
            raise ConfigError(f"avg_w_bits={config.avg_w_bits!r} is below the smallest average this model reaches "
                              f"({reach:.3f} bits: {smallest}-bit candidates, fixed layers {pins})")
    return size


@dataclass
class MixedPrecisionPlan:
    """The chosen bits and everything needed to report them (card, results.json, BENCHMARKS)."""

    layer_w_bits: dict[str, int]
    layer_a_bits: dict[str, int]
    budget: dict[str, Any]
    weight_bytes: int
    fixed_bytes: int
    float_bytes: int
    avg_w_bits: float
    avg_a_bits: float | None
    layers: list[dict[str, Any]]
    activations: list[dict[str, Any]]
    frontier: list[dict[str, Any]] = field(default_factory=list)
    num_images: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    weight_frontier: Frontier | None = None

    def apply(self, config: SynQConfig) -> SynQConfig:
        """``config`` with the chosen per-layer bits (what builds the quantizers from now on)."""
        return config.replace(layer_w_bits=dict(self.layer_w_bits) or config.layer_w_bits,
                              layer_a_bits=dict(self.layer_a_bits) or config.layer_a_bits)

    def to_record(self) -> dict[str, Any]:
        """JSON for config.json's run record, results.json and the model card."""
        return {
            "budget": self.budget, "weight_bytes": self.weight_bytes, "fixed_bytes": self.fixed_bytes,
            "float_bytes": self.float_bytes, "avg_w_bits": round(self.avg_w_bits, 4),
            "avg_a_bits": None if self.avg_a_bits is None else round(self.avg_a_bits, 4),
            "sensitivity": {"measure": "kl", "num_images": self.num_images,
                            "sum_kl": round(sum(r["kl"] for r in self.layers), 6)},
            "layers": self.layers, "activations": self.activations, "frontier": self.frontier,
            "seconds": round(self.seconds, 1), "cpu_seconds": round(self.cpu_seconds, 1),
        }

    def summary(self) -> str:
        """One line: the size reached against the budget, and the bits used."""
        budget = self.budget.get("bytes")
        against = f" (budget {budget:,})" if budget is not None else f" (budget {self.budget.get('avg_w_bits')} bits)"
        counts: dict[int, int] = {}
        for r in self.layers:
            counts[r["w_bits"]] = counts.get(r["w_bits"], 0) + 1
        mix = ", ".join(f"{n}x{b}-bit" for b, n in sorted(counts.items()))
        return (f"mixed precision: {self.weight_bytes:,} bytes{against}, {self.avg_w_bits:.2f} bits per weight "
                f"({mix})" + (f", {self.avg_a_bits:.2f} bits per activation" if self.avg_a_bits is not None else ""))


def plan_mixed_precision(
    model: nn.Module,
    config: SynQConfig,
    images: torch.Tensor,
    *,
    cache_dir: str | Path | None = None,
    device: Any = "cpu",
    progress: bool = True,
    size: SizeModel | None = None,
) -> MixedPrecisionPlan:
    """Measure sensitivities of the float ``model`` on ``images`` and allocate bits under ``config``'s budgets.

    ``images`` are normalized synthetic images (N, C, H, W); with ``cache_dir`` the sensitivity table is saved
    there (``sensitivity.json``) and reused on the next call.
    """
    start, cpu_start = time.perf_counter(), time.process_time()
    size = size or check_budget(model, config) or SizeModel.of(model, config)
    model = model.to(device).eval()
    images = images.float()
    path = Path(cache_dir) / SENSITIVITY_FILE if cache_dir is not None else None
    table = SensitivityTable(fingerprint(model, images, config), path)
    names = list(size.numel)

    # -- weights -----------------------------------------------------------------------------------
    pins = weight_pins(model, config, size)
    budget: dict[str, Any] = {}
    frontier_record: list[dict[str, Any]] = []
    frontier = None
    if has_weight_budget(config):
        candidates = {n: [pins[n]] if n in pins else list(config.w_bits_candidates) for n in names}
        kl = weight_sensitivity(model, config, images, candidates, table, device=device, progress=progress)
        if config.size_budget is not None:
            target = weight_budget_bytes(config, size, pins)
            costs = [[size.layer_bytes(n, b) for b in candidates[n]] for n in names]
            limit = target - size.fixed_bytes
            budget = {"size_budget": config.size_budget, "bytes": target}
        else:
            costs = [[size.numel[n] * b for b in candidates[n]] for n in names]
            limit = math.floor(config.avg_w_bits * sum(size.numel.values()) + 1e-6)
            budget = {"avg_w_bits": config.avg_w_bits}
        frontier = pareto_frontier(costs, [[kl[n][b] for b in candidates[n]] for n in names])
        best = frontier.best_within(limit)
        if best is None:  # check_budget refuses this first; kept for callers that pass their own size
            raise ConfigError(f"no allocation fits the budget {budget}")
        layer_w_bits = {n: candidates[n][j] for n, j in zip(names, best.choice)}
        frontier_record = _frontier_record(frontier, candidates, names, size)
    else:
        layer_w_bits = dict(config.layer_w_bits)
        kl = {}
    bits_of = {n: layer_w_bits.get(n) or pins.get(n) or int(config.w_bits) for n in names}
    layers = [{"name": n, "params": size.numel[n], "w_bits": bits_of[n], "bytes": size.layer_bytes(n, bits_of[n]),
               "kl": round(kl[n][bits_of[n]], 8) if n in kl else None} for n in names]

    layer_a_bits, activations, avg_a = _allocate_activations(model, config, images, table, device, progress)
    if config.avg_a_bits is not None:
        budget["avg_a_bits"] = config.avg_a_bits
    table.save()
    return MixedPrecisionPlan(
        layer_w_bits=layer_w_bits, layer_a_bits=layer_a_bits, budget=budget,
        weight_bytes=size.total_bytes(bits_of), fixed_bytes=size.fixed_bytes, float_bytes=size.float_bytes,
        avg_w_bits=size.average_bits(bits_of), avg_a_bits=avg_a, layers=layers, activations=activations,
        frontier=frontier_record, num_images=len(images), seconds=time.perf_counter() - start,
        cpu_seconds=time.process_time() - cpu_start, weight_frontier=frontier,
    )


def _allocate_activations(model: nn.Module, config: SynQConfig, images: torch.Tensor, table: SensitivityTable,
                          device: Any, progress: bool
                          ) -> tuple[dict[str, int], list[dict[str, Any]], float | None]:
    """Activation bits under ``avg_a_bits`` (nothing when unset): per-quantizer bits, their table rows, the average."""
    if config.avg_a_bits is None:
        return {}, [], None
    placed = placement_activations(model, config)
    unknown = sorted(set(config.layer_a_bits) - set(placed))
    if unknown:
        raise ConfigError(f"layer_a_bits names {', '.join(unknown[:4])}, which is not an activation quantizer of "
                          f"the placement")
    apins = {n: b for n, b in placed.items() if b != int(config.a_bits)} | dict(config.layer_a_bits)
    acands = {n: [apins[n]] if n in apins else list(config.a_bits_candidates) for n in placed}
    akl, elements = activation_sensitivity(model, config, images, acands, table, device=device, progress=progress)
    anames = list(placed)
    limit = math.floor(config.avg_a_bits * sum(elements.values()) + 1e-6)
    best = pareto_frontier([[elements[n] * b for b in acands[n]] for n in anames],
                           [[akl[n][b] for b in acands[n]] for n in anames]).best_within(limit)
    if best is None:
        raise ConfigError(f"avg_a_bits={config.avg_a_bits!r} is below the smallest average the activation "
                          f"quantizers reach with a_bits_candidates {config.a_bits_candidates} and their fixed bits")
    layer_a_bits = {n: acands[n][j] for n, j in zip(anames, best.choice)}
    avg_a = sum(elements[n] * layer_a_bits[n] for n in anames) / max(sum(elements.values()), 1)
    activations = [{"name": n, "elements": elements[n], "a_bits": layer_a_bits[n],
                    "kl": round(akl[n][layer_a_bits[n]], 8)} for n in anames]
    return layer_a_bits, activations, avg_a


def _frontier_record(frontier: Frontier, candidates: dict[str, list[int]], names: list[str],
                     size: SizeModel) -> list[dict[str, Any]]:
    """Up to ``FRONTIER_POINTS`` frontier points, evenly spread over its index, as (bytes, avg bits, summed KL)."""
    picks = sorted({int(round(i)) for i in np.linspace(0, len(frontier) - 1, min(FRONTIER_POINTS, len(frontier)))})
    out = []
    for i in picks:
        bits = {n: candidates[n][j] for n, j in zip(names, frontier.assignment(i))}
        out.append({"bytes": size.total_bytes(bits), "avg_w_bits": round(size.average_bits(bits), 4),
                    "sum_kl": round(float(frontier.values[i]), 6)})
    return out
