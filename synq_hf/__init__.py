"""synq_hf: SynQ zero-shot quantization (ICLR 2025) for timm and transformers image classifiers."""

from . import demo, models  # noqa: F401  registers cifar_resnet* and synq_digits_cnn with timm
from .config import SynQConfig
from .data import load_image_dataset
from .errors import CheckpointError, ConfigError, DataError, ModelLoadError, SynQError, UnsupportedModelError
from .evaluation import evaluate_model
from .hub import load_model
from .integrations.transformers import register as _register_transformers
from .lowpass import low_pass_filter
from .quant import calibrate, ptq, quantize_model
from .quantizer import SynQQuantizer
from .serialization import load_quantized, save_quantized
from .synthesis import synthesize
from .training import SynQTrainer
from .version import __version__

_register_transformers()  # quant_method="synq" must be known before any from_pretrained

__all__ = [
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
