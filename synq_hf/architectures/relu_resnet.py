"""Plain ReLU ResNets (the CIFAR ResNet-20/56 teachers, timm ``resnet18``/``resnet50``): the authors' placement.

Quantizers sit after every ReLU module, as in SynQ's code, so the shared CIFAR numbers stay comparable
with the paper. Recognised only where that placement covers every layer input: each ReLU is its own
module (no reuse, no functional ReLU) and nothing but max-pooling and global pooling sits between a
ReLU and the next conv/linear.

``deploy_placement="int8"`` (opt-in, for integer runtimes) adds 8-bit quantizers where the authors' placement
leaves a conv output or a conv input float: the image, each block's residual branch (its last BN) and
projected shortcut before the Add, the stem's max-pool output and the classifier's pooled input. Then every
conv reads and writes integer codes, and onnxruntime fuses QLinearConv + QLinearAdd instead of float convs.
"""

from __future__ import annotations

from torch import nn

from ..quant.policy import LayerPolicy
from ._cnn import (
    CNN_RULES,
    blocks_by_class,
    first_last,
    has_batchnorm,
    last_conv_cam_target,
    pool_cam_target,
)
from .placement.cnn import DeploySite, apply_after_relu, apply_deploy_sites
from .spec import ArchSpec

_PLAIN = frozenset({
    "ResNet", "CifarResNet", "BasicBlock", "Bottleneck", "PadShortcut", "Sequential", "Conv2d", "BatchNorm2d",
    "ReLU", "MaxPool2d", "Identity", "SelectAdaptivePool2d", "AdaptiveAvgPool2d", "Flatten", "Linear", "Dropout",
})


def matches(model: nn.Module) -> bool:
    """synq_hf's ``CifarResNet``, or a timm ``ResNet`` built only from convs, BN, ReLU modules and pooling."""
    from timm.models.resnet import ResNet

    from ..models.cifar_resnet import CifarResNet

    if isinstance(model, CifarResNet):
        return True
    if not isinstance(model, ResNet) or not has_batchnorm(model):
        return False
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    return {type(m).__name__ for m in model.modules()} <= _PLAIN and len({id(m) for m in relus}) == len(relus)


DEPLOY_BITS = 8
"""Bit-width of the ``deploy_placement="int8"`` quantizers at any ``a_bits``: integer runtimes keep the residual
stream, the image and the classifier input in 8 bits (uint8 QLinearAdd/QLinearConv), and 8 bits there cost
almost no accuracy where a_bits-bit residual sums would (the low-bit ReLU outputs keep ``a_bits``)."""

_BRANCH_END = {"BasicBlock": "bn2", "Bottleneck": "bn3"}  # block class -> last module of its residual branch
_SHORTCUTS = ("shortcut", "downsample")  # CifarResNet, timm


def deploy_sites(model: nn.Module) -> list[DeploySite]:
    """Where ``deploy_placement="int8"`` adds quantizers: the first conv's input, max-pool outputs, each block's
    last BN and non-identity shortcut outputs, the classifier's input."""
    first, last = first_last(model)
    sites: list[DeploySite] = [(first, "input")] if first else []
    for name, m in model.named_modules():
        if isinstance(m, nn.MaxPool2d):
            sites.append((name, "output"))
        kind = next((c.__name__ for c in type(m).__mro__ if c.__name__ in _BRANCH_END), None)
        if not name or kind is None:
            continue
        sites.append((f"{name}.{_BRANCH_END[kind]}", "output"))
        for attr in _SHORTCUTS:
            shortcut = getattr(m, attr, None)
            if isinstance(shortcut, nn.Module) and not isinstance(shortcut, nn.Identity):
                sites.append((f"{name}.{attr}", "output"))
    return sites + ([(last, "input")] if last else [])


def deploy(model: nn.Module, policy: LayerPolicy) -> None:
    """Add the integer-runtime quantizers (``DEPLOY_BITS`` bits) at :func:`deploy_sites`."""
    apply_deploy_sites(model, policy, deploy_sites(model), DEPLOY_BITS)


SPEC = ArchSpec(
    name="relu_resnet",
    family="cnn",
    description="plain ReLU ResNets: CIFAR ResNet-20/56, timm resnet18/34/50",
    matches=matches,
    place=apply_after_relu,
    placement="after_relu",
    first_last=first_last,
    cam_target=last_conv_cam_target,  # Grad-CAM at the last conv's output (the authors'); README, "Grad-CAM"
    pool_cam_target=pool_cam_target,  # cam_layer="pool": classic CAM at the global-pooling input
    synthesis="bn_stats",
    feature_blocks=blocks_by_class(frozenset({"BasicBlock", "Bottleneck"})),
    float_rules={
        **CNN_RULES,
        "max_pool": "the stem's max-pool of a quantized ReLU output (its values stay on the quantization grid)",
        "pooled_classifier": "the classifier reads the global average of the last quantized ReLU output "
                             "(the authors' placement)",
    },
    deploy=deploy,
)
