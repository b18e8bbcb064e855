"""Every other BatchNorm CNN (MobileNetV2/V3, EfficientNet, RegNet, ConvMixer, ByobNet, torchvision and
transformers ResNets, BN hybrids such as MaxViT): BN-statistics synthesis, quantized layer inputs.

The input of every conv/linear is quantized, so GELU/SiLU/Hardswish outputs, functional activations,
reused ReLU modules and residual sums are all covered without listing activation types.
"""

from __future__ import annotations

from torch import nn

from ._cnn import (
    CNN_RULES,
    blocks_by_class,
    first_last,
    has_batchnorm,
    last_conv_cam_target,
    pool_cam_target,
)
from .placement.cnn import apply_layer_inputs
from .spec import ArchSpec

BLOCKS = frozenset({
    "BasicBlock", "Bottleneck", "InvertedResidual", "DepthwiseSeparableConv", "EdgeResidual", "Residual",
    "BottleneckBlock", "DarkBlock", "EdgeBlock", "MbConvBlock", "MaxxVitBlock", "ResNetBasicLayer",
    "ResNetBottleNeckLayer",
})


def matches(model: nn.Module) -> bool:
    """Any model with a BatchNorm layer that tracks running statistics (more specific specs are tried first)."""
    return has_batchnorm(model)


SPEC = ArchSpec(
    name="bn_cnn",
    family="cnn",
    description="other BatchNorm CNNs: MobileNetV2/V3, EfficientNet, RegNet, ConvMixer, ByobNet, MaxViT, "
                "torchvision and transformers ResNets",
    matches=matches,
    place=apply_layer_inputs,
    placement="layer_inputs",
    first_last=first_last,
    cam_target=last_conv_cam_target,  # Grad-CAM at the last conv's output (the authors'); README, "Grad-CAM"
    pool_cam_target=pool_cam_target,  # cam_layer="pool": classic CAM at the global-pooling input
    synthesis="bn_stats",
    feature_blocks=blocks_by_class(BLOCKS),
    float_rules={
        **CNN_RULES,
        "attention_matmuls": "in BN hybrids (MaxViT, CoAtNet) attention's q·kᵀ and softmax·v matmuls run in "
                             "float; their projections' inputs are quantized",
    },
)
