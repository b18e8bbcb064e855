"""PSAQ-ViT placement for timm ``VisionTransformer`` (ViT, DeiT, DeiT distilled) and ``SwinTransformer``.

Weights of the patch-embedding conv and of every Linear (head included) get ``w_bits`` weight
quantizers (symmetric per-channel by default for this family). ``a_bits`` per-tensor activation
quantizers sit on the input of every Linear (qkv, proj, fc1, fc2, Swin's patch-merging reduction,
the head), on q, k, v and the pre-softmax scores (see ``_attention``), on every block's output and
on the logits. With ``vit_placement="psaq"`` (default, PSAQ-ViT's ``vit_quant.py``) also the image (the
patch conv's input), the patch-embedding output, the embeddings after the position add, the mid-block
residual stream and the outputs of the attention projection and fc2. GELU inputs and softmax outputs
stay float in both.

Attention modules become subclasses with an explicit forward (``QuantAttention``,
``QuantWindowAttention``); only quantizer submodules are added, so float parameter names (and
timm's strict loading of float checkpoints, once quantizer keys are dropped) are unchanged.
"""

from __future__ import annotations

import torch
from timm.layers import PatchEmbed
from timm.layers.attention import Attention, resolve_self_attn_mask
from timm.models.swin_transformer import SwinTransformer, SwinTransformerBlock, WindowAttention
from timm.models.vision_transformer import Block, ResPostBlock, VisionTransformer
from torch import nn

from ...errors import UnsupportedModelError
from ...quant.policy import LayerPolicy
from ._attention import quantized_attention
from ._common import PsaqSites, classifier_names, place_transformer_quantizers


class QuantAttention(Attention):
    """timm ``Attention`` with explicit, fake-quantized scores (same parameters and names)."""

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        B, N, _ = x.shape
        gate = self.gate(x).sigmoid() if getattr(self, "gate", None) is not None else None
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        mask = resolve_self_attn_mask(N, q, attn_mask, is_causal)
        x, _ = quantized_attention(self, q, k, v, scale=self.scale, mask=mask, dropout_p=self.attn_drop.p)
        x = x.transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim)
        x = self.norm(x)
        if gate is not None:
            x = x * gate
        return self.proj_drop(self.proj(x))


class QuantWindowAttention(WindowAttention):
    """timm Swin ``WindowAttention`` with explicit, fake-quantized scores.

    The relative position bias and the shifted-window mask are added to the scores after the
    score quantizer (PSAQ-ViT quantizes the q·k^T matmul output).
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B_, N, _ = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        window_mask = None
        if mask is not None:  # (num_windows, N, N) -> (B_, 1, N, N), windows vary fastest in B_
            num_win = mask.shape[0]
            window_mask = mask.view(1, num_win, 1, N, N).expand(B_ // num_win, -1, -1, -1, -1)
            window_mask = window_mask.reshape(B_, 1, N, N)
        x, _ = quantized_attention(
            self, q, k, v, scale=self.scale, bias=self._get_rel_pos_bias(), mask=window_mask,
            dropout_p=self.attn_drop.p,
        )
        x = x.transpose(1, 2).reshape(B_, N, -1)
        return self.proj_drop(self.proj(x))


class QuantBlock(Block):
    """timm ViT ``Block`` whose mid-block residual stream (after the attention add) is quantized (PSAQ-ViT)."""

    residual_quantizer: nn.Module

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), attn_mask=attn_mask, is_causal=is_causal)))
        x = self.residual_quantizer(x)
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class QuantResPostBlock(ResPostBlock):
    """timm ``ResPostBlock`` with its mid-block residual stream quantized."""

    residual_quantizer: nn.Module

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        x = x + self.drop_path1(self.norm1(self.attn(x, attn_mask=attn_mask, is_causal=is_causal)))
        x = self.residual_quantizer(x)
        return x + self.drop_path2(self.norm2(self.mlp(x)))


class QuantSwinBlock(SwinTransformerBlock):
    """timm ``SwinTransformerBlock`` with its mid-block residual stream quantized."""

    residual_quantizer: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        x = x + self.drop_path1(self._attn(self.norm1(x)))
        x = self.residual_quantizer(x).reshape(B, -1, C)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x.reshape(B, H, W, C)


QUANT_ATTENTION: dict[type, type] = {Attention: QuantAttention, WindowAttention: QuantWindowAttention}
VIT_BLOCKS = (Block, ResPostBlock)
QUANT_BLOCKS: dict[type, type] = {Block: QuantBlock, ResPostBlock: QuantResPostBlock,
                                  SwinTransformerBlock: QuantSwinBlock}


def psaq_sites(model: nn.Module) -> PsaqSites:
    """The image, embeddings, residual stream and branch outputs of a timm ViT/Swin (faithful placement)."""
    embeddings = ("patch_embed",) if isinstance(model, SwinTransformer) else ("patch_embed", "pos_drop")
    return PsaqSites("patch_embed.proj", embeddings, QUANT_BLOCKS, ("attn.proj", "mlp.fc2"))


def is_vit(model: nn.Module) -> bool:
    """timm ``VisionTransformer`` and subclasses (DeiT distilled); other ViT families are separate classes."""
    return isinstance(model, VisionTransformer)


def is_swin(model: nn.Module) -> bool:
    return isinstance(model, SwinTransformer)


def vit_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Transformer blocks by name: ``blocks.i`` (ViT) or ``layers.s.blocks.i`` (Swin)."""
    if isinstance(model, SwinTransformer):
        stages = enumerate(model.layers)
        return [(f"layers.{s}.blocks.{i}", b) for s, stage in stages for i, b in enumerate(stage.blocks)]
    return [(f"blocks.{i}", b) for i, b in enumerate(model.blocks)]


def head_names(model: nn.Module) -> tuple[str, ...]:
    """Classifier Linear names: ``pretrained_cfg['classifier']`` plus the class defaults (DeiT: two)."""
    cfg_names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    cfg_names = (cfg_names,) if isinstance(cfg_names, str) else tuple(cfg_names)
    defaults = ("head.fc",) if isinstance(model, SwinTransformer) else ("head", "head_dist")
    return classifier_names(model, tuple(dict.fromkeys(cfg_names + defaults)))


def first_last(model: nn.Module) -> tuple[str | None, str | None]:
    """Patch-embedding conv (``pretrained_cfg['first_conv']``) and the (first) classifier Linear."""
    modules = dict(model.named_modules())
    first = (getattr(model, "pretrained_cfg", None) or {}).get("first_conv")
    if not isinstance(modules.get(first), nn.Conv2d):
        first = "patch_embed.proj"
    heads = head_names(model)
    return first, (heads[0] if heads else None)


def _check_supported(model: nn.Module) -> None:
    """Refuse variants whose attention or stem this placement does not cover (before any change)."""
    kind = type(model).__name__
    if not isinstance(getattr(model, "patch_embed", None), PatchEmbed):
        raise UnsupportedModelError(f"{kind}: only the plain patch-embedding stem is supported (not hybrids)")
    if getattr(model, "attn_pool", None) is not None:
        raise UnsupportedModelError(f"{kind}: attention pooling heads (global_pool 'map'/'prr') unsupported")
    block_types = (SwinTransformerBlock,) if isinstance(model, SwinTransformer) else VIT_BLOCKS
    attn_type = WindowAttention if isinstance(model, SwinTransformer) else Attention
    for name, block in vit_blocks(model):
        attn = getattr(block, "attn", None)
        if type(block) not in block_types or type(attn) is not attn_type:
            raise UnsupportedModelError(
                f"{kind}: block {name} ({type(block).__name__} with {type(attn).__name__}) is not supported; "
                f"supported are {', '.join(t.__name__ for t in block_types)} with timm {attn_type.__name__}"
            )
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if convs != ["patch_embed.proj"]:
        raise UnsupportedModelError(f"{kind}: expected one conv (patch_embed.proj), found {convs}")


def apply(model: nn.Module, policy: LayerPolicy) -> None:
    """Insert the PSAQ-ViT quantizers in place (see the module docstring)."""
    _check_supported(model)
    heads = head_names(model)
    block_names = {name for name, _ in vit_blocks(model)}
    psaq = psaq_sites(model) if policy.config.vit_placement == "psaq" else None
    place_transformer_quantizers(model, policy, heads=heads, attention_classes=QUANT_ATTENTION,
                                 is_block=lambda name, module: name in block_names, psaq=psaq)


