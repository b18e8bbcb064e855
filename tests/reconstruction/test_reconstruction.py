"""Block reconstruction (issue 25): AdaRound rounding, the regulariser's schedule, QDrop, unit order and inputs,
resume, save/reload, the Genie layer rule and the one-line errors. Tiny models, seconds."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from _synq_tiny import tiny_cifar_resnet, trained_batchnorm
from torch import nn

from synq_hf import SynQConfig
from synq_hf.apply import calibrate, iter_batches, quantize_model
from synq_hf.errors import CheckpointError, ConfigError, SynQError
from synq_hf.model_info import model_logits
from synq_hf.quant import QuantConv2d, QuantLinear
from synq_hf.quant.packing import weight_codes
from synq_hf.reconstruction import (
    AdaRoundQuantizer,
    RoundingSchedule,
    engine,
    reconstruct,
    reconstruct_model,
    reconstruction_units,
    rectified_sigmoid,
)
from synq_hf.reconstruction.api import reconstruction_config
from synq_hf.reconstruction.qdrop import LSQDropFunction, MaskBank, qdrop_mix, training_quantizers

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(**changes: object) -> SynQConfig:
    base = dict(w_bits=4, a_bits=4, reconstruct_iterations=6, reconstruct_batch_size=4, calibration_num_images=8,
                calibration_batch_size=4, reconstruct_num_images=8)
    return SynQConfig(**{**base, **changes}).resolve(family="cnn", input_size=32)


def _images(n: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _teacher() -> nn.Module:
    return trained_batchnorm(tiny_cifar_resnet())


def _student(teacher: nn.Module, config: SynQConfig, images: torch.Tensor) -> nn.Module:
    student = quantize_model(copy.deepcopy(teacher), reconstruction_config(config)).eval()
    calibrate(student, iter_batches(images, 4), progress=False)
    return student


# -- AdaRound ----------------------------------------------------------------------------------------------


def test_soft_rounding_starts_at_the_float_weight_and_hardens_into_the_fake_quant_forward():
    teacher, images = _teacher(), _images()
    student = _student(teacher, _config(w_bits=3), images)
    layer = student.layer1[0].conv1
    w = layer.weight.detach().clone()
    q = AdaRoundQuantizer.attach(layer)
    scale = q.base.scale.detach().abs().view(-1, 1, 1, 1)
    soft = q(layer.weight).detach()
    unclipped = (soft - w).abs() < 1e-5
    assert unclipped.float().mean() > 0.8  # h starts at the fractional part: the soft weight is the float weight
    with torch.no_grad():
        q.logits.copy_(torch.randn_like(q.logits) * 3)
        q.base.scale.mul_(1.05)  # a learned step size moves the grid, the codes stay
    q.soft = False
    hard = q(layer.weight).detach()
    codes = hard / (q.base.scale.detach().abs().view(-1, 1, 1, 1))
    assert torch.allclose(codes, codes.round(), atol=1e-4)  # on the grid of the learned step size
    x = torch.randn(2, 16, 8, 8)
    expected = torch.nn.functional.conv2d(x, hard, layer.bias, layer.stride, layer.padding)
    q.harden()
    assert isinstance(layer, QuantConv2d) and layer.weight_quantizer is q.base  # its own quantizer is back
    assert torch.equal(layer.weight_quantizer(layer.weight), layer.weight)  # the weight is a fixed point
    assert torch.equal(layer(x), expected)
    _, packed_scale, _ = weight_codes(layer)  # packs exactly
    assert torch.equal(packed_scale, q.base.scale.detach().abs())
    assert scale.numel() == w.shape[0]


def test_adaround_refuses_a_quantizer_that_does_not_learn_step_sizes():
    teacher = _teacher()
    student = quantize_model(copy.deepcopy(teacher), _config())
    with pytest.raises(SynQError, match="learnable_weight_scale"):
        AdaRoundQuantizer.attach(student.layer1[0].conv1)


def test_the_rounding_regulariser_anneals():
    schedule = RoundingSchedule(iterations=100, warmup=0.2, start=20.0, end=2.0)
    assert not schedule.active(20) and schedule.active(21)
    betas = [schedule.beta(s) for s in (1, 20, 21, 60, 100)]
    assert betas[0] == betas[1] == 20.0 and betas[-1] == pytest.approx(2.0)
    assert betas[2] > betas[3] > betas[4]
    assert schedule.beta(60) == pytest.approx(2.0 + 18.0 * 0.5)  # linear between warm-up end and the last step
    teacher, images = _teacher(), _images()
    q = AdaRoundQuantizer.attach(_student(teacher, _config(), images).layer1[0].conv1)
    values = [float(q.regularizer(b).detach()) for b in (20.0, 8.0, 2.0)]
    # beta 20 is flat (about 1 per weight) except next to 0 and 1, so it hardly pulls; beta 2 is a parabola that
    # pulls every h towards 0 or 1
    assert q.logits.numel() >= values[0] > values[1] > values[2] > 0
    pulls = []
    for beta in (20.0, 2.0):
        h = torch.tensor(0.7, requires_grad=True)
        (1 - (2 * h - 1).abs().pow(beta)).backward()
        pulls.append(float(h.grad.abs()))
    assert pulls[0] < 1e-5 < 1.0 < pulls[1]  # on an undecided h = 0.7: none at the start, strong at the end
    with torch.no_grad():
        q.logits.copy_(torch.where(torch.rand_like(q.logits) < 0.5, -10.0, 10.0))
    assert float(q.regularizer(2.0).detach()) == 0.0  # nothing left to push once every h is 0 or 1
    assert float(rectified_sigmoid(torch.tensor(10.0))) == 1.0


# -- QDrop ---------------------------------------------------------------------------------------------


def test_qdrop_masks_and_input_mix_follow_the_probability():
    g = torch.Generator().manual_seed(0)
    masks = MaskBank(0.5, 40_000, g, torch.device("cpu"))
    m1, m2 = masks(torch.Size([100, 100])), masks(torch.Size([100, 100]))
    assert set(m1.unique().tolist()) <= {0.0, 1.0}
    assert 0.45 < float(m1.mean()) < 0.55 and not torch.equal(m1, m2)  # fresh coins every step
    big = masks(torch.Size([300, 300]))  # larger than the pool: sampled directly
    assert 0.45 < float(big.mean()) < 0.55
    assert float(MaskBank(0.0, 1000, g, torch.device("cpu"))(torch.Size([1000])).sum()) == 0.0
    x_q, x_fp = torch.zeros(50, 50), torch.ones(50, 50)
    mixed = qdrop_mix(x_q, x_fp, masks)
    assert set(mixed.unique().tolist()) == {0.0, 1.0}  # each element from one network or the other
    assert qdrop_mix(x_q, x_fp, None) is x_q


def test_lsq_drop_matches_the_quantizer_and_its_gradients():
    teacher, images = _teacher(), _images()
    student = _student(teacher, _config(), images)
    q = student.layer1[0].relu1.output_quantizer
    x = torch.randn(4, 16, 8, 8).relu() * 2
    with torch.no_grad():
        expected = q(x)
        with training_quantizers([q], None):
            assert torch.equal(q(x), expected)  # same values as the quantizer's own forward
    assert "forward" not in q.__dict__  # restored
    # gradients: those of torch's LSQ kernel (gradient factor 1) on the quantized elements, identity on the others
    zp = torch.round(q.zero_point.detach())
    keep = (torch.rand_like(x) < 0.5).float()
    weights = torch.arange(x.numel()).view_as(x).float().sin()
    xr, sr = x.clone().requires_grad_(True), q.scale.detach().abs().clone().requires_grad_(True)
    kernel = torch._fake_quantize_learnable_per_tensor_affine(xr, sr, zp, 0, 15, 1.0)
    (torch.lerp(kernel, xr, keep) * weights).sum().backward()
    xs, ss = x.clone().requires_grad_(True), q.scale.detach().abs().clone().requires_grad_(True)
    out = LSQDropFunction.apply(xs, ss, zp, keep, 0, 15)
    assert torch.allclose(out.detach(), torch.lerp(kernel, xr, keep).detach(), atol=1e-6)
    (out * weights).sum().backward()
    assert torch.allclose(xs.grad, xr.grad) and torch.allclose(ss.grad, sr.grad, rtol=1e-4, atol=1e-4)
    assert torch.equal(out[keep.bool()], x[keep.bool()])  # dropped elements stay float


# -- units -----------------------------------------------------------------------------------------------


def test_units_follow_the_forward_and_own_their_quantizers():
    teacher, images = _teacher(), _images()
    student = _student(teacher, _config(), images)
    units = reconstruction_units(student, images[:2])
    assert [u.name for u in units] == ["stem", "layer1.0", "layer2.0", "layer3.0", "head"]
    assert units[0].layers == ["conv1"] and units[0].act_quantizers == ["relu.output_quantizer"]
    assert units[1].layers == ["layer1.0.conv1", "layer1.0.conv2"]
    assert units[-1].layers == ["linear"] and all(u.chained for u in units)
    owned = [n for u in units for n in (*u.layers, *u.act_quantizers)]
    quantized = [n for n, m in student.named_modules() if isinstance(m, (QuantConv2d, QuantLinear))]
    assert sorted(set(owned) & set(quantized)) == sorted(quantized) and len(owned) == len(set(owned))


def test_units_of_a_vit_are_its_blocks_between_the_embedding_and_the_head():
    import timm

    torch.manual_seed(0)
    vit = timm.create_model("test_vit", num_classes=10, img_size=32, patch_size=8).eval()
    config = SynQConfig(w_bits=4, a_bits=4).resolve(family="vit", input_size=32)
    student = quantize_model(copy.deepcopy(vit), reconstruction_config(config)).eval()
    x = torch.randn(4, 3, 32, 32)
    calibrate(student, iter_batches(x, 4), progress=False)
    units = reconstruction_units(student, x[:2])
    assert [u.kind for u in units] == ["stem"] + ["block"] * len(vit.blocks) + ["head"]
    assert "patch_embed.proj" in units[0].layers and "head" in units[-1].layers
    assert any(q.startswith("blocks.0.attn.") for q in units[1].act_quantizers)


def test_units_of_an_mbconv_net_and_of_a_swin_with_patch_merging():
    import timm

    torch.manual_seed(0)
    mbv2 = timm.create_model("mobilenetv2_035", num_classes=10).eval()
    config = _config()
    x = torch.randn(4, 3, 32, 32)
    student = _student(mbv2, config, x)
    units = reconstruction_units(student, x[:2])
    assert units[0].layers == ["conv_stem"] and units[-1].layers == ["conv_head", "classifier"]
    assert [u.name for u in units[1:3]] == ["blocks.0.0", "blocks.1.0"]  # DepthwiseSeparable, then MBConv blocks
    assert all(u.kind == "block" and u.chained for u in units[1:-1])
    swin = timm.create_model("swin_tiny_patch4_window7_224", num_classes=10, embed_dim=24, depths=(1, 1),
                             num_heads=(1, 2), img_size=56, window_size=7).eval()
    config = SynQConfig(w_bits=4, a_bits=4, reconstruct_iterations=2, reconstruct_batch_size=2,
                        reconstruct_num_images=4, calibration_num_images=4, calibration_batch_size=2).resolve(
        family="swin", input_size=56)
    model, report = reconstruct_model(swin, torch.randn(4, 3, 56, 56), config, progress=False)
    assert [u["unit"] for u in report.units] == [
        "stem", "layers.0.blocks.0", "layers.1.downsample.reduction", "layers.1.blocks.0", "head"]
    units = reconstruction_units(model, torch.randn(2, 3, 56, 56))
    assert units[2].kind == "layer" and not units[2].chained and units[3].chained  # patch merging: its own unit


def test_each_unit_learns_from_the_quantized_previous_units(monkeypatch):
    """x: the float network's unit input; x_q: the input in the quantized network whose earlier units are already
    reconstructed (hard); y: the float unit's output."""
    teacher, images = _teacher(), _images()
    config = _config()
    student = _student(teacher, config, images)
    seen: dict[str, dict[str, torch.Tensor]] = {}
    original = engine._optimize_unit

    def spy(student, unit, units, data, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen[unit.name] = {k: v.clone() for k, v in data.items()}
        expected = {}
        target = student.get_submodule(unit.module) if unit.module else None
        if target is not None:  # the student's own forward, with every earlier unit already hardened
            hook = target.register_forward_pre_hook(lambda m, a: expected.update(x_q=a[0].detach().clone()))
            with torch.no_grad():
                model_logits(student, images)
            hook.remove()
            assert torch.allclose(data["x_q"], expected["x_q"], atol=1e-6), unit.name
        return original(student, unit, units, data, *args, **kwargs)

    monkeypatch.setattr(engine, "_optimize_unit", spy)
    reconstruct(teacher, student, images, reconstruction_config(config), progress=False)
    assert list(seen) == ["stem", "layer1.0", "layer2.0", "layer3.0", "head"]
    with torch.no_grad():
        feats = {}
        hooks = [teacher.get_submodule(n).register_forward_hook(lambda m, a, o, n=n: feats.update({n: (a[0], o)}))
                 for n in ("layer1.0", "layer2.0")]
        logits = teacher(images)
        for h in hooks:
            h.remove()
    assert torch.allclose(seen["layer2.0"]["x"], feats["layer2.0"][0]) and torch.allclose(
        seen["layer2.0"]["y"], feats["layer2.0"][1])
    assert torch.allclose(seen["head"]["y"], logits)
    assert not torch.allclose(seen["layer2.0"]["x_q"], seen["layer2.0"]["x"])  # quantized, not float


# -- resume ----------------------------------------------------------------------------------------------


def test_an_interrupted_reconstruction_resumes_to_identical_weights(tmp_path):
    teacher, images = _teacher(), _images()
    config = _config()
    full, _ = reconstruct_model(teacher, images, config, progress=False)

    class Boom(Exception):
        pass

    calls = {"n": 0}
    original = engine.reconstruction_loss

    def failing(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls["n"] += 1
        if calls["n"] == 2 * config.reconstruct_iterations + 3:  # in the middle of the third unit
            raise Boom
        return original(*args, **kwargs)

    engine.reconstruction_loss = failing
    try:
        with pytest.raises(Boom):
            reconstruct_model(teacher, images, config, work_dir=tmp_path, progress=False)
    finally:
        engine.reconstruction_loss = original
    record = json.loads((tmp_path / engine.PROGRESS_FILE).read_text())
    assert [u["unit"] for u in record["done"]] == ["stem", "layer1.0"]
    resumed, report = reconstruct_model(teacher, images, config, work_dir=tmp_path, progress=False)
    assert report.resumed_units == 2 and [u["unit"] for u in report.units][-1] == "head"
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(CheckpointError, match="other"):
        reconstruct_model(teacher, images, config.replace(reconstruct_qdrop=0.25), work_dir=tmp_path,
                          progress=False)


def test_an_interrupted_unit_gives_the_layers_their_own_quantizers_back():
    teacher, images = _teacher(), _images()
    config = _config()
    student = _student(teacher, config, images)
    weights = {n: p.detach().clone() for n, p in student.named_parameters()}

    def stop(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise KeyboardInterrupt

    original = engine.reconstruction_loss
    engine.reconstruction_loss = stop
    try:
        with pytest.raises(KeyboardInterrupt):
            reconstruct(teacher, student, images, reconstruction_config(config), progress=False)
    finally:
        engine.reconstruction_loss = original
    assert not any(isinstance(m, AdaRoundQuantizer) for m in student.modules())
    assert all(torch.equal(p, weights[n]) for n, p in student.named_parameters())
    assert all("forward" not in m.__dict__ for m in student.modules())


# -- the result is an ordinary fake-quant model -------------------------------------------------------------


def test_quantizer_reconstructs_saves_packs_and_reloads_with_identical_logits(tmp_path):
    """SynQQuantizer(method="reconstruct") -> save_pretrained -> load_model: the same logits, a packed folder, a card
    that says how it was made, and a work folder that a second call resumes from."""
    import timm
    from _synq_tiny import synthetic_dataset
    from timm.models import save_for_hf

    from synq_hf import SynQQuantizer
    from synq_hf.hub.loading import load_model

    torch.manual_seed(0)
    teacher = trained_batchnorm(timm.create_model("cifar_resnet20", num_classes=10).eval())
    save_for_hf(teacher, str(tmp_path / "teacher"), safe_serialization=True)
    config = SynQConfig(w_bits=3, a_bits=3, method="reconstruct", reconstruct_iterations=4, reconstruct_batch_size=4,
                        reconstruct_num_images=8, calibration_num_images=8, calibration_batch_size=4)
    q = SynQQuantizer.from_pretrained(f"local-dir:{tmp_path / 'teacher'}", config, device="cpu")
    model = q.quantize(synthetic_dataset(8), output_dir=tmp_path / "work", progress=False)  # dispatches on method
    assert q.method == "reconstruct" and model is q.model
    assert q.config.learnable_weight_scale and q.config.learnable_act_scale
    assert q.record["reconstruction"]["units"][0] == "stem" and q.record["reconstruction"]["units"][-1] == "head"
    with pytest.raises(SynQError, match="resume=True"):
        q.reconstruct(output_dir=tmp_path / "work", progress=False)
    again = q.reconstruct(output_dir=tmp_path / "work", resume=True, progress=False)  # every unit already done
    assert q.record["reconstruction"]["resumed_units"] == 11
    x = _images(4, seed=1)
    with torch.no_grad():
        assert torch.equal(model_logits(model, x), model_logits(again, x))
    q.save_pretrained(tmp_path / "out")
    loaded = load_model(str(tmp_path / "out"))
    with torch.no_grad():
        assert torch.equal(model_logits(model, x), model_logits(loaded.model, x))
    assert loaded.synq_config.learnable_weight_scale and loaded.synq_config.layer_rule == "uniform"
    packed = (tmp_path / "out" / "model.safetensors").stat().st_size
    assert packed < 0.25 * (tmp_path / "teacher" / "model.safetensors").stat().st_size  # 3-bit codes
    card = (tmp_path / "out" / "README.md").read_text()
    assert "Block reconstruction" in card and "AdaRound" in card and "QDrop" in card
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["method"] == "reconstruct" and results["reconstruction"]["iterations_per_unit"] == 4


def test_quantizer_reconstructs_under_a_size_budget(tmp_path):
    """method="reconstruct" with size_budget: the bits are allocated from the synthetic images first, every layer
    is reconstructed at its chosen bits, and the saved folder stores the budget arithmetic and reloads exactly."""
    import timm
    from _synq_tiny import synthetic_dataset

    from synq_hf import SynQQuantizer
    from synq_hf.hub.loading import load_model
    from synq_hf.mixed import SizeModel
    from synq_hf.pipeline import LoadedModel

    torch.manual_seed(0)
    teacher = trained_batchnorm(timm.create_model("cifar_resnet20", num_classes=10).eval())
    loaded = LoadedModel(teacher, "cifar_resnet20", "timm", "cnn", {"input_size": (3, 32, 32), "mean": (0.5,) * 3,
                                                                     "std": (0.5,) * 3}, 10)
    config = SynQConfig(size_budget="w3", a_bits=4, method="reconstruct", reconstruct_iterations=2,
                        reconstruct_batch_size=4, reconstruct_num_images=8, calibration_num_images=8,
                        calibration_batch_size=4, sensitivity_num_images=8)
    q = SynQQuantizer(loaded, config, device="cpu")
    model = q.quantize(synthetic_dataset(8), output_dir=tmp_path / "work", progress=False)
    chosen = q.config.layer_w_bits
    assert q.mixed_plan is not None and set(chosen) == set(q.mixed_size.numel) and len(set(chosen.values())) > 1
    bits = {n: m.weight_quantizer.bits for n, m in model.named_modules() if isinstance(m, (QuantConv2d, QuantLinear))}
    assert bits == chosen
    assert q.mixed_plan.weight_bytes <= SizeModel.of(teacher, config).total_bytes({n: 3 for n in chosen})
    q.save_pretrained(tmp_path / "out")
    x = _images(4, seed=1)
    with torch.no_grad():
        assert torch.equal(model_logits(model, x), model_logits(load_model(str(tmp_path / "out")).model, x))
    assert "mixed_precision" in json.loads((tmp_path / "out" / "results.json").read_text())


def test_synq_terms_run_at_the_last_block_and_in_the_network_phase():
    teacher, images = _teacher(), _images()
    labels = torch.arange(8) % 10
    for stage, last in (("last_block", "head"), ("network", "synq-network")):
        config = _config(reconstruct_synq=True, reconstruct_synq_stage=stage, reconstruct_synq_steps=3)
        model, report = reconstruct_model(teacher, images, config, labels=labels, progress=False)
        assert report.units[-1]["unit"] == last
        losses = {k for u in report.units for k in u["final_losses"]}
        assert {"ce", "cam"} <= losses
        for m in model.modules():  # every weight still on its grid
            if isinstance(m, QuantConv2d):
                assert torch.equal(m.weight_quantizer(m.weight), m.weight)
    with pytest.raises(SynQError, match="label"):
        reconstruct_model(teacher, images, _config(reconstruct_synq=True), progress=False)


@pytest.mark.parametrize(("changes", "copies"), [
    ({}, "raw"),
    ({"reconstruct_synq": True, "reconstruct_synq_images": "filtered"}, "filtered"),
    ({"reconstruct_synq": True}, "both"),  # a CNN's default
    ({"reconstruct_synq": True, "reconstruct_synq_images": "raw"}, "raw"),  # a ViT's default
    ({"reconstruct_synq": True, "reconstruct_synq_images": "both", "lpf_d0": 0.0}, "raw"),
])
def test_synq_on_top_reconstructs_on_the_filtered_images_or_on_both(monkeypatch, changes, copies):
    """What each setting feeds calibration, SynQ's terms and the units: plain reconstruction the raw images;
    + SynQ the low-pass filtered ones, or (``reconstruct_synq_images="both"``) the raw ones followed by their filtered
    copies, labels repeated, the ranges calibrated on the raw ones as in plain reconstruction."""
    from synq_hf.lowpass import low_pass_filter
    from synq_hf.reconstruction import api

    config, images, labels = _config(**changes), _images(12), torch.arange(12) % 10
    seen: dict[str, torch.Tensor] = {}

    class Stop(Exception):
        pass

    def fake_calibrate(student, batches, **kwargs):  # noqa: ANN001, ANN003, ANN202
        seen["calibration"] = torch.cat(list(batches))

    class Terms(api.SynQTerms):
        def __init__(self, teacher, images, labels, config, **kwargs):  # noqa: ANN001, ANN003
            seen["labels"] = labels
            super().__init__(teacher, images, labels, config, **kwargs)

    def fake_reconstruct(teacher, student, images, config, **kwargs):  # noqa: ANN001, ANN003, ANN202
        seen["images"] = images
        raise Stop

    monkeypatch.setattr(api, "calibrate", fake_calibrate)
    monkeypatch.setattr(api, "SynQTerms", Terms)
    monkeypatch.setattr(api, "reconstruct", fake_reconstruct)
    with pytest.raises(Stop):
        api.reconstruct_model(_teacher(), images, config, labels=labels, progress=False)
    raw, low = images[:8], low_pass_filter(images[:8], config.lpf_d0 or 1.0)
    expected = {"raw": raw, "filtered": low, "both": torch.cat([raw, low])}[copies]
    assert torch.equal(seen["images"], expected)
    assert torch.equal(seen["calibration"], low if copies == "filtered" else raw)
    if "labels" in seen:
        assert torch.equal(seen["labels"], labels[:8].repeat(2 if copies == "both" else 1))
    assert ("labels" in seen) == bool(config.reconstruct_synq)


def test_synq_last_block_on_a_vit_trains_selective_ce_and_leaves_out_the_cam_term_it_cannot_train():
    """A ViT's Grad-CAM target (the last block's first LayerNorm) is fed by the block's cached input, so at the
    last-block stage the CAM term has nothing to train: CE acts, CAM is left out (not an autograd error)."""
    timm = pytest.importorskip("timm")
    vit = timm.create_model("test_vit", num_classes=10, img_size=32, patch_size=8).eval()
    config = SynQConfig(w_bits=4, a_bits=4, reconstruct_iterations=4, reconstruct_batch_size=4,
                        calibration_num_images=8, calibration_batch_size=4, reconstruct_num_images=8,
                        reconstruct_synq=True, reconstruct_synq_stage="last_block").resolve(family="vit", input_size=32)
    _, report = reconstruct_model(vit, _images(), config, labels=torch.arange(8) % 10, progress=False)
    last_block = [u for u in report.units if u["kind"] == "block"][-1]
    assert "ce" in last_block["final_losses"] and "cam" not in last_block["final_losses"]
    assert not any("ce" in u["final_losses"] for u in report.units if u is not last_block)


# -- the Genie layer rule -------------------------------------------------------------------------------------


def test_genie_rule_keeps_first_and_last_layer_at_8_bits():
    teacher = _teacher()
    q = quantize_model(copy.deepcopy(teacher), _config(w_bits=2, a_bits=4, layer_rule="genie"))
    assert q.conv1.weight_quantizer.bits == 8 and q.linear.weight_quantizer.bits == 8
    assert q.layer3[0].relu2.output_quantizer.bits == 8  # the classifier's input (through the pool)
    assert q.layer3[0].relu1.output_quantizer.bits == 4 and q.layer2[0].conv1.weight_quantizer.bits == 2
    uniform = quantize_model(copy.deepcopy(teacher), _config(w_bits=2, a_bits=4))
    assert uniform.conv1.weight_quantizer.bits == 2 and uniform.layer3[0].relu2.output_quantizer.bits == 4


def test_genie_rule_leaves_the_vit_image_float():
    import timm

    vit = timm.create_model("test_vit", num_classes=10, img_size=32, patch_size=8).eval()
    config = SynQConfig(w_bits=4, a_bits=4, layer_rule="genie").resolve(family="vit", input_size=32)
    q = quantize_model(copy.deepcopy(vit), config)
    assert q.patch_embed.proj.input_quantizer is None and q.patch_embed.proj.weight_quantizer.bits == 8
    assert q.head.input_quantizer.bits == 8 and q.head.weight_quantizer.bits == 8
    assert q.blocks[0].attn.qkv.weight_quantizer.bits == 4


# -- errors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("changes, match", [
    ({"reconstruct_qdrop": 1.5}, "reconstruct_qdrop"),
    ({"reconstruct_warmup": 1.0}, "reconstruct_warmup"),
    ({"reconstruct_iterations": 0}, "reconstruct_iterations"),
    ({"reconstruct_beta_start": 2.0, "reconstruct_beta_end": 20.0}, "decays"),
    ({"layer_rule": "genie", "first_layer_bits": 6}, "layer_rule='genie'"),
    ({"layer_rule": "brecq"}, "layer_rule"),
    ({"method": "qat"}, "method"),
])
def test_bad_settings_fail_in_one_line(changes, match):
    with pytest.raises(ConfigError, match=match) as info:
        SynQConfig(**changes)
    assert "\n" not in str(info.value)


def test_reconstruct_refuses_fixed_ranges_and_non_images():
    teacher, images = _teacher(), _images()
    student = quantize_model(copy.deepcopy(teacher), _config())
    calibrate(student, iter_batches(images, 4), progress=False)
    with pytest.raises(ConfigError, match="learnable_weight_scale"):
        reconstruct(teacher, student, images, _config(), progress=False)
    with pytest.raises(SynQError, match="images"):
        reconstruct_model(teacher, torch.randn(8, 3, 32), _config(), progress=False)


def test_config_version_7_migrates_older_configs_to_the_uniform_rule():
    from synq_hf.config import CONFIG_VERSION

    for version in (5, 6):
        old = {k: v for k, v in SynQConfig().to_dict().items() if k != "layer_rule"}
        old["version"] = version
        cfg = SynQConfig.from_dict(old)
        assert cfg.layer_rule == "uniform" and cfg.version == CONFIG_VERSION


def test_config_version_8_reads_older_reconstruction_with_synq_as_filtered_only():
    """Before version 8 reconstruction + SynQ ran on the filtered images only: an old config keeps that meaning
    (its card must not claim the raw images too); a new one resolves per family (CNN: raw and filtered; ViT: raw)."""
    from synq_hf.config import CONFIG_VERSION

    new = SynQConfig(reconstruct_synq=True)
    assert CONFIG_VERSION == 8 and new.reconstruct_synq_images is None
    assert new.resolve(family="cnn", input_size=32).reconstruct_synq_images == "both"
    assert new.resolve(family="vit", input_size=224).reconstruct_synq_images == "raw"
    for version in (6, 7):
        old = {k: v for k, v in new.to_dict().items() if k != "reconstruct_synq_images"}
        old["version"] = version
        assert SynQConfig.from_dict(old).resolve(family="cnn", input_size=32).reconstruct_synq_images == "filtered"
    assert SynQConfig.from_dict(new.to_dict()).resolve(family="cnn", input_size=32).reconstruct_synq_images == "both"


# -- the command line ----------------------------------------------------------------------------------------


def test_cli_quantize_method_reconstruct(tmp_path, capsys):
    import timm
    from _synq_tiny import synthetic_dataset
    from timm.models import save_for_hf

    from synq_hf.cli import main
    from synq_hf.hub.loading import load_model

    torch.manual_seed(0)
    save_for_hf(trained_batchnorm(timm.create_model("cifar_resnet20", num_classes=10).eval()),
                str(tmp_path / "teacher"), safe_serialization=True)
    synthetic_dataset(8).save_to_disk(str(tmp_path / "syn"))
    common = ["quantize", f"local-dir:{tmp_path / 'teacher'}", "--synthetic", str(tmp_path / "syn"), "--device", "cpu",
              "--no-progress", "--w-bits", "4", "--a-bits", "4", "--reconstruct-iterations", "2",
              "--reconstruct-num-images", "8", "--reconstruct-batch-size", "4", "--calibration-num-images", "8",
              "--calibration-batch-size", "4"]
    assert main([*common, "--method", "reconstruct", "--layer-rule", "genie", "--out", str(tmp_path / "a")]) == 0
    assert "saved RECONSTRUCT W4A4" in capsys.readouterr().out
    loaded = load_model(str(tmp_path / "a"))
    assert loaded.synq_config.layer_rule == "genie" and loaded.model.conv1.weight_quantizer.bits == 8
    assert not (tmp_path / "a.synq-work").exists()  # the work folder goes after a successful run
    # the method may come from --config as well
    assert main([*common, "--config", '{"method": "reconstruct"}', "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "results.json").read_text())["method"] == "reconstruct"
    capsys.readouterr()
    assert main([*common, "--method", "reconstruct", "--calibration-data", str(tmp_path / "syn"), "--out",
                 str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert "--calibration-data is for --method ptq; reconstruct is zero-shot" in err and "Traceback" not in err
