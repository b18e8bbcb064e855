"""Plain ReLU ResNets (the CIFAR ResNet-20/56 teachers, timm ``resnet18``/``resnet50``): the authors' placement.

Quantizers sit after every ReLU module, as in SynQ's code, so the shared CIFAR numbers stay comparable
with the paper. Recognised only where that placement covers every layer input: each ReLU is its own
module (no reuse, no functional ReLU) and nothing but max-pooling and global pooling sits between a
ReLU and the next conv/linear.
"""

from __future__ import annotations

from torch import nn

from ..quant.placement.cnn import apply_after_relu
from ._cnn import CNN_RULES, blocks_by_class, first_last, has_batchnorm, pool_cam_target
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


SPEC = ArchSpec(
    name="relu_resnet",
    family="cnn",
    description="plain ReLU ResNets: CIFAR ResNet-20/56, timm resnet18/34/50",
    matches=matches,
    place=apply_after_relu,
    placement="after_relu",
    first_last=first_last,
    cam_target=pool_cam_target,
    synthesis="bn_stats",
    feature_blocks=blocks_by_class(frozenset({"BasicBlock", "Bottleneck"})),
    float_rules={
        **CNN_RULES,
        "max_pool": "the stem's max-pool of a quantized ReLU output (its values stay on the quantization grid)",
        "pooled_classifier": "the classifier reads the global average of the last quantized ReLU output "
                             "(the authors' placement)",
    },
)
