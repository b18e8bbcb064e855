"""``ArchSpec``: everything the pipeline needs to know about one architecture family, and ``CamTarget``.

A spec says how to recognise the family (``matches``), its config defaults (``family``), where the
quantizers go (``place`` plus the ``placement`` kind and the ``float_rules`` that name what it leaves
in float on purpose), its first layer and classifier (``first_last``), the Grad-CAM target
(``cam_target``; CNNs also ``pool_cam_target``, the classic CAM of ``cam_layer="pool"``), the
synthesis objective (``synthesis``), the blocks the extras align and block reconstruction reconstructs one by one
(``feature_blocks``: a residual block, an MBConv, a ViT/Swin block), the attention modules PSAQ-ViT synthesis hooks
(``attention_modules``) and the extra
quantizers an integer runtime needs (``deploy``, opt-in through ``deploy_placement``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from torch import nn

if TYPE_CHECKING:
    from ..quant.policy import LayerPolicy

Family = Literal["cnn", "vit", "swin"]
Layout = Literal["nchw", "nhwc", "tokens"]
PlacementKind = Literal["after_relu", "layer_inputs", "psaq_vit"]
SynthesisKind = Literal["bn_stats", "patch_similarity"]


@dataclass(frozen=True)
class CamTarget:
    """Where Grad-CAM looks: the input or output of module ``module`` and how that tensor is laid out.

    ``tokens`` tensors are (B, N, C) with ``num_prefix_tokens`` class/distillation tokens first (dropped
    from the map); ``nchw`` is a CNN feature map; ``nhwc`` a channels-last map (timm Swin stages).
    ``weight_floor`` clamps the channel weights from below (the authors' Grad-CAM: 1e-10, so channels with
    negative evidence drop out) and ``upsample`` resizes the map bilinearly to the input before its min-max
    normalization (the authors' Grad-CAM; ``nchw`` only).
    """

    module: str
    site: Literal["input", "output"]
    layout: Layout
    num_prefix_tokens: int = 0
    family: str = "cnn"
    weight_floor: float | None = None
    upsample: bool = False


# rule id -> what it leaves in float and why; the coverage report cites these ids
COMMON_RULES: dict[str, str] = {
    "model_input": "the first layer reads the image itself (the normalized pixels stay float, as in the paper)",
    "excluded": "left float by the config's include/exclude globs",
}


@dataclass(frozen=True)
class ArchSpec:
    """One architecture family: recognition, defaults, placement, first/last layer, CAM, synthesis, blocks."""

    name: str
    family: Family
    description: str  # one phrase for "supported are ..." messages and the README table
    matches: Callable[[nn.Module], bool]
    place: Callable[[nn.Module, LayerPolicy], None]
    placement: PlacementKind
    first_last: Callable[[nn.Module], tuple[str | None, str | None]]
    cam_target: Callable[[nn.Module], CamTarget]  # the family's Grad-CAM layer (CNNs: ``cam_layer="last_conv"``)
    synthesis: SynthesisKind | None
    feature_blocks: Callable[[nn.Module], list[str]]
    float_rules: dict[str, str] = field(default_factory=dict)
    attention_modules: Callable[[nn.Module], list[tuple[nn.Module, nn.Linear, int]]] | None = None
    channels_last_features: bool = False  # block outputs are (B, H, W, C) (timm Swin)
    synthesis_hint: str = ""  # why synthesis is unavailable and what to do instead (when ``synthesis`` is None)
    # adds the quantizers of ``deploy_placement="int8"`` (integer runtimes) after ``place``; None: not offered
    deploy: Callable[[nn.Module, LayerPolicy], None] | None = None
    # CNNs: the target of ``cam_layer="pool"`` (the global-pooling input: classic CAM); None: the family has one layer
    pool_cam_target: Callable[[nn.Module], CamTarget] | None = None

    def rules(self) -> dict[str, str]:
        """Every rule this spec may cite for a tensor it leaves in float."""
        return {**COMMON_RULES, **self.float_rules}
