"""transformers ``ViTForImageClassification`` and ``DeiTForImageClassification(WithTeacher)``: PSAQ-ViT."""

from __future__ import annotations

from torch import nn

from ..errors import UnsupportedModelError
from ._vit import first_layernorm, psaq_vit_spec
from .placement import hf_vit as placement
from .spec import CamTarget


def _attention_types() -> tuple[type, ...]:
    from transformers.models.deit.modeling_deit import DeiTAttention
    from transformers.models.vit.modeling_vit import ViTAttention

    return (ViTAttention, DeiTAttention)


def _layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    base_name = model.config.model_type
    base = getattr(model, base_name)
    if getattr(base, "layers", None) is not None:
        return f"{base_name}.layers", base.layers
    return f"{base_name}.encoder.layer", base.encoder.layer


def _prefix_tokens(embeddings: nn.Module) -> int:
    return sum(1 for n, _ in embeddings.named_parameters(recurse=False) if n.endswith("_token") and n != "mask_token")


def cam_target(model: nn.Module) -> CamTarget:
    """The output of the last layer's first LayerNorm (``layernorm_before``), class/distillation tokens dropped."""
    prefix, layers = _layers(model)
    ln = first_layernorm(layers[-1])
    if ln is None:
        raise UnsupportedModelError(f"{type(model).__name__}: its last layer has no LayerNorm for Grad-CAM")
    base = getattr(model, model.config.model_type)
    return CamTarget(f"{prefix}.{len(layers) - 1}.{ln}", "output", "tokens", _prefix_tokens(base.embeddings), "vit")


def feature_blocks(model: nn.Module) -> list[str]:
    prefix, layers = _layers(model)
    return [f"{prefix}.{i}" for i in range(len(layers))]


# Grad-CAM on the last layer's layernorm_before output, class tokens dropped
SPEC = psaq_vit_spec("hf_vit", "vit", "transformers ViT/DeiT image classifiers", placement=placement,
                     matches=placement.is_vit, cam_target=cam_target, attention_types=_attention_types,
                     projection="o_proj", feature_blocks=feature_blocks)
