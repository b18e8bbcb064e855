"""timm ``SwinTransformer``: PSAQ-ViT placement (window attention), synthesis per window, NHWC stages."""

from __future__ import annotations

from torch import nn

from ._vit import psaq_vit_spec
from .placement import timm_vit as placement
from .spec import CamTarget


def _attention_types() -> tuple[type, ...]:
    from timm.models.swin_transformer import WindowAttention

    return (WindowAttention,)


def cam_target(model: nn.Module) -> CamTarget:
    """The last stage's output: a channels-last (B, H, W, C) map."""
    return CamTarget(f"layers.{len(model.layers) - 1}", "output", "nhwc", 0, "swin")


# Grad-CAM on the last stage's (B, H, W, C) output
SPEC = psaq_vit_spec("timm_swin", "swin", "timm Swin (SwinTransformer)", placement=placement,
                     matches=placement.is_swin, cam_target=cam_target, attention_types=_attention_types,
                     projection="proj", channels_last_features=True)
