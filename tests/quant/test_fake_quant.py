"""Functional fake quantization: ranges, min-max qparams, weight grids, STE variants vs a python reference."""

from __future__ import annotations

import math

import pytest
import torch

from synq_hf.quant.fake_quant import (
    fake_quantize_tensor,
    fake_quantize_weight,
    minmax_qparams,
    qrange,
    weight_qparams,
)

EPS = torch.finfo(torch.float32).eps


def ref_fake_quant(values: list[float], scale: float, zero_point: int, qmin: int, qmax: int) -> list[float]:
    """Plain-python quantize-dequantize: round half to even (python's ``round``), clamp, rescale."""
    out = []
    for v in values:
        q = round(v / scale) + zero_point  # python rounds ties to the even integer
        q = min(max(q, qmin), qmax)
        out.append((q - zero_point) * scale)
    return out


@pytest.mark.parametrize(
    ("bits", "symmetric", "expected"),
    [(2, False, (0, 3)), (4, False, (0, 15)), (8, False, (0, 255)), (2, True, (-2, 1)), (4, True, (-8, 7)),
     (8, True, (-128, 127))],
)
def test_qrange(bits: int, symmetric: bool, expected: tuple[int, int]) -> None:
    assert qrange(bits, symmetric) == expected


@pytest.mark.parametrize(
    ("lo", "hi", "bits", "symmetric", "scale", "zp"),
    [
        (-1.0, 3.0, 8, False, 4.0 / 255, 64),  # zp = -round(-1 / (4/255)) = round(63.75)
        (1.0, 2.0, 8, False, 2.0 / 255, 0),  # range widened down to include 0
        (-2.0, -1.0, 8, False, 2.0 / 255, 255),  # range widened up to include 0
        (0.0, 1.5, 4, False, 0.1, 0),
        (-1.0, 0.5, 4, True, 1.0 / 7.5, 0),  # symmetric (PSAQ-ViT): |max| / ((qmax - qmin) / 2), zero point 0
        (-0.25, 2.0, 3, True, 2.0 / 3.5, 0),
        (0.0, 0.0, 8, False, EPS, 0),  # degenerate all-zero tensor: smallest positive scale
        (0.0, 0.0, 4, True, EPS, 0),
    ],
)
def test_minmax_qparams(lo: float, hi: float, bits: int, symmetric: bool, scale: float, zp: int) -> None:
    s, z = minmax_qparams(torch.tensor(lo), torch.tensor(hi), bits, symmetric)
    assert s.dtype == torch.float32 and z.dtype == torch.int32
    assert s.item() == pytest.approx(scale, rel=1e-6)
    assert z.item() == zp


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_zero_is_exactly_representable(bits: int, symmetric: bool) -> None:
    torch.manual_seed(bits)
    lo, hi = -torch.rand(5) * 3, torch.rand(5) * 2 + 0.1
    s, z = minmax_qparams(lo, hi, bits, symmetric)
    qmin, qmax = qrange(bits, symmetric)
    zeros = torch.zeros(5, 3)
    out = torch.fake_quantize_per_channel_affine(zeros, s, z, 0, qmin, qmax)
    assert torch.equal(out, zeros)
    # the range [lo, hi] is covered by the grid (up to half a step at the clamped end)
    # the grid covers [lo, hi] up to half a step at each end (the zero point is rounded)
    assert torch.all((qmin - z) * s <= lo + s / 2 + 1e-6) and torch.all((qmax - z) * s >= hi - s / 2 - 1e-6)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_symmetric_weights_use_every_code_of_the_grid(bits: int) -> None:
    """PSAQ-ViT's symmetric grid: step amax / ((qmax - qmin) / 2), so -amax sits on qmin (-8 at 4 bits, a tie
    rounded to even) and +amax clamps to qmax; every one of the 2^b codes occurs (amax / qmax never used qmin)."""
    qmin, qmax = qrange(bits, True)
    amax = (qmax - qmin) / 2  # step exactly 1, so x / step is exact and the tie at -amax is a true tie
    w = torch.linspace(-amax, amax, 4096).repeat(2, 1)
    scale, _ = weight_qparams(w, bits, True, True)
    assert scale.tolist() == [1.0, 1.0]
    codes = fake_quantize_weight(w, bits, True, True)
    for c in range(2):
        assert codes[c].unique().tolist() == list(range(qmin, qmax + 1))


def test_all_zero_weight_stays_zero() -> None:
    w = torch.zeros(4, 3, 3, 3)
    for per_channel in (True, False):
        for symmetric in (True, False):
            out = fake_quantize_weight(w, 4, symmetric, per_channel)
            assert torch.equal(out, w)


# ties (x/scale = k + 0.5) must round to the even integer; dyadic scales make x/scale exact
_TIE_CASES = [
    (0.5, 0, 0, 15, [0.25, 0.75, 1.25, 1.75, 2.0, 7.25, 7.75, 100.0, -3.0]),
    (0.25, 3, 0, 15, [-0.875, -0.625, -0.125, 0.125, 0.375, 2.875, 3.125, -5.0]),
    (1.0, 0, -8, 7, [-8.5, -7.5, -0.5, 0.5, 1.5, 2.5, 6.5, 7.5, 9.0]),
]


@pytest.mark.parametrize(("scale", "zp", "qmin", "qmax", "values"), _TIE_CASES)
def test_round_half_even_matches_python_reference(
    scale: float, zp: int, qmin: int, qmax: int, values: list[float]
) -> None:
    bits = int(math.log2(qmax - qmin + 1))
    symmetric = qmin < 0
    x = torch.tensor(values)
    for ste in ("clipped", "identity"):
        out = fake_quantize_tensor(x, torch.tensor(scale), torch.tensor(zp, dtype=torch.int32), bits, symmetric, ste)
        assert out.tolist() == ref_fake_quant(values, scale, zp, qmin, qmax)


def test_tensor_quant_random_matches_reference() -> None:
    torch.manual_seed(0)
    x = torch.randn(200) * 2
    scale, zp = 0.125, 7  # dyadic scale: x * (1/scale) is exact in float32
    out = fake_quantize_tensor(x, torch.tensor(scale), torch.tensor(zp, dtype=torch.int32), 4, False, "clipped")
    assert out.tolist() == ref_fake_quant(x.tolist(), scale, zp, 0, 15)


def _channel_scale(w: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    flat = w.reshape(w.shape[0], -1)
    return minmax_qparams(flat.amin(1), flat.amax(1), bits, symmetric)[0]


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_per_channel_weight_grid_and_error(bits: int, symmetric: bool) -> None:
    torch.manual_seed(bits)
    w = torch.randn(6, 4, 3, 3) * torch.logspace(-2, 1, 6).view(6, 1, 1, 1)  # very different channel ranges
    out = fake_quantize_weight(w, bits, symmetric, per_channel=True)
    assert out.shape == w.shape and out.dtype == w.dtype
    scale = _channel_scale(w, bits, symmetric)
    for c in range(w.shape[0]):
        assert out[c].unique().numel() <= 2**bits
        err = (out[c] - w[c]).abs().max()
        assert err <= scale[c] / 2 * (1 + 1e-4) + 1e-7, (c, err, scale[c])


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_per_tensor_weight_grid_and_error(bits: int) -> None:
    torch.manual_seed(0)
    w = torch.randn(6, 8) * torch.logspace(-2, 1, 6).view(6, 1)
    out = fake_quantize_weight(w, bits, False, per_channel=False)
    scale, _ = minmax_qparams(w.amin(), w.amax(), bits, False)
    assert out.unique().numel() <= 2**bits
    assert (out - w).abs().max() <= scale / 2 * (1 + 1e-4)
    per_channel = fake_quantize_weight(w, bits, False, per_channel=True)
    # per-channel ranges fit small channels much better
    assert (per_channel - w).pow(2).mean() < (out - w).pow(2).mean()
    # at 2-4 bits the smallest channel (max |w| ~ 0.03) collapses to very few per-tensor levels
    if bits <= 4:
        assert out[0].unique().numel() <= 2


def test_weight_quant_keeps_dtype_and_passes_gradient_everywhere() -> None:
    torch.manual_seed(0)
    w = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    out = fake_quantize_weight(w, 3, False, per_channel=True)
    assert out.dtype == torch.float64
    out.sum().backward()
    # min-max ranges never clamp a weight: the STE is the identity
    assert torch.equal(w.grad, torch.ones_like(w))


@pytest.mark.parametrize(("bits", "symmetric"), [(4, False), (4, True), (8, False)])
def test_ste_variants(bits: int, symmetric: bool) -> None:
    scale = torch.tensor(0.125)
    zp = torch.tensor(0 if symmetric else 3, dtype=torch.int32)
    qmin, qmax = qrange(bits, symmetric)
    lo, hi = (qmin - zp.item()) * 0.125, (qmax - zp.item()) * 0.125
    x = torch.linspace(lo - (hi - lo), hi + (hi - lo), 301)
    # the fused kernel clamps (and zeroes the gradient) where round(x / scale) + zp leaves [qmin, qmax]
    inside = torch.tensor([qmin <= round(v / 0.125) + int(zp) <= qmax for v in x.tolist()])
    grads = {}
    for ste in ("clipped", "identity"):
        xi = x.clone().requires_grad_(True)
        out = fake_quantize_tensor(xi, scale, zp, bits, symmetric, ste)
        out.backward(torch.ones_like(out))
        grads[ste] = xi.grad
        assert out.tolist() == pytest.approx(ref_fake_quant(x.tolist(), 0.125, int(zp), qmin, qmax), abs=1e-6)
    assert torch.equal(grads["identity"], torch.ones_like(x))
    assert torch.equal(grads["clipped"][inside], torch.ones(int(inside.sum())))
    assert torch.equal(grads["clipped"][~inside], torch.zeros(int((~inside).sum())))
    assert (~inside).sum() > 10 and inside.sum() > 10


def test_tensor_quant_half_precision_input_returns_same_dtype() -> None:
    x = torch.randn(10).to(torch.bfloat16)
    out = fake_quantize_tensor(x, torch.tensor(0.05), torch.tensor(0, dtype=torch.int32), 8, True, "clipped")
    assert out.dtype == torch.bfloat16
