"""transformers ``SwinForImageClassification``: PSAQ-ViT placement, synthesis per window, token stages."""

from __future__ import annotations

from torch import nn

from ..quant.placement import hf_vit as placement
from ._vit import PSAQ_RULES, attention_by_type
from .spec import ArchSpec, CamTarget


def _attention_types() -> tuple[type, ...]:
    from transformers.models.swin.modeling_swin import SwinAttention

    return (SwinAttention,)


def cam_target(model: nn.Module) -> CamTarget:
    """The last stage's output tokens (B, N, C)."""
    return CamTarget(f"swin.encoder.layers.{len(model.swin.encoder.layers) - 1}", "output", "tokens", 0, "swin")


def feature_blocks(model: nn.Module) -> list[str]:
    return [f"swin.encoder.layers.{s}.blocks.{i}" for s, stage in enumerate(model.swin.encoder.layers)
            for i in range(len(stage.blocks))]


SPEC = ArchSpec(
    name="hf_swin",
    family="swin",
    description="transformers Swin image classifiers",
    matches=placement.is_swin,
    place=placement.apply,
    placement="psaq_vit",
    first_last=placement.first_last,
    cam_target=cam_target,  # Grad-CAM on the last stage's output tokens; cam_layer (CNNs) does not apply
    synthesis="patch_similarity",
    feature_blocks=feature_blocks,
    float_rules=PSAQ_RULES,
    attention_modules=attention_by_type(_attention_types, "o_proj"),
)
