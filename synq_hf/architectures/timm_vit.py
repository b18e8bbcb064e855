"""timm ``VisionTransformer`` (ViT, DeiT, DeiT distilled): PSAQ-ViT placement and synthesis."""

from __future__ import annotations

from torch import nn

from ..errors import UnsupportedModelError
from ._vit import first_layernorm, psaq_vit_spec
from .placement import timm_vit as placement
from .spec import CamTarget


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


# Grad-CAM on the last block's first LayerNorm output, class tokens dropped
SPEC = psaq_vit_spec("timm_vit", "vit", "timm ViT/DeiT (VisionTransformer)", placement=placement,
                     matches=placement.is_vit, cam_target=cam_target, attention_types=_attention_types,
                     projection="proj")
