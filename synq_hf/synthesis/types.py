"""What synthesis returns and raises: shared by ``api`` (which makes them) and ``dataset`` (which saves them)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config import SynQConfig
from ..errors import SynQError


class SynthesisDivergedError(SynQError):
    """A group of synthetic images kept producing NaN/Inf losses after every restart."""


@dataclass
class SyntheticImages:
    """Synthetic pixels ``(N, C, H, W)`` in the teacher's normalized space, their labels and how they were made."""

    pixels: torch.Tensor
    labels: torch.Tensor
    family: str
    config: SynQConfig
    seed: int
    restarts: int = 0
    calibration_centres: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
