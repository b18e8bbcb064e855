"""Calibration and PTQ: EMA ranges over batches, modes, resets, errors for bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from synq_hf import SynQConfig
from synq_hf.apply import (
    act_quantizers,
    calibrate,
    iter_batches,
    ptq,
    quant_mode,
    quantize_model,
    set_quant_mode,
)
from synq_hf.architectures import ArchSpec, CamTarget, register_spec
from synq_hf.architectures.placement.cnn import apply_after_relu
from synq_hf.errors import SynQError


class TinyCNN(nn.Module):
    """conv-BN-ReLU ×2 + pooled linear head; ``spare`` is a ReLU the forward never uses."""

    def __init__(self, with_unused: bool = False) -> None:
        super().__init__()
        self.conv1, self.bn1, self.act1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()
        self.conv2, self.bn2, self.act2 = nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU6()
        self.fc = nn.Linear(6, 5)
        if with_unused:
            self.spare = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


# TinyCNN gets the authors' after-ReLU placement through its own spec (one range per ReLU output to check);
# registering it is all an architecture needs.
register_spec(ArchSpec(
    name="test_tiny_relu_cnn", family="cnn", description="TinyCNN of tests/test_calibration.py",
    matches=lambda m: isinstance(m, TinyCNN), place=apply_after_relu, placement="after_relu",
    first_last=lambda m: ("conv1", "fc"), cam_target=lambda m: CamTarget("fc", "input", "nchw"),
    synthesis="bn_stats", feature_blocks=lambda m: [],
), first=True)


def _batches(n: int = 3, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 3, 8, 8, generator=g) * (i + 1) for i in range(n)]


def _expected_ranges(model: nn.Module, batches: list[torch.Tensor], momentum: float) -> dict[str, tuple]:
    """EMA of batch min/max of each ReLU output, from plain forward hooks with activation quantizers off.

    Calibration runs with quantized weights (as the quantized model will), so ``model`` is the quantized one.
    """
    seen: dict[str, list[tuple[float, float]]] = {"act1": [], "act2": []}
    hooks = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: seen[n].append((o.min().item(),
                                                                                         o.max().item())))
             for n in seen]
    with torch.no_grad(), quant_mode(model, "float"):
        for b in batches:
            model(b)
    for h in hooks:
        h.remove()
    out = {}
    for name, mm in seen.items():
        lo, hi = mm[0]
        for bmin, bmax in mm[1:]:
            lo, hi = momentum * lo + (1 - momentum) * bmin, momentum * hi + (1 - momentum) * bmax
        out[name] = (lo, hi)
    return out


@pytest.mark.parametrize("momentum", [0.9, 0.6])
def test_calibrate_matches_hooked_ema(momentum: float) -> None:
    torch.manual_seed(0)
    model = TinyCNN().eval()
    batches = _batches()
    q = quantize_model(model, SynQConfig(ema_momentum=momentum, act_range_init="minmax", weight_range_init="minmax"), inplace=False)
    expected = _expected_ranges(q, batches, momentum)
    calibrate(q, batches, progress=False)
    for name in ("act1", "act2"):
        aq = getattr(q, name).output_quantizer
        assert aq.mode == "quantize"
        assert (aq.min_val.item(), aq.max_val.item()) == pytest.approx(expected[name], rel=1e-5, abs=1e-6)


def test_ptq_batches_by_config_and_leaves_input_model_float() -> None:
    torch.manual_seed(0)
    model = TinyCNN().eval()
    images = torch.cat(_batches(3))  # 12 images
    cfg = SynQConfig(calibration_batch_size=5, act_range_init="minmax", weight_range_init="minmax")
    q = ptq(model, cfg, images, progress=False)
    assert q is not model and not any(hasattr(m, "output_quantizer") for m in model.modules())
    expected = _expected_ranges(q, list(iter_batches(images, 5)), cfg.ema_momentum)
    assert [len(b) for b in iter_batches(images, 5)] == [5, 5, 2]
    aq = q.act2.output_quantizer
    assert (aq.min_val.item(), aq.max_val.item()) == pytest.approx(expected["act2"], rel=1e-5, abs=1e-6)
    # an iterable of batches is used as given
    q2 = ptq(model, cfg, iter(_batches(3)), progress=False)
    assert q2.act2.output_quantizer.max_val.item() == pytest.approx(
        _expected_ranges(q2, _batches(3), cfg.ema_momentum)["act2"][1], rel=1e-5
    )


def test_recalibration_resets_previous_ranges() -> None:
    torch.manual_seed(0)
    model = TinyCNN().eval()
    q = ptq(model, SynQConfig(act_range_init="minmax", weight_range_init="minmax"), _batches(2, seed=1), progress=False)
    first = q.act1.output_quantizer.max_val.clone()
    small = [b * 0.01 for b in _batches(1, seed=2)]
    calibrate(q, small, progress=False)
    expected = _expected_ranges(q, small, 0.9)["act1"]
    assert q.act1.output_quantizer.max_val.item() == pytest.approx(expected[1], rel=1e-5)
    assert q.act1.output_quantizer.max_val.item() < first.item()


def test_calibrate_restores_train_mode_and_quant_mode_context() -> None:
    q = quantize_model(TinyCNN(), SynQConfig())
    q.train()
    calibrate(q, _batches(1), progress=False)
    assert q.training
    assert all(a.mode == "quantize" for a in act_quantizers(q))
    with quant_mode(q, "float"):
        assert all(a.mode == "float" for a in act_quantizers(q))
    assert all(a.mode == "quantize" for a in act_quantizers(q))
    q.act1.output_quantizer.mode = "float"
    with quant_mode(q, "calibrate"):
        pass
    assert q.act1.output_quantizer.mode == "float" and q.act2.output_quantizer.mode == "quantize"
    set_quant_mode(q, "quantize")
    assert all(a.mode == "quantize" for a in act_quantizers(q))


def test_calibrate_does_not_update_batchnorm_statistics() -> None:
    q = quantize_model(TinyCNN(), SynQConfig())
    q.train()
    before = q.bn1.running_mean.clone()
    calibrate(q, _batches(2), progress=False)
    assert torch.equal(q.bn1.running_mean, before)


def test_calibrate_errors() -> None:
    with pytest.raises(SynQError, match="quantize_model first"):
        calibrate(TinyCNN(), _batches(1), progress=False)
    q = quantize_model(TinyCNN(), SynQConfig())
    with pytest.raises(SynQError, match="no batches"):
        calibrate(q, [], progress=False)
    unused = quantize_model(TinyCNN(with_unused=True), SynQConfig())
    with pytest.raises(SynQError, match="saw no data.*spare"):
        calibrate(unused, _batches(1), progress=False)


def test_uncalibrated_model_refuses_to_run() -> None:
    q = quantize_model(TinyCNN(), SynQConfig())
    with pytest.raises(SynQError, match="calibrate"):
        q(_batches(1)[0])
    with quant_mode(q, "float"), torch.no_grad():
        q(_batches(1)[0])  # float mode needs no ranges
