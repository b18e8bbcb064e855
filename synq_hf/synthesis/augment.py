"""Vectorized per-sample augmentations for synthesis: one affine grid or one mask for the whole batch."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_resized_crop_flip(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    scale: tuple[float, float] = (0.4, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """Random-resized-crop (area ``scale``, aspect ``ratio``) + horizontal flip, own parameters per image.

    All crops are sampled at once and applied with a single ``affine_grid``/``grid_sample`` (bilinear), so the
    cost does not grow with a Python loop over images; the output keeps the input size and is differentiable.
    """
    n = x.shape[0]
    dev = x.device
    area = torch.empty(n, device=dev).uniform_(scale[0], scale[1], generator=generator)
    log_r = torch.empty(n, device=dev).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    r = log_r.exp()
    w = (area * r).sqrt().clamp(max=1.0)
    h = (area / r).sqrt().clamp(max=1.0)
    cx = (torch.rand(n, device=dev, generator=generator) * 2 - 1) * (1 - w)
    cy = (torch.rand(n, device=dev, generator=generator) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(n, device=dev, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=dev, dtype=x.dtype)
    theta[:, 0, 0] = w * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def roll_jitter_flip(
    x: torch.Tensor, shift: tuple[int, int], generator: torch.Generator | None = None, groups: int | None = None
) -> torch.Tensor:
    """Roll the batch by ``shift`` pixels (DeepInversion/PSAQ-ViT jitter) and flip a random half of it.

    ``shift`` is drawn on the host by the caller (no device sync); the flips are one mask over the batch, drawn
    per image, or per group of consecutive images with ``groups`` (PSAQ-ViT flips its whole batch or none of it).
    """
    if shift != (0, 0):
        x = torch.roll(x, shifts=shift, dims=(-2, -1))
    n = x.shape[0] if groups is None else groups
    mask = torch.rand(n, device=x.device, generator=generator) < 0.5
    if groups is not None:
        mask = mask.repeat_interleave(x.shape[0] // groups)
    return torch.where(mask.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)
