"""transformers ViT/DeiT/Swin attention subclasses with explicit, fake-quantized scores.

Imported only when a transformers model is quantized (importing the modeling modules costs ~1 s).
The subclasses add no parameters and keep ``q_proj``/``k_proj``/``v_proj``/``o_proj`` names; they
ignore ``config._attn_implementation`` (eager/sdpa/flash) because the scores must be materialized
to be quantized, and return ``(output, attention_probs)`` like the eager path.
"""

from __future__ import annotations

import torch
from transformers.models.deit.modeling_deit import DeiTAttention, DeiTLayer
from transformers.models.swin.modeling_swin import SwinAttention, SwinLayer, window_partition, window_reverse
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

def _vit_layer_forward(
    layer: torch.nn.Module, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, **kwargs: object
) -> torch.Tensor:
    """``ViTLayer``/``DeiTLayer`` forward with the mid-block residual stream quantized (PSAQ-ViT)."""
    attended, _ = layer.attention(layer.layernorm_before(hidden_states), attention_mask, **kwargs)
    hidden_states = layer.residual_quantizer(layer.dropout(attended) + hidden_states)
    return layer.dropout(layer.mlp(layer.layernorm_after(hidden_states))) + hidden_states


class QuantViTLayer(ViTLayer):
    """``ViTLayer`` with its mid-block residual stream quantized."""

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: object
    ) -> torch.Tensor:
        return _vit_layer_forward(self, hidden_states, attention_mask, **kwargs)


class QuantDeiTLayer(DeiTLayer):
    """``DeiTLayer`` with its mid-block residual stream quantized."""

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: object
    ) -> torch.Tensor:
        return _vit_layer_forward(self, hidden_states, attention_mask, **kwargs)


class QuantSwinLayer(SwinLayer):
    """``SwinLayer`` with its mid-block residual stream quantized (the rest is transformers' computation)."""

    def forward(
        self, hidden_states: torch.Tensor, input_dimensions: tuple[int, int], always_partition: bool = False,
        **kwargs: object,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not always_partition:
            self.set_shift_and_window_size(input_dimensions)
        height, width = input_dimensions
        batch_size, _, channels = hidden_states.size()
        shortcut = hidden_states
        hidden_states = self.layernorm_before(hidden_states).view(batch_size, height, width, channels)
        hidden_states, pad_values = self.maybe_pad(hidden_states, height, width)
        _, height_pad, width_pad, _ = hidden_states.shape
        windows = window_partition(self.cyclic_shift(hidden_states), self.window_size)
        windows = windows.view(-1, self.window_size * self.window_size, channels)
        attn_mask = self.get_attn_mask(height_pad, width_pad, dtype=hidden_states.dtype, device=windows.device)
        attention_output, attn_weights = self.attention(windows, attn_mask, **kwargs)
        attention_output = self.dropout(attention_output).view(-1, self.window_size, self.window_size, channels)
        attention_windows = self.cyclic_shift(
            window_reverse(attention_output, self.window_size, height_pad, width_pad), reverse=True
        )
        if pad_values[3] > 0 or pad_values[5] > 0:
            attention_windows = attention_windows[:, :height, :width, :].contiguous()
        attention_windows = attention_windows.view(batch_size, height * width, channels)
        hidden_states = self.residual_quantizer(shortcut + self.drop_path(attention_windows))
        layer_output = self.dropout(self.mlp(self.layernorm_after(hidden_states))) + hidden_states
        return layer_output, attn_weights


BLOCK_TYPES: tuple[type, ...] = (ViTLayer, DeiTLayer, SwinLayer)
QUANT_BLOCKS: dict[type, type] = {ViTLayer: QuantViTLayer, DeiTLayer: QuantDeiTLayer, SwinLayer: QuantSwinLayer}
