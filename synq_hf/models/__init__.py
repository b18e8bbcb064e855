"""Architectures synq_hf adds to timm's registry (imported by ``import synq_hf``)."""

from .cifar_resnet import (
    BasicBlock,
    CifarResNet,
    PadShortcut,
    cifar_resnet20,
    cifar_resnet32,
    cifar_resnet44,
    cifar_resnet56,
)
from .convmixer import convmixer_cifar
from .quantized_guard import GUARD_ARCHITECTURE  # noqa: F401  registers the guard with timm

__all__ = [
    "BasicBlock",
    "CifarResNet",
    "PadShortcut",
    "cifar_resnet20",
    "cifar_resnet32",
    "cifar_resnet44",
    "cifar_resnet56",
    "convmixer_cifar",
]
