"""One table of architectures drives placement, coverage, synthesis, Grad-CAM, HAST blocks and save/reload.

In the spirit of timm's ``test_models.py``: random weights, small inputs. Adding an architecture to
``synq_hf.architectures`` means one row here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import timm
import torch
import transformers as T
from _grad_cam_reference import textbook_grad_cam
from torch import nn

from synq_hf import SynQConfig
from synq_hf.apply import calibrate, quantize_model
from synq_hf.architectures import find_spec, get_spec
from synq_hf.errors import UnsupportedModelError
from synq_hf.model_info import model_logits
from synq_hf.quant import QuantConv2d, QuantLinear, coverage_report
from synq_hf.quant.layers import OutputQuantized
from synq_hf.synthesis import generate_synthetic
from synq_hf.training.cam import compute_cam, resolve_cam_target
from synq_hf.training.extras import feature_modules

W4A4 = SynQConfig(w_bits=4, a_bits=4)


@dataclass(frozen=True)
class Arch:
    id: str
    build: Callable[[], nn.Module]
    size: int
    spec: str
    library: str = "timm"
    reload: bool = False  # save_quantized + load_quantized round trip (needs a model timm/transformers can rebuild)


def _timm(name: str, **kwargs) -> Callable[[], nn.Module]:
    return lambda: timm.create_model(name, pretrained=False, num_classes=10, **kwargs)


def _convmixer() -> nn.Module:
    model = timm.create_model("convmixer_cifar", num_classes=10, dim=32, depth=2, kernel_size=3)
    assert any(isinstance(m, nn.GELU) for m in model.modules())  # GELU and depthwise convs
    return model


def _torchvision_resnet18() -> nn.Module:
    import torchvision

    return torchvision.models.resnet18(num_classes=10)


_VIT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
            patch_size=8, num_labels=10)

ARCHS = [
    Arch("cifar_resnet20", lambda: timm.create_model("cifar_resnet20", num_classes=10), 32, "relu_resnet"),
    Arch("resnet18", _timm("resnet18"), 32, "relu_resnet"),
    Arch("mobilenetv2_100", _timm("mobilenetv2_100"), 32, "bn_cnn"),
    Arch("mobilenetv3_large_100", _timm("mobilenetv3_large_100"), 32, "bn_cnn"),
    Arch("efficientnet_b0", _timm("efficientnet_b0"), 32, "bn_cnn"),
    Arch("regnetx_002", _timm("regnetx_002"), 32, "bn_cnn"),
    Arch("convmixer_small", _convmixer, 32, "bn_cnn"),
    Arch("deit_tiny", _timm("deit_tiny_patch16_224", img_size=32), 32, "timm_vit"),
    Arch("swin_tiny", _timm("swin_tiny_patch4_window7_224", img_size=64, window_size=2), 64, "timm_swin"),
    Arch("test_resnet", _timm("test_resnet"), 160, "bn_cnn", reload=True),
    Arch("test_efficientnet", _timm("test_efficientnet"), 160, "bn_cnn", reload=True),
    Arch("test_convnext", _timm("test_convnext"), 160, "norm_cnn", reload=True),
    Arch("test_byobnet", _timm("test_byobnet"), 160, "bn_cnn", reload=True),
    Arch("test_maxvit", _timm("test_maxvit"), 160, "bn_cnn"),
    Arch("test_vit", _timm("test_vit"), 160, "timm_vit", reload=True),
    Arch("torchvision_resnet18", _torchvision_resnet18, 32, "bn_cnn"),
    Arch("hf_vit", lambda: T.ViTForImageClassification(T.ViTConfig(**_VIT)), 32, "hf_vit", "transformers", True),
    Arch("hf_deit", lambda: T.DeiTForImageClassification(T.DeiTConfig(**_VIT)), 32, "hf_vit", "transformers"),
    Arch("hf_swin", lambda: T.SwinForImageClassification(T.SwinConfig(image_size=32, patch_size=4, embed_dim=16,
         depths=[1, 1], num_heads=[1, 1], window_size=4, num_labels=10)), 32, "hf_swin", "transformers", True),
    Arch("hf_resnet", lambda: T.ResNetForImageClassification(T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16],
         depths=[1, 1], num_labels=10)), 32, "bn_cnn", "transformers", True),
    Arch("hf_convnext", lambda: T.ConvNextForImageClassification(T.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1],
         num_stages=2, num_labels=10)), 32, "norm_cnn", "transformers"),
]
UNSUPPORTED = [("test_nfnet", _timm("test_nfnet")), ("test_vit_relpos", _timm("test_vit_relpos"))]


def _float(arch: Arch) -> nn.Module:
    torch.manual_seed(0)
    model = arch.build()
    for m in model.modules():  # timm zero-inits some BN/LayerScale gammas; keep every path alive
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.uniform_(m.weight, 0.5, 1.5)
    return model.eval()


def _images(arch: Arch, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, arch.size, arch.size, generator=torch.Generator().manual_seed(1))


@pytest.fixture(params=ARCHS, ids=[a.id for a in ARCHS])
def arch(request: pytest.FixtureRequest, one_thread: None) -> Arch:
    return request.param


def test_spec_placement_and_complete_coverage(arch: Arch) -> None:
    """The expected spec; every conv/linear has 4-bit weights and a 4-bit input or a named rule; no gaps."""
    model = _float(arch)
    spec = get_spec(model)
    assert spec.name == arch.spec
    x = _images(arch)
    q = quantize_model(model, W4A4, example_input=x[:1])
    report = coverage_report(q)
    assert report["traced"] and report["gaps"] == [] and report["architecture"] == arch.spec
    layers = {e["name"]: e for e in report["layers"]}
    quantized = {n for n, m in q.named_modules() if isinstance(m, (QuantConv2d, QuantLinear))}
    assert quantized and set(layers) == quantized  # nothing weighted is left float
    for name, entry in layers.items():
        assert entry["weight_bits"] == 4, name
        if entry["input_bits"] is None:
            assert entry["input_rule"] in spec.rules(), name  # a float input cites a rule of the spec
        else:
            assert entry["input_bits"] == 4, name
            assert entry["input_rule"] is None or entry["input_rule"] in spec.rules(), name  # e.g. pooled
    float_inputs = [n for n, e in layers.items() if e["input_bits"] is None]
    # only the layer reading the image; PSAQ-ViT's placement (ViT/Swin default) quantizes the image too
    assert float_inputs == ([] if spec.placement == "psaq_vit" else [spec.first_last(model)[0]])
    if spec.placement == "after_relu":
        assert not any(isinstance(m, (QuantConv2d, QuantLinear)) and m.input_quantizer is not None
                       for m in q.modules())
    calibrate(q, [x], progress=False)  # every quantizer sees data: no late failure
    with torch.no_grad():
        assert torch.isfinite(model_logits(q, x)).all()


def test_synthesis_objective_or_immediate_error(arch: Arch) -> None:
    model = _float(arch)
    spec = get_spec(model)
    data_config = {"input_size": (3, arch.size, arch.size), "mean": (0.5,) * 3, "std": (0.5,) * 3}
    cfg = SynQConfig(synthesis_batch_size=2, synthesis_log_every=1)
    if spec.synthesis is None:
        start = time.perf_counter()
        with pytest.raises(UnsupportedModelError, match="cannot synthesize.*synthetic images made elsewhere"):
            generate_synthetic(model, cfg, data_config=data_config, num_classes=10, num_images=2, iterations=1,
                               progress=False)
        assert time.perf_counter() - start < 5
        return
    out = generate_synthetic(model, cfg, data_config=data_config, num_classes=10, num_images=2, iterations=2,
                             seed=0, progress=False)
    assert out.family == spec.family and out.pixels.shape == (2, 3, arch.size, arch.size)
    assert torch.isfinite(out.pixels).all() and out.history


def test_grad_cam_and_feature_blocks(arch: Arch) -> None:
    model = _float(arch)
    target = resolve_cam_target(model)
    assert target.family == get_spec(model).family
    images = _images(arch)
    cam = compute_cam(model, images)
    assert cam.dim() == 2 and cam.shape[0] == 2 and torch.isfinite(cam).all()
    assert float(cam.min()) >= 0.0 and float(cam.max()) <= 1.0
    with torch.no_grad():
        classes = model_logits(model, images).argmax(1)
    assert torch.allclose(cam, textbook_grad_cam(model, images, classes, target), atol=1e-4)  # the map, not a shape
    blocks = feature_modules(model)
    assert blocks and all(model.get_submodule(b) is not None for b in blocks)
    # the same names resolve on the quantized copy (quantized layers are in-place subclasses)
    q = quantize_model(model, W4A4, inplace=False, example_input=_images(arch)[:1])
    assert resolve_cam_target(q) == target
    assert all(isinstance(q.get_submodule(b), nn.Module) for b in blocks)


@pytest.mark.parametrize("arch_row", [a for a in ARCHS if a.reload], ids=[a.id for a in ARCHS if a.reload])
def test_save_reload_gives_identical_logits(arch_row: Arch, tmp_path, one_thread: None) -> None:
    from synq_hf.hub.checkpoint import load_quantized, save_quantized

    model = _float(arch_row)
    x = _images(arch_row)
    q = calibrate(quantize_model(model, W4A4, example_input=x[:1]), [x], progress=False)
    data_config = {"input_size": (3, arch_row.size, arch_row.size), "mean": (0.5,) * 3, "std": (0.5,) * 3,
                   "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center"}
    save_quantized(q, tmp_path, base_model=arch_row.id, library=arch_row.library, data_config=data_config)
    loaded = load_quantized(tmp_path)
    assert loaded.family == get_spec(model).family
    assert coverage_report(loaded.model)["counts"] == coverage_report(q)["counts"]
    with torch.no_grad():
        torch.testing.assert_close(model_logits(loaded.model, x), model_logits(q, x), rtol=0, atol=0)


@pytest.mark.parametrize(("name", "build"), UNSUPPORTED, ids=[n for n, _ in UNSUPPORTED])
def test_unsupported_architecture_fails_fast_naming_the_families(name: str, build: Callable[[], nn.Module]) -> None:
    model = build()
    start = time.perf_counter()
    assert find_spec(model) is None
    for call in (lambda: quantize_model(model, W4A4), lambda: resolve_cam_target(model)):
        with pytest.raises(UnsupportedModelError, match="supported are.*timm_vit.*relu_resnet.*bn_cnn"):
            call()
    assert time.perf_counter() - start < 5


def test_cifar_resnet20_keeps_the_authors_placement() -> None:
    """ResNet-20: weight quantizers on every conv/linear, one output quantizer per ReLU module, nothing else."""
    model = timm.create_model("cifar_resnet20", num_classes=10)
    relus = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    q = quantize_model(model, W4A4)
    assert [n for n, m in q.named_modules() if isinstance(m, OutputQuantized)] == relus
    assert [n for n, m in q.named_modules() if isinstance(m, (QuantConv2d, QuantLinear))] == layers
    assert all(m.input_quantizer is None for m in q.modules() if isinstance(m, (QuantConv2d, QuantLinear)))
    quantizer_keys = sorted(k for k in q.state_dict() if "quantizer" in k)
    acts = [f"{r}.output_quantizer.{b}" for r in relus for b in ("min_val", "max_val", "calibrated")]
    clips = [f"{n}.weight_quantizer.clip" for n in layers]  # the searched per-channel weight ranges
    assert quantizer_keys == sorted(acts + clips)


def test_reused_and_functional_activations_are_covered() -> None:
    """torchvision's shared ReLU module and a functional F.gelu still reach quantized layer inputs."""

    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
            self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
            self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = nn.functional.gelu(self.bn1(self.conv1(x)))
            x = nn.functional.relu(self.bn2(self.conv2(x)))
            return self.fc(self.pool(x).flatten(1))

    model = Functional().eval()
    q = quantize_model(model, W4A4, example_input=torch.randn(1, 3, 8, 8))
    layers = {e["name"]: e for e in coverage_report(q)["layers"]}
    assert layers["conv2"]["input_bits"] == 4 and layers["fc"]["input_bits"] == 4
    assert layers["conv1"]["input_rule"] == "model_input"


def test_a_gap_is_refused_or_warned() -> None:
    """A layer the config excludes is reported under its rule; a float layer without one is an error."""
    model = timm.create_model("test_resnet", num_classes=10)
    q = quantize_model(model, SynQConfig(exclude=["fc"]), inplace=False)
    assert coverage_report(q)["float"]["excluded"]["where"] == ["fc"]

    class Odd(nn.Module):  # a Linear subclass with its own forward: cannot be swapped silently
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
            self.head = type("ScaledLinear", (nn.Linear,), {"forward": lambda s, x: 2 * super(type(s), s).forward(x)})(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.bn(self.conv(x)).mean((2, 3)))

    with pytest.raises(UnsupportedModelError, match="head is a ScaledLinear"):
        quantize_model(Odd(), W4A4)


def test_the_psaq_vit_families_come_from_one_spec_factory() -> None:
    from synq_hf.architectures import SPECS, supported_families
    from synq_hf.architectures._vit import PSAQ_RULES, psaq_vit_spec
    from synq_hf.architectures.placement import timm_vit as placement

    supported_families()  # loads the built-in specs
    psaq = {s.name: s for s in SPECS if s.placement == "psaq_vit"}
    assert set(psaq) == {"timm_vit", "timm_swin", "hf_vit", "hf_swin"}
    for spec in psaq.values():
        assert (spec.synthesis, spec.float_rules, spec.family) == ("patch_similarity", PSAQ_RULES, spec.name[-4:].strip("_"))
        assert spec.channels_last_features == (spec.name == "timm_swin")  # timm Swin's stages are (B, H, W, C)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2)
    spec = psaq_vit_spec("x", "vit", "x", placement=placement, matches=placement.is_vit, cam_target=lambda m: None,
                         attention_types=lambda: (type(model.blocks[0].attn),), projection="proj")
    assert spec.feature_blocks(model) == psaq["timm_vit"].feature_blocks(model) == ["blocks.0", "blocks.1"]
    assert [proj for _, proj, _ in spec.attention_modules(model)] == [b.attn.proj for b in model.blocks]
