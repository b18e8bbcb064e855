"""Gaussian low-pass filter of image batches (SynQ idea I1), computed with a real FFT.

The reference definition is the centred one: ``fftshift(fft2(x))`` times ``G(u, v) = exp(-D^2 / (2 D0^2))``
with ``D`` the distance to the spectrum centre, then ``ifft2(ifftshift(.)).real``. ``G`` is real and symmetric
under ``(u, v) -> (-u, -v)``, so the same result comes from ``irfft2(rfft2(x) * G)`` with ``G`` sampled at the
signed frequencies of the un-shifted half spectrum: half the work, and no complex round trip to discard.
"""

from __future__ import annotations

import functools

import torch

from .errors import ConfigError


@functools.lru_cache(maxsize=32)
def _gaussian_rfft_mask(height: int, width: int, d0: float, device: str) -> torch.Tensor:
    """``G`` on the ``rfft2`` grid (``height x (width // 2 + 1)``), cached per size/cut-off/device."""
    fy = torch.fft.fftfreq(height, d=1.0 / height, dtype=torch.float64)  # signed integer frequencies
    fx = torch.fft.rfftfreq(width, d=1.0 / width, dtype=torch.float64)
    dist2 = fy[:, None].square() + fx[None, :].square()
    return torch.exp(-dist2 / (2 * d0 * d0)).to(device=device, dtype=torch.float32)


def low_pass_filter(images: torch.Tensor, d0: float) -> torch.Tensor:
    """Gaussian low-pass filter with cut-off ``d0`` (in frequency-index units) over the last two dimensions.

    ``images`` is ``(..., H, W)`` (e.g. ``(N, C, H, W)``, any H/W, odd included); the result has the same shape
    and dtype. ``d0 = 0`` returns the input unchanged (``SynQConfig.lpf_d0 = 0`` disables the filter).
    """
    if isinstance(d0, bool) or not isinstance(d0, (int, float)) or d0 != d0 or d0 < 0:
        raise ConfigError(f"low-pass cut-off d0={d0!r} is not allowed; it must be a number >= 0 (0 disables)")
    if images.dim() < 2:
        raise ConfigError(f"low_pass_filter needs images shaped (..., H, W), got shape {tuple(images.shape)}")
    if d0 == 0:
        return images
    h, w = images.shape[-2:]
    x = images.float() if images.dtype not in (torch.float32, torch.float64) else images
    mask = _gaussian_rfft_mask(h, w, float(d0), str(images.device)).to(x.dtype)
    out = torch.fft.irfft2(torch.fft.rfft2(x) * mask, s=(h, w))
    return out.to(images.dtype)


def low_pass_filter_reference(images: torch.Tensor, d0: float) -> torch.Tensor:
    """The centred ``fft2``/``fftshift`` definition (slower; kept to test :func:`low_pass_filter` against)."""
    h, w = images.shape[-2:]
    u = torch.arange(h, dtype=torch.float64) - h // 2
    v = torch.arange(w, dtype=torch.float64) - w // 2
    g = torch.exp(-(u[:, None].square() + v[None, :].square()) / (2 * d0 * d0)).to(images.device)
    spec = torch.fft.fftshift(torch.fft.fft2(images.double()), dim=(-2, -1)) * g
    return torch.fft.ifft2(torch.fft.ifftshift(spec, dim=(-2, -1))).real.to(images.dtype)
