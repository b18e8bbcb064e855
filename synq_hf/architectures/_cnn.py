"""What the CNN specs share: first/last layer, the Grad-CAM targets (last conv, pooling input), block lookup."""

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


AUTHORS_CAM_WEIGHT_FLOOR = 1e-10
"""The authors' Grad-CAM clamps each channel weight (spatially averaged gradient) to at least this."""


def _global_pool(model: nn.Module) -> str | None:
    names = dict(model.named_modules())
    for name in ("global_pool", "head.global_pool"):
        if name in names:
            return name
    pools = [n for n, m in names.items() if isinstance(m, nn.AdaptiveAvgPool2d)]
    return pools[-1] if pools else None


def pool_cam_target(model: nn.Module) -> CamTarget:
    """``cam_layer="pool"``: the feature map entering global pooling, timm's ``global_pool`` (or
    ``head.global_pool``), else the last ``nn.AdaptiveAvgPool2d`` (torchvision, transformers ResNet).

    The gradient of a class score there is the same at every position (the pooling spreads it evenly), so
    Grad-CAM at this layer is exactly classic CAM (Zhou et al. 2016).
    """
    pool = _global_pool(model)
    if pool is None:
        raise UnsupportedModelError(
            f"cannot find a Grad-CAM target layer in {type(model).__name__}: expected a global average pool "
            "(timm `global_pool` or nn.AdaptiveAvgPool2d)"
        )
    return CamTarget(pool, "input", "nchw", 0, "cnn")


def last_conv_cam_target(model: nn.Module) -> CamTarget:
    """``cam_layer="last_conv"``, the authors' Grad-CAM: the output of the last ``nn.Conv2d`` in ``named_modules()``.

    That output comes before the conv's BatchNorm, the residual add and the ReLU, so the gradients of a class
    score vary in space (at the pooling input they do not). As the authors' code does, the channel weights are
    clamped to >= 1e-10 and the map is upsampled bilinearly to the input size. Convs registered after the global
    pool (a timm MobileNetV3 ``conv_head`` runs on the pooled 1×1 map) are skipped: their map has no space.
    """
    modules = list(model.named_modules())
    pool = _global_pool(model)
    stop = next((i for i, (n, _) in enumerate(modules) if n == pool), len(modules)) if pool else len(modules)
    convs = [n for n, m in modules[:stop] if isinstance(m, nn.Conv2d)]
    if not convs:
        raise UnsupportedModelError(
            f"cannot find a Grad-CAM target layer in {type(model).__name__}: it has no nn.Conv2d before its global pool"
        )
    return CamTarget(convs[-1], "output", "nchw", 0, "cnn", weight_floor=AUTHORS_CAM_WEIGHT_FLOOR, upsample=True)


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
