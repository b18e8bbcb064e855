"""synq_hf: SynQ zero-shot quantization (ICLR 2025) for timm and transformers image classifiers."""

from .config import SynQConfig
from .errors import CheckpointError, ConfigError, DataError, ModelLoadError, SynQError, UnsupportedModelError
from .version import __version__

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "ModelLoadError",
    "SynQConfig",
    "SynQError",
    "UnsupportedModelError",
    "__version__",
]
