"""Exact bit allocation: the multiple-choice knapsack "one bit-width per layer, minimal summed sensitivity under a
size budget", solved for every budget at once as a Pareto frontier.

A dynamic program over layers keeps, after each layer, only the non-dominated partial assignments (no other one is
both cheaper or equal and less or equally sensitive). Costs are integers (bytes or bits), so the frontier holds at
most one point per distinct cost, and each point's assignment is recovered by walking its parents back. The last
frontier is the exact Pareto frontier of the whole problem: the optimum under budget B is its last point with cost
<= B (no approximation, no greedy step; ``tests/mixed/test_mixed_precision.py`` checks it against brute force).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

__all__ = ["Allocation", "Frontier", "allocate", "pareto_frontier"]


@dataclass
class Allocation:
    """One optimal assignment: the chosen option index per layer, its total cost and summed value."""

    choice: list[int]
    cost: int
    value: float


@dataclass
class Frontier:
    """The exact Pareto frontier of a multiple-choice knapsack: ``costs`` ascending, ``values`` strictly descending.

    ``_stages`` keeps, per layer, (option index, parent index) of each frontier point of that stage.
    """

    costs: np.ndarray
    values: np.ndarray
    _stages: list[tuple[np.ndarray, np.ndarray]]

    def __len__(self) -> int:
        return len(self.costs)

    def assignment(self, index: int) -> list[int]:
        """The option index per layer of frontier point ``index``."""
        choice = [0] * len(self._stages)
        for layer in range(len(self._stages) - 1, -1, -1):
            options, parents = self._stages[layer]
            choice[layer] = int(options[index])
            index = int(parents[index])
        return choice

    def best_within(self, budget: float) -> Allocation | None:
        """The least-value assignment whose cost is <= ``budget`` (None if even the cheapest exceeds it)."""
        index = int(np.searchsorted(self.costs, budget, side="right")) - 1
        if index < 0:
            return None
        return Allocation(self.assignment(index), int(self.costs[index]), float(self.values[index]))


def pareto_frontier(costs: Sequence[Sequence[int]], values: Sequence[Sequence[float]]) -> Frontier:
    """The exact Pareto frontier of choosing one option per layer (``costs[l][j]``, ``values[l][j]`` of option j).

    Costs must be non-negative integers; values any finite numbers (summed).
    """
    if len(costs) != len(values) or not costs:
        raise ConfigError("pareto_frontier needs one list of options per layer (costs and values alike)")
    frontier_cost = np.zeros(1, dtype=np.int64)
    frontier_value = np.zeros(1, dtype=np.float64)
    stages: list[tuple[np.ndarray, np.ndarray]] = []
    for layer, (c, v) in enumerate(zip(costs, values)):
        c = np.asarray(c, dtype=np.int64)
        v = np.asarray(v, dtype=np.float64)
        if c.ndim != 1 or c.shape != v.shape or len(c) == 0:
            raise ConfigError(f"layer {layer}: needs as many costs as values (at least one option)")
        if (c < 0).any() or not np.isfinite(v).all():
            raise ConfigError(f"layer {layer}: costs must be >= 0 and values finite")
        n = len(frontier_cost)
        all_cost = (frontier_cost[None, :] + c[:, None]).reshape(-1)
        all_value = (frontier_value[None, :] + v[:, None]).reshape(-1)
        option = np.repeat(np.arange(len(c)), n)
        parent = np.tile(np.arange(n), len(c))
        order = np.lexsort((all_value, all_cost))  # by cost, then value
        all_cost, all_value, option, parent = all_cost[order], all_value[order], option[order], parent[order]
        # keep a point only if it is strictly better than every cheaper-or-equal point before it
        best_before = np.minimum.accumulate(np.concatenate([[np.inf], all_value[:-1]]))
        keep = all_value < best_before
        frontier_cost, frontier_value = all_cost[keep], all_value[keep]
        stages.append((option[keep], parent[keep]))
    return Frontier(frontier_cost, frontier_value, stages)


def allocate(costs: Sequence[Sequence[int]], values: Sequence[Sequence[float]], budget: float) -> Allocation | None:
    """The minimal summed value over assignments of total cost <= ``budget`` (None when none fits)."""
    return pareto_frontier(costs, values).best_within(budget)
