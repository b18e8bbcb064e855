"""What the ViT/DeiT/Swin specs share: the PSAQ-ViT spec factory, float rules, attention lookup, first-LayerNorm CAM
targets."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from torch import nn

from .spec import ArchSpec, CamTarget, Family

PSAQ_RULES: dict[str, str] = {
    "softmax": "attention probabilities (softmax output) and the softmax·v product stay float; the output "
               "projection's input quantizer takes it from there (PSAQ-ViT)",
    "layernorm": "LayerNorm and GELU inputs stay float; every Linear's input, q, k, v, the pre-softmax scores, "
                 "each block's output and the logits are quantized, and with vit_placement='psaq' (default) also "
                 "the image, the embeddings, the mid-block residual stream and the proj/fc2 outputs (PSAQ-ViT)",
}


def attention_by_type(
    types: Callable[[], tuple[type, ...]], proj: str
) -> Callable[[nn.Module], list[tuple[nn.Module, nn.Linear, int]]]:
    """An ``attention_modules`` function: ``(attention, output projection, heads)`` for modules of ``types()``."""

    def find(model: nn.Module) -> list[tuple[nn.Module, nn.Linear, int]]:
        wanted = types()
        found = []
        for m in model.modules():
            if isinstance(m, wanted):
                heads = getattr(m, "num_heads", None) or getattr(m, "num_attention_heads", None)
                found.append((m, getattr(m, proj), int(heads)))
        return found

    return find


def first_layernorm(block: nn.Module) -> str | None:
    """Name (inside ``block``) of its first LayerNorm: the ViT/DeiT Grad-CAM site."""
    return next((n for n, m in block.named_modules() if isinstance(m, nn.LayerNorm)), None)


def psaq_vit_spec(
    name: str,
    family: Family,
    description: str,
    *,
    placement: ModuleType,
    matches: Callable[[nn.Module], bool],
    cam_target: Callable[[nn.Module], CamTarget],
    attention_types: Callable[[], tuple[type, ...]],
    projection: str,
    feature_blocks: Callable[[nn.Module], list[str]] | None = None,
    channels_last_features: bool = False,
) -> ArchSpec:
    """The ``ArchSpec`` of one PSAQ-ViT family: ``placement`` (a ``quant.placement`` module) places the quantizers and
    names the first/last layers, synthesis matches patch similarity, ``projection`` names the attention output Linear.

    ``feature_blocks`` defaults to the names of ``placement.vit_blocks(model)``.
    """
    if feature_blocks is None:
        def feature_blocks(model: nn.Module) -> list[str]:
            return [block for block, _ in placement.vit_blocks(model)]

    return ArchSpec(
        name=name,
        family=family,
        description=description,
        matches=matches,
        place=placement.apply,
        placement="psaq_vit",
        first_last=placement.first_last,
        cam_target=cam_target,  # cam_layer (CNNs) does not apply to these families
        synthesis="patch_similarity",
        feature_blocks=feature_blocks,
        float_rules=PSAQ_RULES,
        attention_modules=attention_by_type(attention_types, projection),
        channels_last_features=channels_last_features,
    )
