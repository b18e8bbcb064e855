"""The one place a run's config is resolved and its teacher's architecture spec matched.

A run (``SynQQuantizer``, or a public entry point called directly: ``synthesize``, ``finetune``,
``SynQTrainer``) calls :func:`resolve_config` once, with the teacher's family and input size, and
:func:`match_spec` once for the teacher; it hands the resolved config and the ``ArchSpec`` down. Lower layers
take them as they are: :func:`resolve_config` returns an already-resolved config unchanged (it never resolves
twice) and :func:`match_spec` returns a given spec without walking the registry again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from .config import SynQConfig
from .errors import SynQError

if TYPE_CHECKING:
    from .architectures import ArchSpec

__all__ = ["match_spec", "require_resolved", "resolve_config"]


def resolve_config(config: SynQConfig | None, *, family: str, input_size: int) -> SynQConfig:
    """``config`` (default ``SynQConfig()``) with its family-dependent defaults filled in for this teacher.

    A config that is already resolved (:meth:`SynQConfig.is_resolved`) is returned as it is, so a resolved config
    passed down the pipeline is never resolved again.
    """
    config = config if config is not None else SynQConfig()
    if config.is_resolved():
        return config
    return config.resolve(family=family, input_size=input_size)


def require_resolved(config: SynQConfig, what: str) -> None:
    """A one-line ``SynQError`` when a lower layer (``what``) is handed an unresolved config."""
    if not config.is_resolved():
        raise SynQError(f"{what} needs a resolved config: call synq_hf.pipeline.resolve_config(config, "
                        "family=..., input_size=...) (or config.resolve(...))")


def match_spec(model: nn.Module, spec: ArchSpec | None = None) -> ArchSpec:
    """``spec`` when the caller already matched it, else the registry's spec of ``model`` (``get_spec``)."""
    if spec is not None:
        return spec
    from .architectures import get_spec

    return get_spec(model)
