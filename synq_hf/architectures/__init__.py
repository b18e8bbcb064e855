"""The architecture registry: one ``ArchSpec`` per family, one file per family; every module asks here.

``find_spec(model)`` returns the first spec whose ``matches`` accepts the model, in registration
order (specific families before the generic BatchNorm CNN); ``get_spec`` raises a one-line
``UnsupportedModelError`` naming the supported families instead of returning None. Adding an
architecture means one file here plus one row in ``tests/architectures/test_architectures.py``.
"""

from __future__ import annotations

from torch import nn

from ..errors import UnsupportedModelError
from .spec import COMMON_RULES, ArchSpec, CamTarget, Family

__all__ = [
    "COMMON_RULES",
    "SPECS",
    "ArchSpec",
    "CamTarget",
    "Family",
    "find_spec",
    "get_spec",
    "register_spec",
    "supported_families",
]

SPECS: list[ArchSpec] = []
_loaded = False


def register_spec(spec: ArchSpec, *, first: bool = False) -> ArchSpec:
    """Add a spec, tried after the registered ones (``first=True``: before them, e.g. to claim a model
    the generic BatchNorm CNN spec would otherwise take)."""
    _load_builtin()
    if any(s.name == spec.name for s in SPECS):
        raise ValueError(f"architecture spec {spec.name!r} is already registered")
    SPECS.insert(0, spec) if first else SPECS.append(spec)
    return spec


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    # Import order is match order: transformer families, the authors' ReLU ResNets, then generic CNNs.
    from . import bn_cnn, hf_swin, hf_vit, norm_cnn, relu_resnet, timm_swin, timm_vit

    for module in (hf_vit, hf_swin, timm_vit, timm_swin, relu_resnet, bn_cnn, norm_cnn):
        SPECS.append(module.SPEC)


def find_spec(model: nn.Module) -> ArchSpec | None:
    """The first registered spec that recognises ``model``, or None."""
    _load_builtin()
    return next((s for s in SPECS if s.matches(model)), None)


def supported_families() -> str:
    """One line naming every supported family (for error messages)."""
    _load_builtin()
    return "; ".join(f"{s.name} ({s.description})" for s in SPECS)


def get_spec(model: nn.Module) -> ArchSpec:
    """The spec of ``model``; a one-line ``UnsupportedModelError`` naming the supported families otherwise."""
    spec = find_spec(model)
    if spec is None:
        raise UnsupportedModelError(
            f"{type(model).__name__} is not a supported architecture; supported are: {supported_families()}"
        )
    return spec
