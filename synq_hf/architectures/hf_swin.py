"""transformers ``SwinForImageClassification``: PSAQ-ViT placement, synthesis per window, token stages."""

from __future__ import annotations

from torch import nn

from ._vit import psaq_vit_spec
from .placement import hf_vit as placement
from .spec import CamTarget


def _attention_types() -> tuple[type, ...]:
    from transformers.models.swin.modeling_swin import SwinAttention

    return (SwinAttention,)


def cam_target(model: nn.Module) -> CamTarget:
    """The last stage's output tokens (B, N, C)."""
    return CamTarget(f"swin.encoder.layers.{len(model.swin.encoder.layers) - 1}", "output", "tokens", 0, "swin")


def feature_blocks(model: nn.Module) -> list[str]:
    return [f"swin.encoder.layers.{s}.blocks.{i}" for s, stage in enumerate(model.swin.encoder.layers)
            for i in range(len(stage.blocks))]


# Grad-CAM on the last stage's output tokens
SPEC = psaq_vit_spec("hf_swin", "swin", "transformers Swin image classifiers", placement=placement,
                     matches=placement.is_swin, cam_target=cam_target, attention_types=_attention_types,
                     projection="o_proj", feature_blocks=feature_blocks)
