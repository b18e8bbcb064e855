"""What ``import synq_hf`` registers with timm and transformers, without importing either of them.

timm must know ``cifar_resnet*``, ``convmixer_cifar``, ``synq_digits_cnn`` and the quantized-folder guard, and
transformers must know ``quant_method="synq"``, before the user's first ``create_model`` / ``from_pretrained``.
Importing torch, timm and transformers takes seconds, so instead of importing them eagerly the registrations
run right after the library's own import finishes (an import hook on ``sys.meta_path``), or at once when the
library is already imported.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = ["install", "register_timm_models", "register_transformers"]


def register_timm_models() -> None:
    """Register synq_hf's timm architectures (CIFAR ResNets, ConvMixer, the digits CNN, the guard)."""
    importlib.import_module("synq_hf.models")
    importlib.import_module("synq_hf.demo.digits")


def register_transformers() -> None:
    """Register ``SynQConfig`` and the quantizer under ``quant_method="synq"`` with transformers."""
    importlib.import_module("synq_hf.integrations.transformers").register()


# module that must be imported -> registration to run right after it
_HOOKS: dict[str, Callable[[], None]] = {
    "timm": register_timm_models,
    "transformers.quantizers": register_transformers,
}


class _RunAfter(importlib.abc.Loader):
    """Wraps a module's loader: executes the module, then runs the registration."""

    def __init__(self, loader: importlib.abc.Loader, after: Callable[[], None]) -> None:
        self.loader, self.after = loader, after

    def create_module(self, spec: Any) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        self.after()


class _Finder(importlib.abc.MetaPathFinder):
    """Finds the hooked modules with the other finders and wraps their loader in :class:`_RunAfter`."""

    def __init__(self) -> None:
        self._busy = threading.local()

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        after = _HOOKS.get(fullname)
        if after is None or getattr(self._busy, "name", None) == fullname:
            return None
        self._busy.name = fullname
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            self._busy.name = None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _RunAfter(spec.loader, after)
        return spec


def install() -> None:
    """Run each registration now if its library is imported, else right after it is (idempotent)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
    for name, register in _HOOKS.items():
        if name in sys.modules:
            register()
