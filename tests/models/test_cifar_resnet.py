"""CIFAR ResNets: architecture, timm conventions, and strict loading of the shared teachers."""

import pytest
import timm
import torch
from safetensors.torch import load_file
from torch import nn

import synq_hf  # noqa: F401  (registers the architectures)
from synq_hf.models.cifar_resnet import BasicBlock, CifarResNet, PadShortcut


@pytest.mark.parametrize("depth,blocks", [(20, 3), (32, 5), (44, 7), (56, 9)])
def test_registered_with_expected_depth(depth: int, blocks: int) -> None:
    model = timm.create_model(f"cifar_resnet{depth}")
    assert isinstance(model, CifarResNet)
    assert [len(getattr(model, f"layer{i}")) for i in (1, 2, 3)] == [blocks] * 3
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 1 == depth  # 6n+1 convs plus the linear head
    cfg = model.pretrained_cfg
    assert tuple(cfg["input_size"]) == (3, 32, 32)
    assert cfg["num_classes"] == 10 and cfg["crop_pct"] == 1.0 and cfg["interpolation"] == "bilinear"
    assert cfg["first_conv"] == "conv1" and cfg["classifier"] == "linear"
    assert tuple(cfg["mean"]) == pytest.approx((0.485, 0.456, 0.406))


def test_shapes_and_timm_conventions() -> None:
    model = timm.create_model("cifar_resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    feats = model.forward_features(x)
    assert feats.shape == (2, 64, 8, 8)
    assert model.forward_head(feats, pre_logits=True).shape == (2, 64)
    assert model(x).shape == (2, 10)
    assert model.get_classifier() is model.linear and model.get_classifier(name_only=True) == "linear"
    model.reset_classifier(100)
    assert model.num_classes == 100 and model(x).shape == (2, 100)
    model.reset_classifier(0)
    assert model(x).shape == (2, 64)
    assert timm.create_model("cifar_resnet20", num_classes=7)(x).shape == (2, 7)
    data_cfg = timm.data.resolve_model_data_config(timm.create_model("cifar_resnet20"))
    assert tuple(data_cfg["input_size"]) == (3, 32, 32)


def test_features_only() -> None:
    model = timm.create_model("cifar_resnet20", features_only=True)
    outs = model(torch.randn(1, 3, 32, 32))
    assert [o.shape[1] for o in outs] == [16, 16, 32, 64]
    assert [o.shape[-1] for o in outs] == [32, 32, 16, 8]


def test_every_relu_is_its_own_module() -> None:
    model = timm.create_model("cifar_resnet20")
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 1 + 2 * 9
    assert len({id(m) for m in relus}) == len(relus)
    assert all(
        isinstance(b.relu1, nn.ReLU) and isinstance(b.relu2, nn.ReLU)
        for b in model.modules()
        if isinstance(b, BasicBlock)
    )


def test_option_a_shortcut() -> None:
    x = torch.randn(2, 16, 8, 8)
    out = PadShortcut(8)(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert torch.count_nonzero(out[:, :8]) == 0 and torch.count_nonzero(out[:, 24:]) == 0
    block = timm.create_model("cifar_resnet20").layer2[0]
    assert isinstance(block.shortcut, PadShortcut) and block.shortcut.pad == 8
    assert not list(block.shortcut.parameters())
    assert isinstance(timm.create_model("cifar_resnet20").layer2[1].shortcut, nn.Identity)


def test_state_dict_keys_match_spec() -> None:
    keys = set(timm.create_model("cifar_resnet20").state_dict())
    assert {"conv1.weight", "bn1.weight", "bn1.running_mean", "linear.weight", "linear.bias"} <= keys
    assert {"layer3.2.conv2.weight", "layer2.0.bn1.running_var", "layer1.1.bn2.bias"} <= keys
    assert all(k.split(".")[0] in {"conv1", "bn1", "layer1", "layer2", "layer3", "linear"} for k in keys)


def test_bad_depth() -> None:
    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(depth=21)


@pytest.mark.smoke
@pytest.mark.parametrize("depth", [20, 56])
def test_teachers_load_strictly(shared_data, depth: int) -> None:
    folder = shared_data / "teachers" / f"cifar10-resnet{depth}"
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert isinstance(model, CifarResNet) and model.depth == depth
    saved = load_file(str(folder / "model.safetensors"))
    fresh = timm.create_model(f"cifar_resnet{depth}")
    result = fresh.load_state_dict(saved, strict=True)  # raises on any missing or extra key
    assert not result.missing_keys and not result.unexpected_keys
    state = model.state_dict()
    assert {k for k in state if not k.endswith("num_batches_tracked")} == set(saved)
    for k, v in saved.items():
        assert torch.equal(state[k], v), k
    assert model.pretrained_cfg.get("label_names", [None])[0] == "airplane"
