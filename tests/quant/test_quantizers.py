"""Quantizer modules: WeightQuantizer min-max, ActQuantizer EMA observer, modes, learnable scale, state dict."""

from __future__ import annotations

import pytest
import torch

from synq_hf.errors import SynQError
from synq_hf.quant import ActQuantizer, WeightQuantizer
from synq_hf.quant.fake_quant import fake_quantize_tensor, fake_quantize_weight, minmax_qparams, qrange


def test_weight_quantizer_matches_functional_and_can_be_disabled() -> None:
    torch.manual_seed(0)
    w = torch.randn(8, 3, 3, 3)
    for bits, symmetric, per_channel in [(4, False, True), (3, True, True), (8, False, False)]:
        q = WeightQuantizer(bits, symmetric, per_channel)
        assert torch.equal(q(w), fake_quantize_weight(w, bits, symmetric, per_channel))
        assert not torch.equal(q(w), w)
        assert f"bits={bits}" in repr(q)
    q.enabled = False
    assert q(w) is w


def test_weight_quantizer_recomputes_range_from_current_weights() -> None:
    q = WeightQuantizer(4)
    w = torch.randn(4, 5)
    assert torch.equal(q(w * 3), fake_quantize_weight(w * 3, 4, False, True))
    assert q.state_dict() == {}  # stateless: nothing to save


@pytest.mark.parametrize("momentum", [0.9, 0.5])
def test_act_quantizer_ema_math(momentum: float) -> None:
    torch.manual_seed(0)
    q = ActQuantizer(8, momentum=momentum)
    q.mode = "calibrate"
    batches = [torch.randn(4, 10) * s + o for s, o in [(1.0, 0.0), (3.0, 1.0), (0.5, -2.0), (2.0, 0.5)]]
    lo, hi = None, None
    for b in batches:
        out = q(b)
        assert out is b  # calibration observes but does not change the activations
        bmin, bmax = b.min().item(), b.max().item()
        if lo is None:
            lo, hi = bmin, bmax  # the first batch sets the range
        else:
            lo, hi = momentum * lo + (1 - momentum) * bmin, momentum * hi + (1 - momentum) * bmax
        assert q.min_val.item() == pytest.approx(lo, rel=1e-5)
        assert q.max_val.item() == pytest.approx(hi, rel=1e-5)
    assert bool(q.calibrated)
    q.mode = "quantize"
    x = torch.randn(4, 10)
    scale, zp = minmax_qparams(torch.tensor(lo), torch.tensor(hi), 8, False)
    assert torch.allclose(q(x), fake_quantize_tensor(x, scale, zp, 8, False, "clipped"))


def test_uncalibrated_quantize_raises() -> None:
    q = ActQuantizer(4)
    q.name = "layer1.act"
    with pytest.raises(SynQError, match="layer1.act.*calibrate"):
        q(torch.randn(3))
    assert "uncalibrated" in repr(q)


def test_float_mode_is_passthrough_and_reset_forgets() -> None:
    q = ActQuantizer(2)
    q.mode = "calibrate"
    q(torch.tensor([-1.0, 1.0]))
    q.mode = "float"
    x = torch.randn(10)
    assert q(x) is x
    q.reset()
    assert not bool(q.calibrated) and q.min_val.item() == 0 and q.max_val.item() == 0
    q.mode = "quantize"
    with pytest.raises(SynQError):
        q(x)


@pytest.mark.parametrize("ste", ["clipped", "identity"])
def test_act_quantizer_ste(ste: str) -> None:
    q = ActQuantizer(4, ste=ste)
    q.mode = "calibrate"
    q(torch.tensor([0.0, 1.0]))
    q.mode = "quantize"
    x = torch.tensor([-0.5, 0.2, 0.5, 3.0], requires_grad=True)
    q(x).sum().backward()
    expected = [1.0, 1.0, 1.0, 1.0] if ste == "identity" else [0.0, 1.0, 1.0, 0.0]
    assert x.grad.tolist() == expected


def test_learnable_scale_gets_gradient_and_trains() -> None:
    torch.manual_seed(0)
    q = ActQuantizer(3, learnable=True)
    q.mode = "calibrate"
    x = torch.rand(256) * 4
    q(x)
    q.init_learnable()
    scale0, zp0 = minmax_qparams(q.min_val, q.max_val, 3, False)
    assert q.scale.item() == pytest.approx(scale0.item()) and q.zero_point.item() == zp0.item()
    q.mode = "quantize"
    target = x.clamp(max=2.0)  # the best range is narrower than the observed one
    opt = torch.optim.Adam(q.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = (q(x) - target).pow(2).mean()
        loss.backward()
        assert q.scale.grad is not None and q.scale.grad.abs().item() > 0
        opt.step()
        losses.append(loss.item())
    assert q.scale.item() != pytest.approx(scale0.item())
    assert losses[-1] < losses[0] * 0.8
    assert q.qparams()[0].item() == q.scale.item()  # qparams reports the learned scale, not the observed range


def test_learnable_quantizer_matches_frozen_one_after_init() -> None:
    torch.manual_seed(0)
    x = torch.randn(64) * 2
    frozen, learn = ActQuantizer(4), ActQuantizer(4, learnable=True)
    for q in (frozen, learn):
        q.mode = "calibrate"
        q(x)
        q.init_learnable()
        q.mode = "quantize"
    assert torch.allclose(frozen(x), learn(x), atol=1e-6)


@pytest.mark.parametrize("learnable", [False, True])
def test_state_dict_round_trip_restores_calibration(learnable: bool) -> None:
    torch.manual_seed(0)
    q = ActQuantizer(4, learnable=learnable)
    q.mode = "calibrate"
    q(torch.randn(100))
    q.init_learnable()
    q.mode = "quantize"
    sd = q.state_dict()
    assert set(sd) == {"min_val", "max_val", "calibrated"} | ({"scale", "zero_point"} if learnable else set())
    fresh = ActQuantizer(4, learnable=learnable)
    with pytest.raises(SynQError):
        fresh(torch.randn(3))
    fresh.load_state_dict(sd)
    assert fresh._is_calibrated
    x = torch.randn(50)
    assert torch.equal(fresh(x), q(x))
    # loading an uncalibrated state turns the flag back off
    fresh.load_state_dict(ActQuantizer(4, learnable=learnable).state_dict())
    assert not fresh._is_calibrated


def _lsq_scale_grad(q: ActQuantizer, x: torch.Tensor) -> torch.Tensor:
    q.scale.grad = None
    q(x).mean(dim=0).sum().backward()  # a per-sample loss averaged over the batch, as training losses are
    return q.scale.grad.clone()


def test_lsq_gradient_scale_counts_one_sample_not_the_batch() -> None:
    """LSQ's g = 1/sqrt(N·Q_P) uses the elements of one sample: duplicating the batch leaves the gradient alone."""
    torch.manual_seed(0)
    q = ActQuantizer(4, learnable=True)
    x = torch.randn(8, 3, 5, 5)
    q.mode = "calibrate"
    q(x)
    q.mode = "quantize"
    q.finish_calibration()
    g_batch = _lsq_scale_grad(q, x)
    assert torch.allclose(_lsq_scale_grad(q, torch.cat([x, x, x, x])), g_batch, rtol=1e-5)
    # and it is the reference LSQ gradient with that factor
    scale = q.scale.detach().clone().requires_grad_(True)
    qmin, qmax = qrange(4, False)
    ref = torch._fake_quantize_learnable_per_tensor_affine(
        x, scale, q.zero_point.detach(), qmin, qmax, 1.0 / (x[0].numel() * qmax) ** 0.5)
    ref.mean(dim=0).sum().backward()
    assert torch.allclose(g_batch, scale.grad, rtol=1e-5)


def test_lsq_zero_point_is_fixed_at_zero_after_relu() -> None:
    torch.manual_seed(0)
    for signed in (False, True):
        q = ActQuantizer(3, learnable=True)
        x = torch.randn(16, 10) if signed else torch.relu(torch.randn(16, 10))
        q.mode = "calibrate"
        q(x)
        q.mode = "quantize"
        q.finish_calibration()
        assert q.nonnegative is (not signed)
        q.zero_point.grad = None
        q(x * 1.5).sum().backward()
        if signed:
            assert q.zero_point.grad is not None and q.zero_point.grad.abs().sum() > 0
        else:
            assert q.zero_point.grad is None and q.zero_point.item() == 0.0  # non-negative: zero point stays 0


def test_learnable_weight_scale_trains_and_matches_minmax_at_init() -> None:
    torch.manual_seed(0)
    w = torch.randn(4, 3, 3, 3)
    plain = WeightQuantizer(4)
    lsq = WeightQuantizer(4, learnable=True)
    lsq.bind(w)
    lsq.init_range(w)
    assert torch.equal(lsq(w), plain(w))  # LSQ starts from the min-max grid
    scale, zp = lsq.qparams(w)
    assert scale.shape == (4,) and zp.dtype == torch.int32
    lsq(w).pow(2).sum().backward()
    assert lsq.scale.grad is not None and lsq.scale.grad.abs().sum() > 0
    assert "zero_point" in dict(lsq.named_buffers())  # the weight zero point is not trained


def test_weight_clip_state_survives_a_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    w = torch.randn(5, 8) ** 3
    q = WeightQuantizer(3, range_init="search")
    q.bind(w)
    q.init_range(w)
    assert bool((q.clip < 1).any())
    fresh = WeightQuantizer(3, range_init="search")
    fresh.bind(w)
    fresh.load_state_dict(q.state_dict())
    assert torch.equal(fresh(w), q(w)) and not torch.equal(fresh(w), WeightQuantizer(3)(w))
