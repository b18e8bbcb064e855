"""Placement registry: for each supported architecture, where quantizers go.

A ``Placement`` says whether it handles a model (``matches``), names its first layer and
classifier (``first_last``) and inserts quantizers in place (``apply``). ``quantize_model`` takes
the first matching placement in registration order, so specific placements (ViTs) are registered
before the generic CNN one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..policy import LayerPolicy


@dataclass(frozen=True)
class Placement:
    name: str
    family: str  # "cnn" | "vit" | "swin": selects family-dependent defaults (symmetric weights for ViTs)
    matches: Callable[[nn.Module], bool]
    first_last: Callable[[nn.Module], tuple[str | None, str | None]]
    apply: Callable[[nn.Module, LayerPolicy], None]


PLACEMENTS: list[Placement] = []


def register_placement(placement: Placement) -> Placement:
    """Add a placement; later registrations are tried after earlier ones."""
    if any(p.name == placement.name for p in PLACEMENTS):
        raise ValueError(f"placement {placement.name!r} is already registered")
    PLACEMENTS.append(placement)
    return placement


def find_placement(model: nn.Module) -> Placement | None:
    """The first registered placement that handles ``model``, or None."""
    _load_builtin()
    return next((p for p in PLACEMENTS if p.matches(model)), None)


def _load_builtin() -> None:
    # Import order is registration order: transformer placements before the generic CNN one.
    from . import hf_vit, timm_vit  # noqa: F401  (hf_vit imports transformers only for its models)

    # isort: split
    from . import cnn  # noqa: F401
