"""What the ViT/DeiT/Swin specs share: PSAQ-ViT float rules, attention lookup, first-LayerNorm CAM targets."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

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
