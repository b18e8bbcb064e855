"""The one place a run's config is resolved and its teacher's architecture spec matched.

A run (``SynQQuantizer``, or a public entry point called directly: ``synthesize``, ``finetune``,
``SynQTrainer``) calls :func:`resolve_config` once, with the teacher's family and input size, and
:func:`match_spec` once for the teacher; it hands the resolved config and the ``ArchSpec`` down. Lower layers
take them as they are: :func:`resolve_config` returns an already-resolved config unchanged (it never resolves
twice) and :func:`match_spec` returns a given spec without walking the registry again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from torch import nn

from .config import SynQConfig
from .errors import SynQError

if TYPE_CHECKING:
    from .architectures import ArchSpec

__all__ = ["Family", "Library", "LoadedModel", "match_spec", "require_resolved", "resolve_config"]

Library = Literal["timm", "transformers"]
Family = Literal["cnn", "vit", "swin"]


@dataclass
class LoadedModel:
    """A loaded (float or quantized) image classifier and its metadata.

    ``data_config`` holds the preprocessing the model expects: ``mean``, ``std`` (tuples of 3 floats),
    ``input_size`` (C, H, W), ``interpolation`` (``"bilinear"``/``"bicubic"``...) and ``crop_pct``.
    Synthetic images live in the space normalized by ``mean``/``std``. ``spec`` is the architecture spec
    matched when the model was loaded (``None`` when built by hand: the pipeline then matches it once).
    """

    model: nn.Module
    model_id: str
    library: Library
    family: Family
    data_config: dict[str, Any]
    num_classes: int
    class_names: list[str] | None = None
    synq_config: SynQConfig | None = None
    base_model: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    spec: ArchSpec | None = field(default=None, repr=False, compare=False)

    @property
    def input_size(self) -> int:
        """Image side in pixels (the height of ``data_config['input_size']``)."""
        return int(self.data_config["input_size"][-2])

    @property
    def is_quantized(self) -> bool:
        return self.synq_config is not None


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
