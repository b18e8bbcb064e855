"""synq_hf: SynQ zero-shot quantization (ICLR 2025) for timm and transformers image classifiers.

Quickstart: ``synq-hf demo`` runs the whole method offline in about a minute. From Python::

    from synq_hf import SynQQuantizer

    q = SynQQuantizer.from_pretrained("timm/resnet18", w_bits=4, a_bits=4)   # any timm/transformers classifier
    q.synthesize(num_images=512, iterations=500)   # images made from the model alone: no real data
    q.quantize(max_steps=300)                      # calibrate on them, then SynQ fine-tuning
    q.evaluate("imagenet-val-folder")              # optional: top-1/top-5 on real labelled images
    q.save_pretrained("resnet18-synq-w4a4")        # model, config, results.json and a model card

The same from the shell: ``synq-hf quantize timm/resnet18 --w-bits 4 --a-bits 4 --out resnet18-synq-w4a4``
(``synq-hf quantize --help`` groups every option). ``SynQConfig`` holds every setting; the README explains them.

``import synq_hf`` is light (no torch, timm or transformers): the public names below load their module on
first use (PEP 562), and the timm models and the transformers ``quant_method="synq"`` are registered as
soon as those libraries are imported (:mod:`synq_hf.registration`).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from . import registration
from .errors import (
    AlreadyQuantizedError,
    CheckpointError,
    ConfigError,
    DataError,
    ModelLoadError,
    SynQError,
    UnsupportedModelError,
)
from .version import __version__

if TYPE_CHECKING:  # pragma: no cover - the names __getattr__ serves, for type checkers and IDEs
    from .apply import calibrate, ptq, quantize_model
    from .config import SynQConfig
    from .data import load_image_dataset
    from .evaluation import evaluate_model
    from .hub.checkpoint import load_quantized, save_quantized
    from .hub.loading import load_model
    from .lowpass import low_pass_filter
    from .quantizer import SynQQuantizer
    from .synthesis import synthesize
    from .training import SynQTrainer

_LAZY: dict[str, str] = {
    "SynQConfig": "config",
    "load_image_dataset": "data",
    "evaluate_model": "evaluation",
    "load_model": "hub.loading",
    "low_pass_filter": "lowpass",
    "calibrate": "apply",
    "ptq": "apply",
    "quantize_model": "apply",
    "SynQQuantizer": "quantizer",
    "load_quantized": "hub.checkpoint",
    "save_quantized": "hub.checkpoint",
    "synthesize": "synthesis",
    "SynQTrainer": "training",
}
"""Public name -> the submodule that defines it, imported on first access."""

registration.install()  # quant_method="synq" and the timm models, registered when those libraries load


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        if importlib.util.find_spec(f"{__name__}.{name}") is None:
            raise AttributeError(f"module 'synq_hf' has no attribute {name!r}")
        return importlib.import_module(f".{name}", __name__)  # a submodule, e.g. synq_hf.models
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AlreadyQuantizedError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "ModelLoadError",
    "SynQConfig",
    "SynQError",
    "SynQQuantizer",
    "SynQTrainer",
    "UnsupportedModelError",
    "calibrate",
    "evaluate_model",
    "load_image_dataset",
    "load_model",
    "low_pass_filter",
    "synthesize",
    "load_quantized",
    "ptq",
    "quantize_model",
    "save_quantized",
    "__version__",
]
