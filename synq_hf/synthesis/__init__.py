"""Synthetic calibration/fine-tuning data from the teacher alone (SynQ step 1): CNN BN statistics, ViT PSAQ."""

from .api import SUPPORTED, generate_synthetic, synthesis_family, synthesize
from .dataset import push_synthetic_dataset, synthesis_metadata, synthetic_dataset_card, to_dataset
from .types import SynthesisDivergedError, SyntheticImages

__all__ = [
    "SUPPORTED",
    "SynthesisDivergedError",
    "SyntheticImages",
    "generate_synthetic",
    "push_synthetic_dataset",
    "synthesis_family",
    "synthesis_metadata",
    "synthesize",
    "synthetic_dataset_card",
    "to_dataset",
]
