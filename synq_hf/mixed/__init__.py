"""Mixed precision under a budget ("make it fit in N MB"), chosen from synthetic images alone (issue 26).

Sensitivity per layer and bit-width (ZeroQ's KL), an exact allocation with its Pareto frontier, and the size
arithmetic of the packed folder. ``SynQQuantizer`` runs it when the config has ``size_budget``, ``avg_w_bits`` or
``avg_a_bits``; the chosen bits go into ``layer_w_bits``/``layer_a_bits`` and every later step uses them.
"""

from .allocation import Allocation, Frontier, allocate, pareto_frontier
from .plan import MixedPrecisionPlan, check_budget, needs_allocation, plan_mixed_precision
from .sensitivity import (
    SENSITIVITY_FILE,
    SensitivityTable,
    activation_sensitivity,
    placement_activations,
    weight_sensitivity,
)
from .size import SizeModel, measurement_config, stored_tensor_bytes

__all__ = [
    "SENSITIVITY_FILE",
    "Allocation",
    "Frontier",
    "MixedPrecisionPlan",
    "SensitivityTable",
    "SizeModel",
    "activation_sensitivity",
    "allocate",
    "check_budget",
    "measurement_config",
    "needs_allocation",
    "pareto_frontier",
    "placement_activations",
    "plan_mixed_precision",
    "stored_tensor_bytes",
    "weight_sensitivity",
]
