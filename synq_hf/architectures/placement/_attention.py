"""Explicit, fake-quantized scaled-dot-product attention shared by the ViT and Swin placements.

Fused attention kernels (SDPA, flash) hide the scores, so PSAQ-ViT's placement needs the scores
computed explicitly: q, k and v are each fake-quantized, ``scores = (q @ k^T) * scale`` is
fake-quantized (the matmul output, as PSAQ-ViT/FQ-ViT do), then any additive bias or mask
(Swin's relative position bias and shifted-window mask, a padding mask) is added in float, the
softmax runs in float32 and its output stays float, and ``probs @ v`` is returned unquantized
(the output projection's input quantizer takes it from there). Quantizing the scores before the
bias keeps Swin's -100 shift mask out of the score range.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...quant.policy import LayerPolicy

ATTENTION_QUANTIZERS = ("q_quantizer", "k_quantizer", "v_quantizer", "score_quantizer")


def add_attention_quantizers(module: nn.Module, policy: LayerPolicy, name: str) -> None:
    """Give attention module ``name`` its q/k/v/score activation quantizers (``a_bits`` of ``name``)."""
    bits = policy.a_bits(name)
    for attr in ATTENTION_QUANTIZERS:
        module.add_module(attr, policy.act_quantizer(f"{name}.{attr}", bits=bits))


def _apply_mask(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Add a float mask, or keep only positions where a boolean mask is True."""
    if mask.dtype == torch.bool:
        return scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return scores + mask


def quantized_attention(
    module: nn.Module,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float,
    bias: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention with quantized q, k, v and pre-softmax scores; returns ``(probs @ v, probs)``.

    ``q``, ``k``, ``v`` are (batch, heads, tokens, head_dim); ``module`` owns the quantizers named in
    ``ATTENTION_QUANTIZERS``. ``bias`` and ``mask`` broadcast against the (batch, heads, tokens,
    tokens) scores and are added after the score quantizer. Dropout on the probabilities is active
    only in training mode.
    """
    q = module.q_quantizer(q)
    k = module.k_quantizer(k)
    v = module.v_quantizer(v)
    scores = module.score_quantizer(torch.matmul(q, k.transpose(-2, -1)) * scale)
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        scores = _apply_mask(scores, mask)
    probs = scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype)
    if dropout_p > 0.0 and module.training:
        probs = F.dropout(probs, p=dropout_p, training=True)
    return torch.matmul(probs, v), probs
