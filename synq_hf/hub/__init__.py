"""Models in and out of the Hub: ``loading`` (any model id -> a float model with its preprocessing),
``checkpoint`` (packed quantized folders: save, load), ``card`` (the model card and its record), ``outputs``
(atomic writes, public names), ``push`` (one Hub commit).

``load_model`` and ``LoadedModel`` resolve lazily (PEP 562), so importing a low module such as
``synq_hf.hub.outputs`` does not load the model libraries.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .loading import LoadedModel, load_model

__all__ = ["LoadedModel", "load_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(".loading", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
