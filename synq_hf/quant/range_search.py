"""Clip-range search: the quantization range that minimizes the Lp error of quantize-dequantize.

Min-max ranges waste most of a low-bit grid on rare outliers; shrinking the range trades a little clipping
error for a much finer grid (LAPQ, Nahshan et al. 2021; OMSE, Choukroun et al. 2019). Activations are
searched per tensor from a histogram gathered during calibration (cost independent of the grid size),
weights per output channel directly on their values.
"""

from __future__ import annotations

import torch

from ..config import RANGE_SEARCH_P
from .fake_quant import minmax_qparams, qrange

HIST_BINS = 8192
"""Histogram resolution of activation searches: finer than a 3-bit step at the smallest ratio searched."""

_GRID = torch.linspace(0.1, 1.0, 91)
"""Shrink ratios of the range searched (1.0 is min-max)."""


def _quant_error(values: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool,
                 p: float) -> torch.Tensor:
    """``|dequant(quant(v)) - v|^p`` elementwise for ranges ``[lo, hi]`` broadcast against ``values``."""
    scale, zp = minmax_qparams(lo, hi, bits, symmetric)
    qmin, qmax = qrange(bits, symmetric)
    q = (torch.clamp(torch.round(values / scale) + zp, qmin, qmax) - zp) * scale
    return (q - values).abs().pow(p)


@torch.no_grad()
def search_hist_range(hist: torch.Tensor, lo: float, hi: float, bits: int, symmetric: bool,
                      p: float = RANGE_SEARCH_P) -> tuple[float, float]:
    """Best ``(lo', hi') = ratio · (lo, hi)`` for values summarized by ``hist`` (equal bins over ``[lo, hi]``)."""
    if hi <= lo or hist.sum() <= 0:
        return lo, hi
    hist = hist.double()
    width = (hi - lo) / hist.numel()
    centres = lo + width * (torch.arange(hist.numel(), dtype=torch.float64) + 0.5)
    grid = _GRID.double().view(-1, 1)
    lo_t = torch.full_like(grid, min(lo, 0.0)) * grid
    hi_t = torch.full_like(grid, max(hi, 0.0)) * grid
    err = (_quant_error(centres.view(1, -1), lo_t, hi_t, bits, symmetric, p) * hist.view(1, -1)).sum(dim=1)
    best = float(_GRID[int(torch.argmin(err))])
    return min(lo, 0.0) * best, max(hi, 0.0) * best


@torch.no_grad()
def search_weight_clip(weight: torch.Tensor, bits: int, symmetric: bool, per_channel: bool,
                       p: float = RANGE_SEARCH_P) -> torch.Tensor:
    """Per-output-channel (or per-tensor) shrink ratio of the min-max range minimizing the weight's Lp error."""
    w = weight.detach().float()
    flat = w.reshape(w.shape[0], -1) if per_channel else w.reshape(1, -1)
    lo, hi = flat.amin(dim=1, keepdim=True), flat.amax(dim=1, keepdim=True)
    best_err = torch.full((flat.shape[0],), float("inf"), device=w.device)
    best = torch.ones(flat.shape[0], device=w.device)
    for ratio in _GRID.tolist():  # a loop keeps memory at one weight-sized temporary, whatever the model
        err = _quant_error(flat, lo * ratio, hi * ratio, bits, symmetric, p).sum(dim=1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, torch.full_like(best, ratio), best)
    return best if per_channel else best.reshape(())
