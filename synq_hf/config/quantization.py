"""The quantization settings: what shapes the quantized model, saved with it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .fields import (
    RANGE_SEARCH_P,
    DefaultBits,
    check_avg_bits,
    check_bit_width,
    check_bits_list,
    check_bool,
    check_layer_bits,
    check_size_budget,
    number_in,
    setting,
)


@dataclass
class QuantizationSettings:
    """What shapes the quantized model: the fields saved with it as its ``quantization_config``."""

    quant_method: str = setting("synq", "Quantization method name used by transformers (always 'synq').")
    w_bits: int = setting(DefaultBits(4), "Bit-width of weights (2-8); a size_budget or avg_w_bits replaces it.",
                     check=check_bit_width)
    a_bits: int = setting(DefaultBits(4), "Bit-width of activations (2-8); an avg_a_bits budget replaces it.", check=check_bit_width)
    weight_granularity: Literal["per_channel", "per_tensor"] = setting(
        "per_channel", "Weight quantization granularity.", ("per_channel", "per_tensor")
    )
    weight_symmetric: bool | None = setting(
        None, "Symmetric weight quantization. None: asymmetric for CNNs, symmetric for ViTs (PSAQ-ViT).",
        check=check_bool,
    )
    act_symmetric: bool = setting(False, "Symmetric activation quantization (default asymmetric).", check=check_bool)
    first_layer_bits: int | None = setting(
        None, "Bit override (weights and activations) for the first layer; None keeps w_bits/a_bits.", check=check_bit_width
    )
    last_layer_bits: int | None = setting(
        None, "Bit override (weights and activations) for the last layer (classifier); None keeps w_bits/a_bits.",
        check=check_bit_width,
    )
    include: list[str] = setting([], "Glob patterns of module names to quantize (empty: all supported modules).")
    exclude: list[str] = setting([], "Glob patterns of module names to leave in float.")
    ste: Literal["clipped", "identity"] = setting(
        "clipped",
        "Straight-through estimator for activations: 'clipped' passes gradients inside the range only "
        "(fused torch kernels), 'identity' passes them everywhere (the authors' code).",
        ("clipped", "identity"),
    )
    learnable_act_scale: bool = setting(
        False, "Learn activation scale/zero-point (LSQ) during fine-tuning instead of freezing the calibrated range.",
        check=check_bool,
    )
    learnable_weight_scale: bool = setting(
        False, "Learn per-channel weight step sizes (LSQ) during fine-tuning, initialized from the weight range.",
        check=check_bool,
    )
    act_range_init: Literal["minmax", "search"] = setting(
        "search", "Activation range: EMA min-max, or the clip with the lowest Lp error (histogram search).",
        ("minmax", "search"), group="calibration",
    )
    weight_range_init: Literal["minmax", "search"] = setting(
        "search", "Weight range per output channel: min-max, or min-max shrunk by the ratio with the lowest Lp error.",
        ("minmax", "search"), group="calibration",
    )
    range_search_p: float = setting(
        RANGE_SEARCH_P, "Exponent p of the Lp error minimized by the range searches (2: MSE; 3 weighs the clipped tail more).",
        check=number_in(open_low=True), group="calibration",
    )
    ema_momentum: float = setting(0.9, "EMA momentum of the min/max observers during calibration (0 < m < 1).",
                             check=number_in(0.0, 1.0, open_low=True, open_high=True), group="calibration")

    # -- ViT/DeiT/Swin placement (issue 13) -------------------------------------------------------
    vit_placement: Literal["psaq", "loose"] = setting(
        "psaq",
        "ViT/DeiT/Swin quantizer placement: 'psaq' quantizes every tensor PSAQ-ViT does (the image, the "
        "embeddings, the mid-block residual stream, the attention-projection and fc2 outputs, plus everything of "
        "'loose'); 'loose' only every Linear input, q/k/v, the pre-softmax scores, block outputs and the logits "
        "(configs saved before version 3 load as 'loose').",
        ("psaq", "loose"),
    )

    # -- layer bit rule (issue 25) --------------------------------------------------------------
    layer_rule: Literal["uniform", "genie"] = setting(
        "uniform",
        "Bit-widths of the first and last layer: 'uniform' gives every layer w_bits/a_bits (the paper; "
        "first_layer_bits/last_layer_bits may override); 'genie' keeps the first layer's weights at 8 bits reading "
        "the float image and the last layer's weights and input at 8 bits (Genie, BRECQ, QDrop).",
        ("uniform", "genie"),
    )

    # -- integer-runtime placement (issue 12) -----------------------------------------------------
    deploy_placement: Literal["off", "int8"] = setting(
        "off",
        "Extra quantizers an integer runtime (onnxruntime QLinearConv/QLinearAdd) needs: 'int8' also quantizes, "
        "at 8 bits, the image, each residual branch and projected shortcut before the Add and the classifier "
        "input, so the ONNX export runs every conv in integer (plain ReLU ResNets); 'off' keeps the paper's "
        "placement (configs saved before version 4 load as 'off').",
        ("off", "int8"),
    )

    # -- mixed precision under a budget (issue 26) ------------------------------------------------
    size_budget: str | int | None = setting(
        None, "Mixed precision: the model's stored size, e.g. '0.25MB', '300KB', 262144 (bytes) or 'w3' (the size "
        "of uniform 3-bit weights); per-layer weight bits are chosen from w_bits_candidates to fit it, by their "
        "sensitivity on the synthetic images. Replaces w_bits. Counts every stored tensor (packed codes at their "
        "bit-width, scales, zero points, biases, BatchNorm, activation ranges), not the file header.",
        check=check_size_budget, group="mixed",
    )
    avg_w_bits: float | None = setting(
        None, "Mixed precision: the average bits per quantized weight (e.g. 3.5); per-layer weight bits are chosen "
        "from w_bits_candidates by their sensitivity. Replaces w_bits; exclusive with size_budget.", check=check_avg_bits,
        group="mixed",
    )
    avg_a_bits: float | None = setting(
        None, "Mixed precision of activations: the average bits per activation value (weighted by its elements per "
        "image); each activation quantizer's bits are chosen from a_bits_candidates. Replaces a_bits; None keeps "
        "every activation at a_bits.", check=check_avg_bits, group="mixed",
    )
    w_bits_candidates: list[int] = setting([2, 3, 4, 8], "Weight bit-widths a budget may give a layer.", check=check_bits_list,
                                      group="mixed")
    a_bits_candidates: list[int] = setting([4, 8], "Activation bit-widths avg_a_bits may give a quantizer.",
                                      check=check_bits_list, group="mixed")
    layer_w_bits: dict[str, int] = setting(
        {}, "Weight bits per quantized layer (module name -> bits), over w_bits and first/last_layer_bits; a budget "
        "fills it, so a saved mixed model rebuilds the same quantizers.", check=check_layer_bits,
    )
    layer_a_bits: dict[str, int] = setting(
        {}, "Bits per activation quantizer (its name -> bits), over a_bits; avg_a_bits fills it.", check=check_layer_bits,
    )
