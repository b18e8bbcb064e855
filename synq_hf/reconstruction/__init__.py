"""Zero-shot post-training quantization by block reconstruction (Genie/BRECQ/QDrop/AdaRound setting).

:func:`reconstruct_model` quantizes a float classifier on synthetic images: calibrate (range search), then
reconstruct each unit (stem, the registry's blocks, head) against the float network with AdaRound soft rounding,
learned per-channel weight step sizes, LSQ activation ranges and QDrop; at the end the rounding is hard and the
model is an ordinary fake-quant model of this library. It runs on one process.
"""

from .api import reconstruct_model
from .engine import ReconstructionReport, reconstruct
from .rounding import AdaRoundQuantizer, RoundingSchedule, rectified_sigmoid, rounding_regularizer
from .units import Unit, reconstruction_units

__all__ = [
    "AdaRoundQuantizer",
    "ReconstructionReport",
    "RoundingSchedule",
    "Unit",
    "reconstruct",
    "reconstruct_model",
    "reconstruction_units",
    "rectified_sigmoid",
    "rounding_regularizer",
]
