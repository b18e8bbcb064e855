"""timm ``SwinTransformer``: PSAQ-ViT placement (window attention), synthesis per window, NHWC stages."""

from __future__ import annotations

from torch import nn

from ..quant.placement import timm_vit as placement
from ._vit import PSAQ_RULES, attention_by_type
from .spec import ArchSpec, CamTarget


def _attention_types() -> tuple[type, ...]:
    from timm.models.swin_transformer import WindowAttention

    return (WindowAttention,)


def cam_target(model: nn.Module) -> CamTarget:
    """The last stage's output: a channels-last (B, H, W, C) map."""
    return CamTarget(f"layers.{len(model.layers) - 1}", "output", "nhwc", 0, "swin")


SPEC = ArchSpec(
    name="timm_swin",
    family="swin",
    description="timm Swin (SwinTransformer)",
    matches=placement.is_swin,
    place=placement.apply,
    placement="psaq_vit",
    first_last=placement.first_last,
    cam_target=cam_target,  # Grad-CAM on the last stage's (B, H, W, C) output; cam_layer (CNNs) does not apply
    synthesis="patch_similarity",
    feature_blocks=lambda model: [name for name, _ in placement.vit_blocks(model)],
    float_rules=PSAQ_RULES,
    attention_modules=attention_by_type(_attention_types, "proj"),
    channels_last_features=True,
)
