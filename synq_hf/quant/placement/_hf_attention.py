"""transformers ViT/DeiT/Swin attention subclasses with explicit, fake-quantized scores.

Imported only when a transformers model is quantized (importing the modeling modules costs ~1 s).
The subclasses add no parameters and keep ``q_proj``/``k_proj``/``v_proj``/``o_proj`` names; they
ignore ``config._attn_implementation`` (eager/sdpa/flash) because the scores must be materialized
to be quantized, and return ``(output, attention_probs)`` like the eager path.
"""

from __future__ import annotations

import torch
from transformers.models.deit.modeling_deit import DeiTAttention, DeiTLayer
from transformers.models.swin.modeling_swin import SwinAttention, SwinLayer
from transformers.models.vit.modeling_vit import ViTAttention, ViTLayer

from ._attention import quantized_attention


def _heads(module: torch.nn.Module, hidden_states: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """q, k, v projections split into heads: (batch, heads, tokens, head_dim) each."""
    hidden_shape = (*hidden_states.shape[:-1], -1, module.head_dim)
    return tuple(
        proj(hidden_states).view(hidden_shape).transpose(1, 2)
        for proj in (module.q_proj, module.k_proj, module.v_proj)
    )


def _dropout_p(module: torch.nn.Module) -> float:
    return module.attention_dropout if module.training else 0.0


def _self_attention_forward(
    module: torch.nn.Module, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """ViT/DeiT self-attention: the eager computation with quantized q, k, v and scores."""
    q, k, v = _heads(module, hidden_states)
    out, probs = quantized_attention(
        module, q, k, v, scale=module.scaling, mask=attention_mask, dropout_p=_dropout_p(module)
    )
    out = out.transpose(1, 2).reshape(*hidden_states.shape[:-1], -1).contiguous()
    return module.o_proj(out), probs


class QuantViTAttention(ViTAttention):
    """``ViTAttention`` with explicit, fake-quantized scores."""

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return _self_attention_forward(self, hidden_states, attention_mask)


class QuantDeiTAttention(DeiTAttention):
    """``DeiTAttention`` with explicit, fake-quantized scores."""

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return _self_attention_forward(self, hidden_states, attention_mask)


class QuantSwinAttention(SwinAttention):
    """``SwinAttention`` with explicit, fake-quantized scores.

    The relative position bias and the shifted-window mask are added after the score quantizer.
    """

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch_windows, tokens = hidden_states.shape[:2]
        q, k, v = _heads(self, hidden_states)
        window_mask = None
        if attention_mask is not None:  # (num_windows, N, N) -> (batch * num_windows, 1, N, N)
            num_windows = attention_mask.shape[0]
            window_mask = (
                attention_mask.unsqueeze(1).unsqueeze(0)
                .expand(batch_windows // num_windows, -1, -1, -1, -1)
                .reshape(-1, 1, tokens, tokens)
            )
        out, probs = quantized_attention(
            self, q, k, v, scale=self.scaling, bias=self.relative_position_bias(), mask=window_mask,
            dropout_p=_dropout_p(self),
        )
        out = out.transpose(1, 2).reshape(batch_windows, tokens, -1).contiguous()
        return self.o_proj(out), probs


QUANT_ATTENTION: dict[type, type] = {
    ViTAttention: QuantViTAttention,
    DeiTAttention: QuantDeiTAttention,
    SwinAttention: QuantSwinAttention,
}

BLOCK_TYPES: tuple[type, ...] = (ViTLayer, DeiTLayer, SwinLayer)
