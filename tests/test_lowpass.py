"""The rfft-based Gaussian low-pass filter agrees with the centred fft2/fftshift definition."""

import pytest
import torch

from synq_hf import ConfigError, low_pass_filter
from synq_hf.lowpass import low_pass_filter_reference


@pytest.mark.parametrize("size", [(32, 32), (31, 33), (7, 8), (9, 9), (1, 5)])
@pytest.mark.parametrize("d0", [0.7, 4.0, 8.0, 80.0])
def test_matches_centred_definition(size, d0):
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    out = low_pass_filter(x, d0)
    assert out.shape == x.shape and out.dtype == x.dtype
    torch.testing.assert_close(out, low_pass_filter_reference(x, d0), atol=1e-5, rtol=0)


def test_filters_high_frequencies_and_keeps_constants():
    const = torch.full((1, 3, 16, 16), 0.7)
    torch.testing.assert_close(low_pass_filter(const, 2.0), const, atol=1e-6, rtol=0)
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None, :]).remainder(2).float().expand(1, 1, 16, 16)
    filtered = low_pass_filter(checker - 0.5, 2.0)  # the Nyquist pattern is damped to (almost) nothing
    assert filtered.abs().max() < 1e-3
    assert (low_pass_filter(checker - 0.5, 1000.0) - (checker - 0.5)).abs().max() < 1e-3


def test_zero_disables_and_bad_cutoffs_raise():
    x = torch.randn(1, 1, 4, 4)
    assert low_pass_filter(x, 0) is x
    with pytest.raises(ConfigError, match="d0"):
        low_pass_filter(x, -1.0)
    with pytest.raises(ConfigError, match=r"\(\.\.\., H, W\)"):
        low_pass_filter(torch.randn(4), 8.0)


def test_half_precision_input_keeps_dtype():
    x = torch.randn(1, 3, 8, 8).to(torch.bfloat16)
    assert low_pass_filter(x, 4.0).dtype == torch.bfloat16
