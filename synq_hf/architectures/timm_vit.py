"""timm ``VisionTransformer`` (ViT, DeiT, DeiT distilled): PSAQ-ViT placement and synthesis."""

from __future__ import annotations

from torch import nn

from ..errors import UnsupportedModelError
from ..quant.placement import timm_vit as placement
from ._vit import PSAQ_RULES, attention_by_type, first_layernorm
from .spec import ArchSpec, CamTarget


def _attention_types() -> tuple[type, ...]:
    from timm.layers.attention import Attention

    return (Attention,)


def cam_target(model: nn.Module) -> CamTarget:
    """The output of the last block's first LayerNorm (the last block's output only reaches the head via the
    class token, so its Grad-CAM is all zero)."""
    last = len(model.blocks) - 1
    ln = first_layernorm(model.blocks[last])
    if ln is None:
        raise UnsupportedModelError(f"{type(model).__name__}: block {last} has no LayerNorm for Grad-CAM")
    return CamTarget(f"blocks.{last}.{ln}", "output", "tokens", int(model.num_prefix_tokens), "vit")


SPEC = ArchSpec(
    name="timm_vit",
    family="vit",
    description="timm ViT/DeiT (VisionTransformer)",
    matches=placement.is_vit,
    place=placement.apply,
    placement="psaq_vit",
    first_last=placement.first_last,
    # Grad-CAM on the last block's first LayerNorm output, class tokens dropped; cam_layer (CNNs) does not apply
    cam_target=cam_target,
    synthesis="patch_similarity",
    feature_blocks=lambda model: [name for name, _ in placement.vit_blocks(model)],
    float_rules=PSAQ_RULES,
    attention_modules=attention_by_type(_attention_types, "proj"),
)
