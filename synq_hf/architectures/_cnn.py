"""What the CNN specs share: first/last layer, the Grad-CAM target before global pooling, block lookup."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..errors import UnsupportedModelError
from .spec import CamTarget

CNN_RULES: dict[str, str] = {
    "elementwise": "elementwise ops (residual sums, squeeze-excitation gates, LayerScale) run in float; "
                   "their results are quantized where a conv/linear reads them",
}


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has a BatchNorm layer with running statistics (what BN-statistics synthesis matches)."""
    return any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None for m in model.modules()
    )


def layer_names(model: nn.Module) -> list[str]:
    """Names of the ``nn.Conv2d``/``nn.Linear`` layers in registration (for these CNNs: forward) order."""
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def first_last(model: nn.Module) -> tuple[str | None, str | None]:
    """First conv and classifier: timm's ``pretrained_cfg`` when it names real layers, else module order."""
    names = layer_names(model)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    first = cfg.get("first_conv") if cfg.get("first_conv") in names else (names[0] if names else None)
    classifier = cfg.get("classifier")
    last = classifier if classifier in names else (names[-1] if names else None)
    return first, last


def pool_cam_target(model: nn.Module) -> CamTarget:
    """The feature map entering global pooling: timm's ``global_pool`` (or ``head.global_pool``), else the
    last ``nn.AdaptiveAvgPool2d`` (torchvision, transformers ResNet)."""
    names = dict(model.named_modules())
    for name in ("global_pool", "head.global_pool"):
        if name in names:
            return CamTarget(name, "input", "nchw", 0, "cnn")
    pools = [n for n, m in names.items() if isinstance(m, nn.AdaptiveAvgPool2d)]
    if pools:
        return CamTarget(pools[-1], "input", "nchw", 0, "cnn")
    raise UnsupportedModelError(
        f"cannot find a Grad-CAM target layer in {type(model).__name__}: expected a global average pool "
        "(timm `global_pool` or nn.AdaptiveAvgPool2d)"
    )


def blocks_by_class(class_names: frozenset[str]) -> Callable[[nn.Module], list[str]]:
    """A ``feature_blocks`` function: modules whose class (quantized subclasses included) is named in ``class_names``."""

    def find(model: nn.Module) -> list[str]:
        found = []
        for name, m in model.named_modules():
            classes = {c.__name__ for c in type(m).__mro__}
            if name and classes & class_names:
                found.append(name)
        return found

    return find
