"""A CIFAR ConvMixer (GELU, depthwise convs; Trockman & Kolter 2022), registered with timm as ``convmixer_cifar``.

timm's own ConvMixer variants fix ``dim``/``depth``, so a small CIFAR model saved with
``save_for_hf(..., model_args=...)`` could not be rebuilt from its folder. ``convmixer_cifar`` defaults to
ConvMixer-256/8 (kernel 5, patch 2, 32x32 inputs) and takes ``dim``, ``depth``, ``kernel_size`` and
``patch_size`` from ``model_args``.
"""

from __future__ import annotations

from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.convmixer import ConvMixer

__all__ = ["convmixer_cifar"]

default_cfgs = generate_default_cfgs({
    "convmixer_cifar": {
        "num_classes": 10, "input_size": (3, 32, 32), "pool_size": None, "crop_pct": 1.0,
        "interpolation": "bilinear", "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.0", "classifier": "head",
    }
})


@register_model
def convmixer_cifar(pretrained: bool = False, **kwargs: Any) -> ConvMixer:
    """ConvMixer for 32x32 images (default 256 channels, 8 blocks, kernel 5, patch 2); override via kwargs."""
    args = {"dim": 256, "depth": 8, "kernel_size": 5, "patch_size": 2, "num_classes": 10, **kwargs}
    return build_model_with_cfg(ConvMixer, "convmixer_cifar", pretrained,
                                feature_cfg=dict(out_indices=3, feature_cls="getter"), **args)
