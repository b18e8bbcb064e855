"""LayerNorm/GroupNorm CNNs (ConvNeXt from timm or transformers, EfficientNet-GN/LN, MambaOut).

Quantizer placement is the layer-input one of the BatchNorm CNNs. There are no BatchNorm statistics
to match and no attention for PSAQ-ViT, so synthesis refuses these teachers at once (one line);
quantize them with synthetic images made elsewhere (``quantize(synthetic=...)``, ``--synthetic DIR``).
"""

from __future__ import annotations

from torch import nn

from ._cnn import CNN_RULES, blocks_by_class, first_last, last_conv_cam_target, pool_cam_target
from .placement.cnn import apply_layer_inputs
from .spec import ArchSpec, CamTarget

_TIMM = ("ConvNeXt", "MambaOut", "EfficientNet")
_HF = ("ConvNextForImageClassification", "ConvNextV2ForImageClassification")


def matches(model: nn.Module) -> bool:
    """timm ``ConvNeXt``/``MambaOut``/``EfficientNet`` without BatchNorm, transformers ConvNeXt (V1, V2)."""
    mro = {c.__name__ for c in type(model).__mro__}
    timm_model = any(c.__module__.startswith("timm.") for c in type(model).__mro__)
    return bool(mro & set(_HF)) or (timm_model and bool(mro & set(_TIMM)))


def classic_cam_target(model: nn.Module) -> CamTarget:
    """``cam_layer="pool"``: timm's ``head.global_pool`` input; transformers ConvNeXt: the last stage's (B, C, H, W)
    output, which its pooler averages."""
    base = getattr(model, "convnext", None) or getattr(model, "convnextv2", None)
    if base is not None:
        prefix = "convnext" if hasattr(model, "convnext") else "convnextv2"
        return CamTarget(f"{prefix}.encoder.stages.{len(base.encoder.stages) - 1}", "output", "nchw", 0, "cnn")
    return pool_cam_target(model)


SPEC = ArchSpec(
    name="norm_cnn",
    family="cnn",
    description="LayerNorm/GroupNorm CNNs: ConvNeXt (timm, transformers), EfficientNet-GN/LN, MambaOut "
                "(quantization with given synthetic images; no synthesis)",
    matches=matches,
    place=apply_layer_inputs,
    placement="layer_inputs",
    first_last=first_last,
    cam_target=last_conv_cam_target,  # Grad-CAM at the last conv's output (the last block's depthwise conv)
    pool_cam_target=classic_cam_target,  # cam_layer="pool": classic CAM at the pooling input
    synthesis=None,
    synthesis_hint="it has no BatchNorm statistics to match and no attention for patch-similarity synthesis; "
                   "quantize it with synthetic images made elsewhere (quantize(synthetic=...), --synthetic DIR)",
    feature_blocks=blocks_by_class(frozenset({"ConvNeXtBlock", "ConvNextLayer", "ConvNextV2Layer", "MambaOutBlock",
                                              "InvertedResidual", "DepthwiseSeparableConv"})),
    float_rules=dict(CNN_RULES),
)
