"""Batching synthetic ``datasets.Dataset``s for fine-tuning: validation, the low-pass filter, augmentation.

Random augmentation and the per-batch filter run on the device inside the training step
(:class:`BatchTransform`), not in the collator: the collator runs while the Trainer prefetches batches
and before it restores the RNG on resume, so randomness there would break bit-exact resumption. The
transform draws from its own generator seeded by ``(seed, step, rank)`` instead of the global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError

PIXELS, LABEL = "pixel_values", "label"


def _low_pass(x: torch.Tensor, d0: float) -> torch.Tensor:
    from ..lowpass import low_pass_filter

    return low_pass_filter(x, d0)


def dataset_num_classes(dataset: Any) -> int | None:
    """Class count from a ``ClassLabel`` feature, or None when the label column is plain integers."""
    feature = getattr(dataset, "features", {}).get(LABEL)
    return getattr(feature, "num_classes", None)


def validate_synthetic_dataset(
    dataset: Any, *, num_classes: int, image_shape: Sequence[int] | None = None
) -> None:
    """Raise ``DataError`` unless ``dataset`` has ``pixel_values`` of ``image_shape`` and labels < ``num_classes``."""
    columns = getattr(dataset, "column_names", None)
    if columns is None or PIXELS not in columns or LABEL not in columns:
        raise DataError(
            f"the synthetic dataset needs columns {PIXELS!r} (normalized C×H×W floats) and {LABEL!r}; "
            f"it has {columns}"
        )
    if len(dataset) == 0:
        raise DataError("the synthetic dataset is empty")
    declared = dataset_num_classes(dataset)
    if declared is not None and declared != num_classes:
        raise DataError(
            f"the synthetic dataset has {declared} classes but the teacher predicts {num_classes}: "
            "synthesize it from this teacher"
        )
    labels = np.asarray(dataset.with_format("numpy")[LABEL])
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"column {LABEL!r} must hold one integer class index per image")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(
            f"labels of the synthetic dataset span [{labels.min()}, {labels.max()}] but the teacher has "
            f"{num_classes} classes"
        )
    first = np.asarray(dataset.with_format("numpy")[0][PIXELS])
    if first.ndim != 3:
        raise DataError(f"{PIXELS!r} must be C×H×W per image, got shape {tuple(first.shape)}")
    if image_shape is not None and tuple(first.shape) != tuple(image_shape):
        raise DataError(
            f"synthetic images are {tuple(first.shape)} (C, H, W) but the teacher expects {tuple(image_shape)}: "
            "synthesize them from this teacher"
        )


def low_pass_dataset(dataset: Any, d0: float, batch_size: int = 256) -> Any:
    """Low-pass filter every image of ``dataset`` once (``lpf_mode='once'``, the paper); ``d0 <= 0`` is a no-op."""
    if not d0 or d0 <= 0:
        return dataset

    def _filter(batch: dict[str, Any]) -> dict[str, Any]:
        x = torch.as_tensor(np.asarray(batch[PIXELS], dtype=np.float32))
        return {PIXELS: _low_pass(x, d0).numpy()}

    fingerprint = getattr(dataset, "_fingerprint", None)
    return dataset.with_format("numpy").map(
        _filter,
        batched=True,
        batch_size=batch_size,
        new_fingerprint=f"{fingerprint}-synq-lpf-{d0:g}" if fingerprint else None,
        desc=f"low-pass filter (D0={d0:g})",
    ).with_format(None)


def calibration_images(dataset: Any, config: Any) -> torch.Tensor:
    """The images PTQ and SynQ both calibrate activation ranges on: the first ``calibration_num_images`` of the
    synthetic ``dataset``, low-pass filtered with ``lpf_d0`` when the resolved ``calibrate_filtered`` says so
    (CNNs), raw otherwise (ViTs), whatever ``lpf_mode`` is.

    One function for ``SynQQuantizer.ptq()``, ``SynQTrainer`` and the benchmarks, so a "PTQ vs SynQ" comparison
    never compares two calibration sets. ``config`` is a resolved ``SynQConfig``.
    """
    if config.calibrate_filtered is None or config.lpf_d0 is None:
        raise DataError("calibration_images needs a resolved config (SynQConfig.resolve(family=..., input_size=...))")
    n = min(config.calibration_num_images, len(dataset))
    subset = dataset.select(range(n)) if n < len(dataset) else dataset
    if config.calibrate_filtered:
        subset = low_pass_dataset(subset, config.lpf_d0)
    return torch.as_tensor(np.asarray(subset.with_format("numpy")[PIXELS], dtype=np.float32))


class SyntheticCollator:
    """Stack dataset rows into ``{"pixel_values": float32 (B,C,H,W), "labels": int64 (B,)}``."""

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise DataError("empty batch")
        try:
            pixels = torch.stack([torch.as_tensor(np.asarray(f[PIXELS], dtype=np.float32)) for f in features])
            labels = torch.as_tensor([int(f[LABEL]) for f in features], dtype=torch.long)
        except KeyError as e:
            raise DataError(f"synthetic dataset rows need {PIXELS!r} and {LABEL!r}; missing {e}") from None
        return {"pixel_values": pixels, "labels": labels}


def random_shift_flip(x: torch.Tensor, generator: torch.Generator, max_shift: float = 0.125) -> torch.Tensor:
    """Per-image random translation (up to ``max_shift`` of the side, reflect padding) and horizontal flip.

    One ``affine_grid``/``grid_sample`` for the whole batch; integer pixel shifts, so pixels are copied
    exactly (the CIFAR "pad 4 + random crop + flip" augmentation, without a Python loop).
    """
    n, _, h, w = x.shape
    dev = x.device
    sx = torch.randint(-math.floor(w * max_shift), math.floor(w * max_shift) + 1, (n,), device=dev, generator=generator)
    sy = torch.randint(-math.floor(h * max_shift), math.floor(h * max_shift) + 1, (n,), device=dev, generator=generator)
    flip = torch.where(torch.rand(n, device=dev, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=dev, dtype=x.dtype)
    theta[:, 0, 0] = flip
    theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = sx.to(x.dtype) * (2.0 / w)
    theta[:, 1, 2] = sy.to(x.dtype) * (2.0 / h)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="reflection", align_corners=False)


class BatchTransform:
    """On-device augmentation (optional) then the per-batch low-pass filter (``lpf_mode='per_batch'``).

    ``augment``: ``"shift_flip"`` (random translation up to 1/8 of the side + flip, the CIFAR recipe),
    ``"crop_flip"`` (random-resized-crop, area 0.5-1, + flip: the authors' fine-tuning augmentation) or
    ``"none"``; ``True`` picks shift + flip under 64 px and crop + flip otherwise. Randomness comes from a
    generator seeded by ``(seed, step, rank)``: reproducible and independent of the global RNG, so a
    resumed run draws exactly what an uninterrupted one would.
    """

    def __init__(self, *, augment: bool | str = False, lpf_d0: float | None = None, seed: int = 0) -> None:
        if augment not in (True, False, "none", "shift_flip", "crop_flip"):
            raise DataError(f"augment={augment!r} is not allowed; choose one of ['none', 'shift_flip', 'crop_flip']")
        self.augment = None if augment in (False, "none") else augment
        self.lpf_d0, self.seed = lpf_d0, seed

    @property
    def active(self) -> bool:
        return self.augment is not None or bool(self.lpf_d0 and self.lpf_d0 > 0)

    def __call__(self, x: torch.Tensor, *, step: int, rank: int = 0) -> torch.Tensor:
        if self.augment is not None:
            seed = int(np.random.SeedSequence([self.seed, step, rank]).generate_state(1, np.uint64)[0] >> 1)
            gen = torch.Generator(device=x.device).manual_seed(seed)
            kind = self.augment if self.augment is not True else ("shift_flip" if x.shape[-1] < 64 else "crop_flip")
            if kind == "shift_flip":
                x = random_shift_flip(x, gen)
            else:
                from ..synthesis.augment import random_resized_crop_flip

                x = random_resized_crop_flip(x, gen, scale=(0.5, 1.0))
        if self.lpf_d0 and self.lpf_d0 > 0:
            x = _low_pass(x, self.lpf_d0)
        return x
