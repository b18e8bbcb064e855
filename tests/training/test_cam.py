"""Grad-CAM target resolution and single-forward maps equal to a reference Grad-CAM."""

import copy

import pytest
import timm
import torch
import transformers as T
from _grad_cam_reference import textbook_grad_cam
from torch import nn

import synq_hf  # noqa: F401  (registers cifar_resnet*)
from synq_hf.errors import ConfigError, UnsupportedModelError
from synq_hf.model_info import model_logits
from synq_hf.training.cam import (
    CamHook,
    compute_cam,
    grad_cam_map,
    resolve_cam_target,
    student_cam,
    teacher_forward_cam,
)


def _hf_vit():
    return T.ViTForImageClassification(T.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                   intermediate_size=64, image_size=32, patch_size=8, num_labels=5))


def _hf_deit():
    return T.DeiTForImageClassification(T.DeiTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                     intermediate_size=64, image_size=32, patch_size=8, num_labels=5))


def _hf_swin():
    return T.SwinForImageClassification(T.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1],
                                                     num_heads=[1, 1], window_size=4, num_labels=5))


_HF_RESNET = lambda: T.ResNetForImageClassification(T.ResNetConfig(  # noqa: E731
    embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=5))


@pytest.mark.parametrize(
    "build, layer, module, site, layout, prefix",
    [
        # CNNs, the authors' Grad-CAM: the last nn.Conv2d's output (before BN, the residual add and the ReLU)
        (lambda: timm.create_model("cifar_resnet20"), "last_conv", "layer3.2.conv2", "output", "nchw", 0),
        (lambda: timm.create_model("test_resnet"), "last_conv", "layer4.0.downsample.1", "output", "nchw", 0),
        (_HF_RESNET, "last_conv", "resnet.encoder.stages.1.layers.0.layer.2.convolution", "output", "nchw", 0),
        # a conv registered after the global pool (MobileNetV3's conv_head on the pooled 1x1 map) is skipped
        (lambda: timm.create_model("mobilenetv3_small_050"), "last_conv", "blocks.5.0.conv", "output", "nchw", 0),
        # CNNs, classic CAM: the global-pooling input
        (lambda: timm.create_model("cifar_resnet20"), "pool", "global_pool", "input", "nchw", 0),
        (lambda: timm.create_model("test_resnet"), "pool", "global_pool", "input", "nchw", 0),
        (_HF_RESNET, "pool", "resnet.pooler", "input", "nchw", 0),
        # transformers: their family's layer whatever cam_layer says
        (lambda: timm.create_model("test_vit"), "last_conv", "blocks.5.norm1", "output", "tokens", 1),
        (lambda: timm.create_model("test_vit"), "pool", "blocks.5.norm1", "output", "tokens", 1),
        (_hf_vit, "last_conv", "vit.layers.1.layernorm_before", "output", "tokens", 1),
        (_hf_deit, "last_conv", "deit.layers.1.layernorm_before", "output", "tokens", 2),
        (_hf_swin, "pool", "swin.encoder.layers.1", "output", "tokens", 0),
    ],
)
def test_resolve_cam_target(build, layer, module, site, layout, prefix):
    target = resolve_cam_target(build(), layer)
    assert (target.module, target.site, target.layout, target.num_prefix_tokens) == (module, site, layout, prefix)
    authors = layer == "last_conv" and layout == "nchw"
    assert (target.weight_floor, target.upsample) == ((1e-10, True) if authors else (None, False))


def test_default_cam_layer_is_the_configs():
    from synq_hf.config import SynQConfig

    model = timm.create_model("cifar_resnet20")
    assert resolve_cam_target(model) == resolve_cam_target(model, SynQConfig().cam_layer)
    with pytest.raises(ConfigError, match="cam_layer"):
        resolve_cam_target(model, "stage4")


def test_gradients_vary_in_space_at_the_last_conv_and_not_at_the_pool():
    """Why the layer matters: at the pooling input every position gets the same gradient (Grad-CAM = classic CAM);
    at the last conv's output (before BN, the residual add and the ReLU) the gradients differ between positions."""
    torch.manual_seed(0)
    model = timm.create_model("cifar_resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    spread = {}
    for layer in ("pool", "last_conv"):
        target = resolve_cam_target(model, layer)
        with CamHook(model, target, detach=False) as hook:
            logits = model_logits(model, x)
            act = hook.take()
        (g,) = torch.autograd.grad(logits[:, 0].sum(), act)
        spread[layer] = float((g - g.mean(dim=(2, 3), keepdim=True)).abs().max() / g.abs().max())
    assert spread["pool"] < 1e-5 and spread["last_conv"] > 0.1


def test_timm_swin_uses_last_stage_channels_last():
    m = timm.create_model("swin_tiny_patch4_window7_224", depths=(1, 1), num_heads=(1, 1), embed_dim=16,
                          img_size=56, window_size=7)
    target = resolve_cam_target(m)
    assert (target.module, target.layout, target.family) == ("layers.1", "nhwc", "swin")
    x = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    logits, cam = teacher_forward_cam(m.eval(), x, target, None)
    assert cam.shape == (2, 49)  # the last stage's 7x7 positions, channels last
    assert torch.allclose(cam, textbook_grad_cam(m, x, logits.argmax(1), target), atol=1e-5)


def test_unsupported_model_raises():
    with pytest.raises(UnsupportedModelError, match="Grad-CAM target"):
        resolve_cam_target(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)))


@pytest.mark.parametrize("layer", ["last_conv", "pool"])
@pytest.mark.parametrize("build", [lambda: timm.create_model("cifar_resnet20"),
                                   lambda: timm.create_model("test_vit", img_size=32), _hf_vit, _hf_swin])
def test_teacher_and_student_maps_match_a_textbook_grad_cam(build, layer):
    torch.manual_seed(0)
    model = build().eval()
    x = torch.randn(3, 3, 32, 32)
    target = resolve_cam_target(model, layer)
    classes = torch.tensor([0, 1, 2])
    ref = textbook_grad_cam(model, x, classes, target)
    assert ref.abs().sum() > 0
    if target.upsample:
        assert ref.shape == (3, 32 * 32)  # the authors' map is upsampled to the input

    # teacher path: frozen parameters, detached leaf at the target, no hook left, same logits
    teacher = copy.deepcopy(model).requires_grad_(False)
    logits_t, cam_t = teacher_forward_cam(teacher, x, target, classes)
    assert torch.allclose(cam_t, ref, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(logits_t, model_logits(teacher, x), atol=1e-5)
    assert all(p.grad is None for p in teacher.parameters())

    # student path: the map comes from the forward that produced the logits, and trains through the activation
    student = copy.deepcopy(model)
    with CamHook(student, target, detach=False) as hook:
        logits_s = model_logits(student, x)
        act = hook.take()
    cam_s = student_cam(logits_s, act, classes, target, size=tuple(x.shape[-2:]))
    assert torch.allclose(cam_s, ref, atol=1e-5)
    assert all(p.grad is None for p in student.parameters())  # autograd.grad leaves .grad alone
    ((cam_s - torch.rand_like(cam_s)) ** 2).mean().backward()
    first = next(p for p in student.parameters() if p.requires_grad)
    assert first.grad is not None and first.grad.abs().sum() > 0
    for m in list(teacher.modules()) + list(student.modules()):
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_the_authors_clamp_drops_channels_with_negative_weights():
    """Channel weights below 1e-10 are clamped (the authors' Grad-CAM): a channel whose averaged gradient is
    negative no longer subtracts its activation; without the floor (classic Grad-CAM) it does."""
    from synq_hf.architectures.spec import CamTarget

    act = torch.zeros(1, 2, 2, 2)
    act[0, 0] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    act[0, 1] = torch.tensor([[4.0, 0.0], [0.0, 0.0]])
    grad = torch.tensor([1.0, -1.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2)
    plain = grad_cam_map(act, grad, CamTarget("x", "output", "nchw"))
    clamped = grad_cam_map(act, grad, CamTarget("x", "output", "nchw", weight_floor=1e-10))
    assert torch.allclose(plain, torch.tensor([[0.0, 2.0, 3.0, 4.0]]) / 4.0)  # 1 - 4 = -3 at pixel 0, ReLU'd
    assert torch.allclose(clamped, torch.tensor([[0.0, 1.0, 2.0, 3.0]]) / 3.0, atol=1e-6)  # channel 1 ~dropped
    up = grad_cam_map(act, grad, CamTarget("x", "output", "nchw", weight_floor=1e-10, upsample=True), size=(4, 4))
    assert up.shape == (1, 16) and float(up.min()) == 0.0 and abs(float(up.max()) - 1.0) < 1e-6


def test_argmax_target_when_no_labels():
    torch.manual_seed(0)
    model = timm.create_model("cifar_resnet20").eval().requires_grad_(False)
    x = torch.randn(2, 3, 32, 32)
    target = resolve_cam_target(model)
    logits, cam_arg = teacher_forward_cam(model, x, target, None)
    _, cam_lab = teacher_forward_cam(model, x, target, logits.argmax(1))
    assert torch.equal(cam_arg, cam_lab)
    assert cam_arg.min() >= 0 and cam_arg.max() <= 1


def test_minmax_normalize_is_bounded_on_flat_maps():
    from synq_hf.training.cam import minmax_normalize

    flat = torch.full((2, 16), 5.0, requires_grad=True)
    noisy = (flat + 1e-7 * torch.randn(2, 16)).detach().requires_grad_(True)
    out = minmax_normalize(noisy)
    assert float(out.max()) < 1e-3  # float noise on a flat map is not blown up to [0, 1]
    out.pow(2).sum().backward()
    assert float(noisy.grad.abs().max()) < 1e3  # and neither is its gradient (1 / (hi - lo) would be ~1e7)
    assert torch.equal(minmax_normalize(torch.zeros(3, 4)), torch.zeros(3, 4))
    real = torch.tensor([[0.0, 1.0, 3.0, 4.0]])
    assert torch.allclose(minmax_normalize(real), real / 4.0)  # a real map is normalized exactly as before


def test_grad_cam_of_almost_all_negative_evidence_has_a_bounded_gradient():
    """The divergence trigger: ReLU leaves a tiny positive bump of a mostly negative map; its plain min-max
    normalization has a gradient of 1 / (bump height). The floor from the pre-ReLU peak bounds it."""
    from synq_hf.architectures.spec import CamTarget
    from synq_hf.training.cam import grad_cam_map

    target = CamTarget("x", "input", "nchw")
    act = torch.ones(1, 2, 2, 2)
    act[0, 1] = 2.0  # channel 1 outweighs channel 0 everywhere (map -4) ...
    act[0, 0, 1, 1] = 2.0 + 1e-6  # ... except one pixel where the evidence is a hair above 0
    act = act.requires_grad_(True)
    grad = torch.tensor([1.0, -1.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2) * 4  # channel weights 4 and -4
    cam = grad_cam_map(act, grad, target)
    (g,) = torch.autograd.grad(cam.sum(), act)
    assert float(cam.max()) < 1e-3 and float(g.abs().max()) < 1e3  # plain min-max: a map of 1.0, gradient ~1e6


@pytest.mark.parametrize("build", [lambda: timm.create_model("test_vit", img_size=32)])
def test_vit_maps_are_neither_zero_nor_flat(build):
    """The ViT CAM target (the last block's first LayerNorm output) gives maps with structure, not the all-zero
    maps of the last block's output (only the class token reaches the head); measured on the shared ViT in
    BENCHMARKS.md (benchmarks/vit_gradcam.py)."""
    torch.manual_seed(0)
    model = build().eval()
    maps = compute_cam(model, torch.randn(6, 3, 32, 32), torch.arange(6) % 10)
    assert maps.shape[0] == 6 and maps.shape[1] > 1
    assert (maps.amax(dim=1) > 0.99).all()  # normalized peak: no all-zero map
    assert (maps.std(dim=1) > 0.05).all()  # not flat
