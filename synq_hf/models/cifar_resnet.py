"""CIFAR ResNet-20/32/44/56 (He et al. 2016, "option A" shortcut), registered with timm.

timm does not ship the CIFAR variant, but the shared teachers are saved in timm's Hub layout
(``config.json`` naming ``cifar_resnet20``/``cifar_resnet56`` + ``model.safetensors``); registering
the architectures here lets ``timm.create_model("local-dir:PATH", pretrained=True)`` load them.

Every ReLU is its own ``nn.ReLU`` module and the parameter-free shortcut is a module too, so a
quantizer that walks the module tree can place activation quantizers after each of them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

__all__ = ["CifarResNet", "BasicBlock", "PadShortcut"]

_STAGE_WIDTHS = (16, 32, 64)


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by 2 spatially and zero-pad ``pad`` channels on each side."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))

    def extra_repr(self) -> str:
        return f"pad={self.pad}"


class BasicBlock(nn.Module):
    """conv3x3 → BN → ReLU → conv3x3 → BN, plus the shortcut, then ReLU."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = PadShortcut(planes // 4)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32×32 inputs with timm's classifier conventions."""

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, ...), got {depth}")
        if global_pool not in ("avg", ""):
            raise ValueError(f"CifarResNet supports global_pool 'avg' or '', got {global_pool!r}")
        n = (depth - 2) // 6
        self.depth = depth
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.global_pool_type = global_pool
        self.num_features = self.head_hidden_size = _STAGE_WIDTHS[-1]
        self.grad_checkpointing = False

        self.conv1 = nn.Conv2d(in_chans, _STAGE_WIDTHS[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(_STAGE_WIDTHS[0])
        self.relu = nn.ReLU()
        in_planes = _STAGE_WIDTHS[0]
        self.feature_info = [dict(num_chs=in_planes, reduction=1, module="relu")]
        for stage, planes in enumerate(_STAGE_WIDTHS):
            stride = 1 if stage == 0 else 2
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            self.add_module(f"layer{stage + 1}", nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=planes, reduction=2**stage, module=f"layer{stage + 1}"))

        self.global_pool = nn.AdaptiveAvgPool2d(1) if global_pool == "avg" else nn.Identity()
        self.flatten = nn.Flatten(1) if global_pool == "avg" else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.linear: nn.Module = (
            nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        )
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise learning-rate decay (timm convention)."""
        return dict(stem=r"^conv1|bn1", blocks=r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute stage activations in backward to save memory (timm convention)."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False) -> nn.Module | str:
        """The final ``Linear`` (or its attribute name), as timm's ``get_classifier``."""
        return "linear" if name_only else self.linear

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head with a fresh ``Linear`` for ``num_classes`` (0 removes it)."""
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise ValueError(f"CifarResNet supports global_pool 'avg' or '', got {global_pool!r}")
            self.global_pool_type = global_pool
            self.global_pool = nn.AdaptiveAvgPool2d(1) if global_pool == "avg" else nn.Identity()
            self.flatten = nn.Flatten(1) if global_pool == "avg" else nn.Identity()
        self.num_classes = num_classes
        ref = self.conv1.weight
        self.linear = (
            nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype)
            if num_classes > 0
            else nn.Identity()
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and the three stages: an (N, 64, H/4, W/4) feature map."""
        x = self.relu(self.bn1(self.conv1(x)))
        stages = [self.layer1, self.layer2, self.layer3]
        if self.grad_checkpointing and not torch.jit.is_scripting():
            from timm.models import checkpoint_seq

            return checkpoint_seq(stages, x, flatten=True)
        for stage in stages:
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool, dropout, then the linear classifier unless ``pre_logits``."""
        x = self.flatten(self.global_pool(x))
        x = self.head_drop(x)
        return x if pre_logits else self.linear(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 10,
        "input_size": (3, 32, 32),
        "pool_size": (8, 8),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "conv1",
        "classifier": "linear",
        "license": "bsd-2-clause",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({f"cifar_resnet{d}": _cfg() for d in (20, 32, 44, 56)})


def _create(variant: str, depth: int, pretrained: bool, **kwargs: Any) -> CifarResNet:
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    return build_model_with_cfg(
        CifarResNet,
        variant,
        pretrained,
        feature_cfg=dict(flatten_sequential=False, out_indices=out_indices),
        depth=depth,
        **kwargs,
    )


@register_model
def cifar_resnet20(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-20 for CIFAR (3 blocks per stage, 0.27M params)."""
    return _create("cifar_resnet20", 20, pretrained, **kwargs)


@register_model
def cifar_resnet32(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-32 for CIFAR (5 blocks per stage)."""
    return _create("cifar_resnet32", 32, pretrained, **kwargs)


@register_model
def cifar_resnet44(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-44 for CIFAR (7 blocks per stage)."""
    return _create("cifar_resnet44", 44, pretrained, **kwargs)


@register_model
def cifar_resnet56(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-56 for CIFAR (9 blocks per stage, 0.85M params)."""
    return _create("cifar_resnet56", 56, pretrained, **kwargs)
