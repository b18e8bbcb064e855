"""Clip-range search (synq_hf/quant/range_search.py) and its use in calibration: less error than min-max."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from synq_hf.apply import act_quantizers, calibrate, quantize_model
from synq_hf.config import SynQConfig
from synq_hf.quant.fake_quant import minmax_qparams, qrange
from synq_hf.quant.range_search import HIST_BINS, search_hist_range, search_weight_clip


def _mse(x: torch.Tensor, lo: float, hi: float, bits: int) -> float:
    scale, zp = minmax_qparams(torch.tensor(lo), torch.tensor(hi), bits, False)
    qmin, qmax = qrange(bits, False)
    return float((torch.fake_quantize_per_tensor_affine(x, scale, zp, qmin, qmax) - x).pow(2).mean())


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_histogram_search_beats_minmax_on_heavy_tails(bits: int) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(200_000, generator=g)) ** 2  # post-ReLU-like: mass near 0, a long tail
    lo, hi = float(x.min()), float(x.max())
    hist = torch.histc(x, bins=HIST_BINS, min=lo, max=hi)
    s_lo, s_hi = search_hist_range(hist, lo, hi, bits, symmetric=False, p=2.0)
    assert s_lo == 0.0 and 0.0 < s_hi <= hi
    assert _mse(x, s_lo, s_hi, bits) <= _mse(x, lo, hi, bits)
    if bits <= 4:  # at low bits the tail is not worth the grid: the search clips it and the error drops a lot
        assert s_hi < 0.6 * hi
        assert _mse(x, s_lo, s_hi, bits) < 0.5 * _mse(x, lo, hi, bits)


def test_histogram_search_on_a_uniform_range_keeps_it() -> None:
    x = torch.linspace(-1.0, 3.0, 100_000)
    hist = torch.histc(x, bins=HIST_BINS, min=-1.0, max=3.0)
    lo, hi = search_hist_range(hist, -1.0, 3.0, 8, symmetric=False)
    assert (lo, hi) == pytest.approx((-1.0, 3.0), rel=0.02)  # nothing to clip on a uniform distribution


def test_weight_clip_search_is_per_channel_and_never_worse() -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.rand(6, 64, 3, 3, generator=g) * 2 - 1  # uniform channels: nothing to gain by clipping
    w[0] = torch.randn(64, 3, 3, generator=g) ** 3  # one heavy-tailed channel
    ratios = search_weight_clip(w, 3, symmetric=False, per_channel=True, p=2.0)
    assert ratios.shape == (6,) and bool(((ratios > 0) & (ratios <= 1)).all())
    assert ratios[0] < 0.85 and bool((ratios[1:] > 0.9).all())  # only the heavy-tailed channel is clipped
    flat = w.reshape(6, -1)
    for c in range(6):
        lo, hi = float(flat[c].min()), float(flat[c].max())
        r = float(ratios[c])
        assert _mse(flat[c], lo * r, hi * r, 3) <= _mse(flat[c], lo, hi, 3) + 1e-12
    assert search_weight_clip(w, 3, symmetric=False, per_channel=False).shape == ()


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu(self.bn(self.conv(x)))).flatten(1))


def test_calibration_searches_ranges_and_lowers_the_output_error() -> None:
    torch.manual_seed(0)
    model = _Net().eval()
    x = torch.randn(64, 3, 8, 8) * torch.rand(64, 1, 1, 1) * 3  # per-image scale: a heavy-tailed activation
    errors = {}
    for mode in ("minmax", "search"):
        cfg = SynQConfig(w_bits=3, a_bits=3, act_range_init=mode, weight_range_init=mode)
        q = quantize_model(model, cfg, inplace=False)
        calibrate(q, [x[:32], x[32:]], progress=False)
        with torch.no_grad():
            errors[mode] = float((q(x) - model(x)).pow(2).mean())
        if mode == "search":
            assert bool((q.conv.weight_quantizer.clip <= 1).all()) and bool((q.conv.weight_quantizer.clip < 1).any())
            clipped = []  # the searched activation ranges cut the tail the calibration images reach
            hooks = [a.register_forward_pre_hook(lambda m, i, c=clipped: c.append(float(i[0].max()) > float(m.max_val)))
                     for a in act_quantizers(q)]
            with torch.no_grad():
                q(x)
            for h in hooks:
                h.remove()
            assert any(clipped)
        else:
            assert not hasattr(q.conv.weight_quantizer, "clip")  # min-max weights store nothing
    assert errors["search"] < errors["minmax"]
