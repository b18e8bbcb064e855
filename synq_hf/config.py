"""SynQ's settings: three validated, versioned, JSON-serializable dataclasses, and ``SynQConfig`` joining them.

* :class:`QuantizationSettings`: what shapes the quantized model (bits, granularity, symmetry, placement
  rules, range initialization). Only these are saved with the model, as its ``quantization_config``
  (:class:`SynQQuantizationConfig`).
* :class:`SynthesisSettings`: how the synthetic images are made and how many calibrate the ranges.
* :class:`FinetuneSettings`: the fine-tuning losses (:class:`LossSettings`, which
  ``synq_hf.training.SynQTrainingArguments`` adds to ``TrainingArguments``, TRL-style) and the schedule
  (:class:`ScheduleSettings`, whose fields name the ``TrainingArguments`` field they set).

:class:`SynQConfig` inherits all three, so every field keeps one name, one default, one help text and one
check (in its ``field`` metadata), and ``SynQConfig(w_bits=3, learning_rate=1e-3)`` stays the one object users
build. Fields whose best value depends on the teacher (input size, CNN vs ViT) default to ``None`` and are
filled by :meth:`SynQConfig.resolve` from :func:`paper_defaults`, so a bare ``SynQConfig(w_bits=4, a_bits=4)``
reproduces the paper and every value actually used is recorded.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from transformers.utils.quantization_config import QuantizationConfigMixin

from .errors import ConfigError

CONFIG_VERSION = 7
"""Schema version written into every saved config; bump it (and add the old meaning to ``_MIGRATIONS``) on breaking
changes."""

CONFIG_NAME = "synq_config.json"

PRECISIONS = ("fp32", "bf16", "fp16")
"""Choices of ``synthesis_precision`` / ``finetune_precision`` (``synq_hf.precision`` runs them)."""
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
"""Choices of ``finetune_compile``: off, or a ``torch.compile`` mode."""

RANGE_SEARCH_P = 3.0
"""Default exponent of the clip-range searches (``synq_hf.quant.range_search``): L3 beat MSE by 15 points at W3A3."""


# -- field checks (each field names its own in its metadata) --------------------------------------------


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}={value!r} is not allowed; it must be an integer >= {minimum}")


def _check_bits(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 8:
        raise ConfigError(f"{name}={value!r} is not allowed; bit-widths must be integers from 2 to 8")


def _check_range(
    name: str, value: Any, low: float, high: float | None, open_low: bool = False, open_high: bool = False
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    if ok:
        ok = (value > low if open_low else value >= low) and (
            high is None or (value < high if open_high else value <= high)
        )
    if not ok:
        lo = f"{'(' if open_low else '['}{low}"
        hi = f"{high}{')' if open_high else ']'}" if high is not None else "inf)"
        raise ConfigError(f"{name}={value!r} is not allowed; it must be a number in {lo}, {hi}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")


def _bits(name: str, value: Any) -> None:
    _check_bits(name, value)


class DefaultBits(int):
    """The default of ``w_bits``/``a_bits``: equal to its int, but marks the field as not set by the user, so a
    mixed-precision budget (which replaces it) can refuse an explicit bit-width and accept the default."""

    def __repr__(self) -> str:
        return int.__repr__(self)

    def __reduce__(self) -> tuple:
        return (DefaultBits, (int(self),))


def is_set(config: Any, name: str) -> bool:
    """Whether ``config.<name>`` (``w_bits``/``a_bits``) was given by the user rather than left at its default."""
    return type(getattr(config, name)) is not DefaultBits


# -- mixed precision under a budget (issue 26) --------------------------------------------------------

_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmg]i?b|b)?\s*$", re.IGNORECASE)
_UNIFORM = re.compile(r"^\s*w([2-8])\s*$", re.IGNORECASE)


def parse_size_budget(value: Any, name: str = "size_budget") -> tuple[str, float]:
    """``("bytes", n)`` for ``"0.25MB"``, ``"300KB"``, ``"1.5MiB"``, ``"262144"`` or an int (bytes; KB/MB/GB are
    powers of 10, KiB/MiB/GiB of 2), or ``("uniform", b)`` for ``"w4"``: the packed size of the model with every
    layer at ``b``-bit weights. A value that is neither raises ``ConfigError``."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigError(f"{name}={value!r} is not allowed; give a size such as '0.25MB', '300KB', 262144 "
                          "(bytes) or 'w4' (the size of uniform 4-bit weights)")
    if isinstance(value, int):
        if value < 1:
            raise ConfigError(f"{name}={value!r} is not allowed; a size in bytes must be >= 1")
        return "bytes", float(value)
    uniform = _UNIFORM.match(value)
    if uniform:
        return "uniform", float(uniform.group(1))
    m = _SIZE.match(value)
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"{name}={value!r} is not allowed; give a size such as '0.25MB', '300KB', '1.5MiB', "
                          "'262144' (bytes) or 'w4' (the size of uniform 4-bit weights)")
    return "bytes", float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower()]


def _size_budget(name: str, value: Any) -> None:
    parse_size_budget(value, name)


def _bits_list(name: str, value: Any) -> None:
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{name}={value!r} is not allowed; give a non-empty list of bit-widths (2-8)")
    for v in value:
        _check_bits(name, v)


def _layer_bits(name: str, value: Any) -> None:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"{name} must map module names to bit-widths, e.g. {{\"conv1\": 8}}; got {value!r}")
    for k, v in value.items():
        _check_bits(f"{name}[{k!r}]", v)


def _avg_bits(name: str, value: Any) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 32
    if not ok:
        raise ConfigError(f"{name}={value!r} is not allowed; an average bit-width must be a number above 0 and below "
                          "32 (float weights are 32-bit)")


def _int_at_least(minimum: int) -> Callable[[str, Any], None]:
    return lambda name, value: _check_int(name, value, minimum)


def _number(low: float = 0.0, high: float | None = None, *, open_low: bool = False,
            open_high: bool = False) -> Callable[[str, Any], None]:
    return lambda name, value: _check_range(name, value, low, high, open_low, open_high)


def _f(default: Any, help: str, choices: tuple | None = None, check: Callable[[str, Any], None] | None = None,
       trainer: str | None = None, group: str | None = None) -> Any:
    """A dataclass field carrying its help text, allowed values and check (used by validation, CLI and docs).

    ``check(name, value)`` raises ``ConfigError`` for a value that is not allowed (``None`` is always allowed
    when the default is ``None``); ``trainer`` names the ``TrainingArguments`` field a schedule field sets;
    ``group`` files the field under a documentation/``--help`` group other than its part's (e.g. "calibration").
    """
    meta: dict[str, Any] = {"help": help}
    if group is not None:  # issue 22: --help groups
        meta["group"] = group
    if choices is not None:
        meta["choices"] = choices
    if check is not None:
        meta["check"] = check
    if trainer is not None:
        meta["trainer"] = trainer
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def check_field(f: dataclasses.Field, value: Any, name: str | None = None) -> None:
    """Raise ``ConfigError`` when ``value`` is not allowed for the field ``f`` (its metadata's ``choices`` and
    ``check``; ``None`` passes where the default is ``None``). ``name`` is how the message names it (default: the
    field's name; the CLI passes its flag). The one validation loop of ``SynQConfig``, ``SynQTrainingArguments``
    and the command line."""
    if value is None and f.default is None:
        return
    name = f.name if name is None else name
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{name}={value!r} is not allowed; choose one of {list(choices)}")
    check = f.metadata.get("check")
    if check is not None:
        check(name, value)


# -- the three parts ---------------------------------------------------------------------------------------


@dataclass
class QuantizationSettings:
    """What shapes the quantized model: the fields saved with it as its ``quantization_config``."""

    quant_method: str = _f("synq", "Quantization method name used by transformers (always 'synq').")
    w_bits: int = _f(DefaultBits(4), "Bit-width of weights (2-8); a size_budget or avg_w_bits replaces it.",
                     check=_bits)
    a_bits: int = _f(DefaultBits(4), "Bit-width of activations (2-8); an avg_a_bits budget replaces it.", check=_bits)
    weight_granularity: Literal["per_channel", "per_tensor"] = _f(
        "per_channel", "Weight quantization granularity.", ("per_channel", "per_tensor")
    )
    weight_symmetric: bool | None = _f(
        None, "Symmetric weight quantization. None: asymmetric for CNNs, symmetric for ViTs (PSAQ-ViT).",
        check=_check_bool,
    )
    act_symmetric: bool = _f(False, "Symmetric activation quantization (default asymmetric).", check=_check_bool)
    first_layer_bits: int | None = _f(
        None, "Bit override (weights and activations) for the first layer; None keeps w_bits/a_bits.", check=_bits
    )
    last_layer_bits: int | None = _f(
        None, "Bit override (weights and activations) for the last layer (classifier); None keeps w_bits/a_bits.",
        check=_bits,
    )
    include: list[str] = _f([], "Glob patterns of module names to quantize (empty: all supported modules).")
    exclude: list[str] = _f([], "Glob patterns of module names to leave in float.")
    ste: Literal["clipped", "identity"] = _f(
        "clipped",
        "Straight-through estimator for activations: 'clipped' passes gradients inside the range only "
        "(fused torch kernels), 'identity' passes them everywhere (the authors' code).",
        ("clipped", "identity"),
    )
    learnable_act_scale: bool = _f(
        False, "Learn activation scale/zero-point (LSQ) during fine-tuning instead of freezing the calibrated range.",
        check=_check_bool,
    )
    learnable_weight_scale: bool = _f(
        False, "Learn per-channel weight step sizes (LSQ) during fine-tuning, initialized from the weight range.",
        check=_check_bool,
    )
    act_range_init: Literal["minmax", "search"] = _f(
        "search", "Activation range: EMA min-max, or the clip with the lowest Lp error (histogram search).",
        ("minmax", "search"), group="calibration",
    )
    weight_range_init: Literal["minmax", "search"] = _f(
        "search", "Weight range per output channel: min-max, or min-max shrunk by the ratio with the lowest Lp error.",
        ("minmax", "search"), group="calibration",
    )
    range_search_p: float = _f(
        RANGE_SEARCH_P, "Exponent p of the Lp error minimized by the range searches (2: MSE; 3 weighs the clipped tail more).",
        check=_number(open_low=True), group="calibration",
    )
    ema_momentum: float = _f(0.9, "EMA momentum of the min/max observers during calibration (0 < m < 1).",
                             check=_number(0.0, 1.0, open_low=True, open_high=True), group="calibration")

    # -- ViT/DeiT/Swin placement (issue 13) -------------------------------------------------------
    vit_placement: Literal["psaq", "loose"] = _f(
        "psaq",
        "ViT/DeiT/Swin quantizer placement: 'psaq' quantizes every tensor PSAQ-ViT does (the image, the "
        "embeddings, the mid-block residual stream, the attention-projection and fc2 outputs, plus everything of "
        "'loose'); 'loose' only every Linear input, q/k/v, the pre-softmax scores, block outputs and the logits "
        "(configs saved before version 3 load as 'loose').",
        ("psaq", "loose"),
    )

    # -- layer bit rule (issue 25) --------------------------------------------------------------
    layer_rule: Literal["uniform", "genie"] = _f(
        "uniform",
        "Bit-widths of the first and last layer: 'uniform' gives every layer w_bits/a_bits (the paper; "
        "first_layer_bits/last_layer_bits may override); 'genie' keeps the first layer's weights at 8 bits reading "
        "the float image and the last layer's weights and input at 8 bits (Genie, BRECQ, QDrop).",
        ("uniform", "genie"),
    )

    # -- integer-runtime placement (issue 12) -----------------------------------------------------
    deploy_placement: Literal["off", "int8"] = _f(
        "off",
        "Extra quantizers an integer runtime (onnxruntime QLinearConv/QLinearAdd) needs: 'int8' also quantizes, "
        "at 8 bits, the image, each residual branch and projected shortcut before the Add and the classifier "
        "input, so the ONNX export runs every conv in integer (plain ReLU ResNets); 'off' keeps the paper's "
        "placement (configs saved before version 4 load as 'off').",
        ("off", "int8"),
    )

    # -- mixed precision under a budget (issue 26) ------------------------------------------------
    size_budget: str | int | None = _f(
        None, "Mixed precision: the model's stored size, e.g. '0.25MB', '300KB', 262144 (bytes) or 'w3' (the size "
        "of uniform 3-bit weights); per-layer weight bits are chosen from w_bits_candidates to fit it, by their "
        "sensitivity on the synthetic images. Replaces w_bits. Counts every stored tensor (packed codes at their "
        "bit-width, scales, zero points, biases, BatchNorm, activation ranges), not the file header.",
        check=_size_budget, group="mixed",
    )
    avg_w_bits: float | None = _f(
        None, "Mixed precision: the average bits per quantized weight (e.g. 3.5); per-layer weight bits are chosen "
        "from w_bits_candidates by their sensitivity. Replaces w_bits; exclusive with size_budget.", check=_avg_bits,
        group="mixed",
    )
    avg_a_bits: float | None = _f(
        None, "Mixed precision of activations: the average bits per activation value (weighted by its elements per "
        "image); each activation quantizer's bits are chosen from a_bits_candidates. Replaces a_bits; None keeps "
        "every activation at a_bits.", check=_avg_bits, group="mixed",
    )
    w_bits_candidates: list[int] = _f([2, 3, 4, 8], "Weight bit-widths a budget may give a layer.", check=_bits_list,
                                      group="mixed")
    a_bits_candidates: list[int] = _f([4, 8], "Activation bit-widths avg_a_bits may give a quantizer.",
                                      check=_bits_list, group="mixed")
    layer_w_bits: dict[str, int] = _f(
        {}, "Weight bits per quantized layer (module name -> bits), over w_bits and first/last_layer_bits; a budget "
        "fills it, so a saved mixed model rebuilds the same quantizers.", check=_layer_bits,
    )
    layer_a_bits: dict[str, int] = _f(
        {}, "Bits per activation quantizer (its name -> bits), over a_bits; avg_a_bits fills it.", check=_layer_bits,
    )


@dataclass
class SynthesisSettings:
    """How the synthetic images are made, and how many of them calibrate the activation ranges."""

    calibration_num_images: int = _f(512, "Images used to calibrate activation ranges.", check=_int_at_least(1),
                                     group="calibration")
    calibration_batch_size: int = _f(64, "Batch size of the calibration forward passes.", check=_int_at_least(1),
                                     group="calibration")
    # -- mixed precision (issue 26) --
    sensitivity_num_images: int = _f(
        256, "Mixed precision: synthetic images on which each layer's sensitivity (KL of the model's output to the "
        "float model's when only that layer is quantized) is measured.", check=_int_at_least(1), group="mixed",
    )
    num_images: int = _f(5120, "Number of synthetic images to generate.", check=_int_at_least(1))
    synthesis_iterations: int = _f(1000, "Optimization iterations per synthetic batch.", check=_int_at_least(0))
    synthesis_batch_size: int | None = _f(None, "Synthetic images optimized together. None: 256 (CNN) or 32 (ViT).",
                                          check=_int_at_least(1))
    synthesis_lr: float | None = _f(None, "Adam learning rate on pixels. None: 0.5 (CNN), 0.2 (ViT), 0.25 (Swin).",
                                    check=_number(open_low=True))
    synthesis_ce_beta: float | None = _f(
        None, "Weight of the hard-sample CE term. None: 0.1 (the authors', against the channel-mean BN loss), "
        "10 (32x32 inputs with the channel-sum BN loss, HAST setting).",
        check=_number(),
    )
    synthesis_ce_gamma: float | None = _f(
        None, "Focal exponent of the hard-sample CE term. None: 0.5 (with the channel-mean BN loss), 2 (32x32 inputs "
        "with the channel-sum BN loss).", check=_number()
    )
    synthesis_augment: bool | None = _f(
        None, "Random-resized-crop + flip during CNN synthesis. None: on for inputs of 64 px and up.", check=_check_bool
    )
    synthesis_lr_patience: int = _f(50, "ReduceLROnPlateau patience (iterations; CNN synthesis, ViTs use PSAQ-ViT's "
                                        "2 warm-up + cosine cycles).", check=_int_at_least(1))
    synthesis_lr_factor: float = _f(0.1, "ReduceLROnPlateau decay factor (CNN synthesis).",
                                    check=_number(0.0, 1.0, open_low=True, open_high=True))
    synthesis_min_lr: float = _f(1e-4, "ReduceLROnPlateau minimum learning rate (CNN synthesis).", check=_number())
    synthesis_calibration_centres: bool = _f(False, "TexQ-style: also synthesize one calibration-centre image per class.",
                                             check=_check_bool)
    synthesis_groups_per_forward: int = _f(
        1, "Groups of synthesis_batch_size images sent through one forward (BN statistics stay per group).",
        check=_int_at_least(1),
    )
    synthesis_tv_weight: float = _f(0.05, "ViT synthesis: weight of PSAQ-ViT's image prior (distance of the "
                                    "neighbouring-pixel L2 norms to a random target).", check=_number())
    synthesis_kde_bandwidth: float = _f(0.01, "ViT synthesis: Gaussian KDE bandwidth of patch similarities.",
                                        check=_number(open_low=True))
    synthesis_kde_points: int = _f(10, "ViT synthesis: KDE evaluation points between batch min and max.",
                                   check=_int_at_least(1))
    synthesis_log_every: int = _f(50, "Log synthesis losses every k iterations (no host sync in between).",
                                  check=_int_at_least(1))

    # -- accelerator speed (issue 24) -------------------------------------------------------------
    synthesis_precision: Literal["fp32", "bf16", "fp16"] = _f(
        "fp32", "Precision of the teacher's forward/backward in synthesis: 'bf16'/'fp16' autocast it (fp16: CUDA "
        "only); the BN-statistics loss, the KDE and the pixels stay float32. fp32 until a GPU fidelity check "
        "supports a low-precision default.", PRECISIONS,
    )

    # -- BN-statistics reduction (issue 21) -------------------------------------------------------
    synthesis_bn_reduction: Literal["mean", "sum"] | None = _f(
        None,
        "CNN synthesis: reduce each BN layer's squared mean/variance errors over channels by 'mean' (the authors' "
        "nn.MSELoss) or 'sum' (||.||^2, C times stronger against the CE term). None: 'mean' for ImageNet-size "
        "inputs, 'sum' for 32x32 (paper_defaults; the CE beta/gamma defaults follow the reduction; configs saved "
        "before version 6 load as 'sum').",
        ("mean", "sum"),
    )


@dataclass
class LossSettings:
    """The SynQ fine-tuning objective (Eq. 6) and its extras: what ``SynQTrainingArguments`` adds to ``TrainingArguments``."""

    lpf_d0: float | None = _f(None, "Low-pass filter cut-off D0. None: 80 (ImageNet-size), 8 (32x32). 0 disables.",
                              check=_number())
    lpf_mode: Literal["once", "per_batch"] = _f(
        "once", "Filter the synthetic set once before fine-tuning (paper) or every batch after augmentation.",
        ("once", "per_batch"),
    )
    calibrate_filtered: bool | None = _f(
        None, "Fine-tuning calibrates activation ranges on the low-pass filtered images (True) or on the raw "
        "synthetic images (False). None: True (CNNs), False (ViTs).", check=_check_bool,
    )
    tau: float | None = _f(None, "Difficulty threshold of selective CE (0-1). None: 0.5 (ImageNet), 0.7 (CIFAR).",
                           check=_number(0.0, 1.0))
    lambda_ce: float = _f(0.5, "Weight of the selective cross-entropy term (>= 0).", check=_number())
    lambda_cam: float = _f(50.0, "Weight of the Grad-CAM alignment term (>= 0).", check=_number())
    kd_temperature: float = _f(1.0, "KD temperature; 1 is the paper's plain KL (the loss is scaled by T^2).",
                               check=_number(open_low=True))
    kd_weight: float = _f(1.0, "Weight of the KD term (the authors' code: 20 at T=20, i.e. 8000 x KL).", check=_number())
    cam_target: Literal["label", "argmax"] = _f(
        "label", "Grad-CAM target class: the synthetic label (paper) or the teacher's argmax (authors' code).",
        ("label", "argmax"),
    )
    quantizer_lr: float | None = _f(
        None, "Learning rate of learnable quantizer step sizes (own parameter group). None: learning_rate.",
        check=_number(open_low=True),
    )
    augment: Literal["none", "shift_flip", "crop_flip"] = _f(
        "none", "Fine-tuning augmentation per batch: random shift + flip, or random-resized-crop (0.5-1) + flip.",
        ("none", "shift_flip", "crop_flip"),
    )
    momentum: float = _f(0.9, "SGD momentum.", check=_number(0.0, 1.0, open_high=True))
    hast_feature_alignment: bool = _f(False, "Authors' extra: HAST feature-alignment loss.", check=_check_bool)
    hast_weight: float = _f(1.0, "Weight of the HAST feature-alignment loss.", check=_number())
    perturbed_loss: bool = _f(False, "Authors' extra: sign-gradient (FGSM-style) perturbed-sample KD loss.",
                              check=_check_bool)
    perturbed_eps: float = _f(0.01, "Step size of the sign-gradient perturbation (normalized pixel units).",
                              check=_number())
    perturbed_weight: float = _f(1.0, "Weight of the perturbed-sample loss.", check=_number())

    # -- accelerator speed (issue 24) -------------------------------------------------------------
    finetune_precision: Literal["fp32", "bf16", "fp16"] = _f(
        "fp32", "Precision of the teacher and student forwards in fine-tuning: 'bf16'/'fp16' autocast them (fp16: "
        "CUDA only, with a gradient scaler); quantizer scales and rounding, losses and weights stay float32.",
        PRECISIONS,
    )
    finetune_compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = _f(
        "off", "torch.compile the teacher's and student's blocks for fine-tuning with this mode ('reduce-overhead' "
        "captures CUDA graphs); pays on GPUs at small batches, compiles for minutes first.", COMPILE_MODES,
    )

    # -- where Grad-CAM is taken (issue 21) -------------------------------------------------------
    cam_layer: Literal["last_conv", "pool"] = _f(
        "last_conv",
        "CNN Grad-CAM layer: 'last_conv' = the output of the last nn.Conv2d (the authors' Grad-CAM: gradients vary "
        "in space, channel weights clamped to >= 1e-10, map upsampled bilinearly to the input); 'pool' = the input "
        "of global pooling, where the gradient is constant in space and the map is classic CAM. ViT/Swin always "
        "use their family's layer (configs saved before version 6 load as 'pool').",
        ("last_conv", "pool"),
    )


@dataclass
class ScheduleSettings:
    """The fine-tuning schedule; each field sets the ``TrainingArguments`` field named in its metadata."""

    learning_rate: float | None = _f(None, "SGD learning rate. None: 1e-3 (CIFAR CNN), 1e-4 (CIFAR ViT, ImageNet CNN), 1e-5 (ImageNet ViT).",
                                     check=_number(open_low=True), trainer="learning_rate")
    max_grad_norm: float = _f(
        5.0, "Clip the gradient norm of each fine-tuning step to this (0 disables; unclipped SGD can diverge).",
        check=_number(), trainer="max_grad_norm",
    )
    weight_decay: float = _f(1e-4, "SGD weight decay.", check=_number(), trainer="weight_decay")
    train_batch_size: int | None = _f(None, "Fine-tuning batch size per device. None: 256 (32x32 inputs), 16 otherwise.",
                                      check=_int_at_least(1), trainer="per_device_train_batch_size")
    num_epochs: float = _f(100.0, "Fine-tuning epochs over the synthetic set.", check=_number(open_low=True),
                           trainer="num_train_epochs")
    max_steps: int | None = _f(None, "Stop fine-tuning after this many steps (overrides num_epochs).",
                               check=_int_at_least(1), trainer="max_steps")


@dataclass
class FinetuneSettings(ScheduleSettings, LossSettings):
    """Everything about fine-tuning: the losses, then the schedule."""

    # -- block reconstruction (issue 25) ----------------------------------------------------------
    method: Literal["synq", "ptq", "reconstruct"] = _f(
        "synq",
        "What quantizes the model: 'synq' fine-tunes the whole network (QAT style, the paper's main setting); 'ptq' "
        "calibrates only; 'reconstruct' reconstructs block by block against the float blocks (Genie/BRECQ: "
        "AdaRound, learned weight scales, LSQ activation ranges, QDrop).",
        ("synq", "ptq", "reconstruct"),
    )
    reconstruct_iterations: int = _f(20000, "Reconstruction: optimization steps per block (Genie, BRECQ: 20,000).",
                                     check=_int_at_least(1), group="reconstruction")
    reconstruct_batch_size: int = _f(32, "Reconstruction: images per step (Genie: 32).", check=_int_at_least(1),
                                     group="reconstruction")
    reconstruct_num_images: int = _f(1024, "Reconstruction: synthetic images used, the first N of the set "
                                     "(Genie: 1,024).", check=_int_at_least(1), group="reconstruction")
    reconstruct_round_weight: float = _f(1.0, "Reconstruction: weight of AdaRound's rounding regulariser, summed "
                                         "over the block's weights (Genie: 1; BRECQ: 0.01).", check=_number(),
                                         group="reconstruction")
    reconstruct_beta_start: float = _f(20.0, "Reconstruction: exponent beta of the rounding regulariser when it "
                                       "starts (AdaRound: 20).", check=_number(open_low=True), group="reconstruction")
    reconstruct_beta_end: float = _f(2.0, "Reconstruction: beta at the last step, reached linearly (AdaRound: 2).",
                                     check=_number(open_low=True), group="reconstruction")
    reconstruct_warmup: float = _f(0.2, "Reconstruction: fraction of each block's steps without the rounding "
                                   "regulariser (AdaRound: 0.2).", check=_number(0.0, 1.0, open_high=True),
                                   group="reconstruction")
    reconstruct_qdrop: float = _f(0.5, "Reconstruction: QDrop probability that an element stays float at each "
                                  "activation quantizer and the block input (0 disables QDrop; QDrop, Genie: 0.5).",
                                  check=_number(0.0, 1.0), group="reconstruction")
    reconstruct_lr: float = _f(1e-3, "Reconstruction: Adam learning rate of the rounding variables (Genie: 1e-3).",
                               check=_number(open_low=True), group="reconstruction")
    reconstruct_lr_weight_scale: float = _f(1e-4, "Reconstruction: Adam learning rate of the per-channel weight step "
                                            "sizes, cosine decay (Genie: 1e-4; 0 keeps them).", check=_number(),
                                            group="reconstruction")
    reconstruct_lr_act_scale: float = _f(4e-5, "Reconstruction: Adam learning rate of the LSQ activation ranges, "
                                         "cosine decay (Genie: 4e-5; 0 keeps them).", check=_number(),
                                         group="reconstruction")
    reconstruct_synq: bool = _f(False, "Reconstruction + SynQ: reconstruct on the low-pass filtered images (lpf_d0) "
                                "and add SynQ's output terms (selective CE, Grad-CAM alignment; see "
                                "reconstruct_synq_stage).", check=_check_bool, group="reconstruction")
    reconstruct_synq_stage: Literal["last_block", "network"] = _f(
        "last_block",
        "Reconstruction + SynQ: where SynQ's terms act: 'last_block' adds lambda_ce x selective CE and lambda_cam x "
        "Grad-CAM alignment on the network output to the last block's loss; 'network' runs reconstruct_synq_steps "
        "steps of SynQ's whole loss (KD + selective CE + CAM) on the whole network after the last block, training "
        "only step sizes, activation ranges, biases and normalization affines (the integer weights stay).",
        ("last_block", "network"),
        group="reconstruction",
    )
    reconstruct_synq_steps: int = _f(300, "Reconstruction + SynQ: steps of the whole-network phase.",
                                     check=_int_at_least(1), group="reconstruction")


def _fields(cls: Any) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


QUANTIZATION_FIELDS = _fields(QuantizationSettings)
"""Names of the model-shaping fields: a saved model's ``quantization_config`` holds exactly these (and ``version``)."""
SYNTHESIS_FIELDS = _fields(SynthesisSettings)
FINETUNE_FIELDS = _fields(FinetuneSettings)


class _ConfigIO:
    """Validation, copying and (versioned) JSON shared by :class:`SynQConfig` and :class:`SynQQuantizationConfig`."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first field whose value is not allowed, and what is."""
        if self.quant_method != "synq":
            raise ConfigError(f"quant_method={self.quant_method!r} is not allowed; it is always 'synq'")
        for name in ("include", "exclude"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, [value])
            elif not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{name} must be a list of glob patterns (strings), got {value!r}")
            else:
                setattr(self, name, list(value))
        for f in dataclasses.fields(self):
            check_field(f, getattr(self, f.name))
        _check_mixed(self)
        if self.layer_rule == "genie" and (self.first_layer_bits is not None or self.last_layer_bits is not None):
            raise ConfigError("layer_rule='genie' keeps the first and last layer at 8 bits; leave first_layer_bits and "
                              "last_layer_bits unset")
        if getattr(self, "reconstruct_beta_end", 0.0) > getattr(self, "reconstruct_beta_start", float("inf")):
            raise ConfigError(f"reconstruct_beta_end={self.reconstruct_beta_end!r} is above reconstruct_beta_start="
                              f"{self.reconstruct_beta_start!r}; the rounding regulariser's beta decays from start to end")
        if self.version != CONFIG_VERSION:
            raise ConfigError(
                f"version={self.version!r}: this synq_hf writes config version {CONFIG_VERSION}; "
                f"load older configs with {type(self).__name__}.from_dict, which migrates them"
            )

    def replace(self, **changes: Any) -> Any:
        """A validated copy with some fields changed (unknown names raise ``ConfigError``)."""
        _check_known(type(self), changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict of every field (lists copied); a budget's config leaves out the bits it replaces."""
        replaced = budget_replaces(self)
        return {f.name: _copy(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name not in replaced}

    @classmethod
    def from_dict(cls, data: dict[str, Any], return_unused_kwargs: bool = False, **kwargs: Any) -> Any:
        """Build from a dict written by any synq_hf version; older schema versions are migrated.

        ``return_unused_kwargs``/``kwargs`` follow transformers' ``QuantizationConfigMixin.from_dict``.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"a {cls.__name__} must be built from a dict, got {type(data).__name__}")
        data = dict(data)
        data.pop("quant_method", None)
        version = data.pop("version", CONFIG_VERSION)
        if not isinstance(version, int) or version < 1 or version > CONFIG_VERSION:
            raise ConfigError(
                f"config version {version!r} is not supported: this synq_hf {_pkg_version()} reads versions "
                f"1-{CONFIG_VERSION}; upgrade synq_hf to load newer checkpoints"
            )
        for v in range(version, CONFIG_VERSION):
            data = {**_MIGRATIONS[v], **data}
        known = set(_fields(cls))
        _check_known(SynQConfig, data)
        data = {k: v for k, v in data.items() if k in known}  # a full SynQConfig dict read as its model part
        data.update({k: v for k, v in kwargs.items() if k in known})
        config = cls(**data)
        if return_unused_kwargs:
            return config, {k: v for k, v in kwargs.items() if k not in known}
        return config

    def to_diff_dict(self) -> dict[str, Any]:
        return self.to_dict()

    def update(self, **kwargs: Any) -> dict[str, Any]:
        """Set known fields in place (validated); return the unknown ones, like transformers' configs."""
        known = set(_fields(self))
        for k, v in kwargs.items():
            if k in known:
                setattr(self, k, v)
        self.validate()
        return {k: v for k, v in kwargs.items() if k not in known}

    def to_json_string(self, use_diff: bool = True) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(self.to_json_string())

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> Any:
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {os.fspath(path)!r} does not exist") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"config file {os.fspath(path)!r} is not valid JSON: {e}") from None
        return cls.from_dict(data)

    @classmethod
    def from_json(cls, text: str | os.PathLike) -> Any:
        """A JSON file path, or an inline JSON object (text starting with ``{``): what ``--config`` accepts."""
        if isinstance(text, str) and text.strip().startswith("{"):
            try:
                return cls.from_dict(json.loads(text))
            except json.JSONDecodeError as e:
                raise ConfigError(f"the inline JSON config is not valid JSON: {e}") from None
        return cls.from_json_file(text)

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """Help text of every field (used by the CLI and the docs)."""
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


@dataclass
class SynQQuantizationConfig(QuantizationSettings, _ConfigIO, QuantizationConfigMixin):
    """The ``quantization_config`` saved with a quantized model: its :class:`QuantizationSettings` and ``version``."""

    version: int = _f(CONFIG_VERSION, "Config schema version (for loading old checkpoints).")


@dataclass
class SynQConfig(FinetuneSettings, SynthesisSettings, QuantizationSettings, _ConfigIO, QuantizationConfigMixin):
    """Configuration of SynQ zero-shot quantization: quantizer, calibration, synthesis and fine-tuning.

    ``SynQConfig(w_bits=4, a_bits=4)`` is the paper's setting; every field is a keyword (and a ``synq-hf quantize``
    flag, ``w_bits`` -> ``--w-bits``). The most used, by group (``SynQConfig.field_help()`` describes all of them):

    * quantizer (:class:`QuantizationSettings`): ``w_bits``, ``a_bits``, ``weight_symmetric``,
      ``first_layer_bits``, ``last_layer_bits``, ``include``, ``exclude``, ``deploy_placement``;
    * calibration: ``calibration_num_images``, ``act_range_init``, ``weight_range_init`` (``"search"`` or
      ``"minmax"``);
    * synthesis (:class:`SynthesisSettings`): ``num_images``, ``synthesis_iterations``, ``synthesis_batch_size``;
    * fine-tuning (:class:`LossSettings`, :class:`ScheduleSettings`): ``lpf_d0``, ``tau``, ``lambda_ce``,
      ``lambda_cam``, ``learning_rate``, ``train_batch_size``, ``num_epochs``, ``max_steps``, ``augment``;
    * ``seed``.

    Fields left ``None`` get the paper's value for the teacher's family and input size (:meth:`resolve`).
    It is also the ``quantization_config`` of transformers models (``quant_method="synq"``), so
    ``AutoModelForImageClassification.from_pretrained(id, quantization_config=SynQConfig(...))`` works
    once ``synq_hf`` is imported; the model then saves only :meth:`quantization_config`.
    """

    seed: int = _f(0, "Random seed of synthesis, calibration and fine-tuning.", check=_int_at_least(0))
    version: int = _f(CONFIG_VERSION, "Config schema version (for loading old checkpoints).")

    # -- the parts --------------------------------------------------------------------------------
    def quantization_config(self) -> SynQQuantizationConfig:
        """The model-shaping part, as saved with the quantized model."""
        return SynQQuantizationConfig(**{k: _copy(getattr(self, k)) for k in QUANTIZATION_FIELDS})

    def part(self, cls: type) -> Any:
        """The fields of one part (``SynthesisSettings``, ``FinetuneSettings``, ...) as that dataclass."""
        return cls(**{k: _copy(getattr(self, k)) for k in _fields(cls)})

    @classmethod
    def from_parts(cls, *parts: Any, **changes: Any) -> SynQConfig:
        """Join parts (any of the settings dataclasses, or a ``SynQQuantizationConfig``) and field changes."""
        values: dict[str, Any] = {}
        for part in parts:
            values.update({k: v for k, v in part.to_dict().items() if k not in ("version",)}
                          if isinstance(part, _ConfigIO) else dataclasses.asdict(part))
        return cls(**{**values, **changes})

    # -- family-dependent defaults ----------------------------------------------------------------
    def resolve(self, *, family: str, input_size: int) -> SynQConfig:
        """Return a copy with every ``None`` default replaced by :func:`paper_defaults` for this teacher.

        ``family`` is ``"cnn"``, ``"vit"`` or ``"swin"``; ``input_size`` the teacher's image side in pixels. An
        unset ``synthesis_batch_size`` becomes ``min(num_images, the family's default)``. The pipeline calls this
        once per run, through :func:`synq_hf.pipeline.resolve_config`.
        """
        defaults = paper_defaults(family, input_size, bn_reduction=self.synthesis_bn_reduction)
        if isinstance(self.num_images, int) and self.num_images > 0:
            # the family's synthesis batch, but never more images at once than are asked for
            defaults["synthesis_batch_size"] = min(self.num_images, defaults["synthesis_batch_size"])
        return self.replace(**{k: v for k, v in defaults.items() if getattr(self, k) is None})

    def is_resolved(self) -> bool:
        """Whether every family-dependent field (:data:`RESOLVED_FIELDS`) is set, as :meth:`resolve` leaves them."""
        return all(getattr(self, k) is not None for k in RESOLVED_FIELDS)

    def with_loss_preset(self, name: str) -> SynQConfig:
        """A copy with the loss weights, temperature and augmentation of ``LOSS_PRESETS[name]``."""
        if name not in LOSS_PRESETS:
            raise ConfigError(f"loss preset {name!r} does not exist; choose one of {sorted(LOSS_PRESETS)}")
        return self.replace(**LOSS_PRESETS[name])


def paper_defaults(family: str, input_size: int, *, bn_reduction: str | None = None) -> dict[str, Any]:
    """The paper's value of every family-dependent (``None``-default) field, for a teacher family and image side.

    The BN-statistics loss reduces over channels by the mean (the authors' ``nn.MSELoss``) for ImageNet-size inputs,
    with the authors' CE beta 0.1 / gamma 0.5 (tuned against that mean). 32x32 inputs (CIFAR) keep the channel sum
    with HAST's beta 10 / gamma 2 (measured: BENCHMARKS.md, "Method fidelity"); ``bn_reduction`` (the config's
    value, when set) picks the beta/gamma tuned for it: 0.1 / 0.5 with the mean at any size, as the authors' CIFAR
    scripts do. 32x32 inputs also get D0 = 8 (D0 >= 40 is nearly an identity there),
    tau 0.7 and SGD lr 1e-3 for CNNs (1e-2 diverged, Adam 1e-5 was worse in METHOD.md's trial), 1e-4 for ViTs (1e-3
    drifts away on the shared CIFAR ViT: BENCHMARKS.md, ViT); ImageNet-size CNNs lr 1e-4 and batch 16; ViTs
    (PSAQ-ViT) symmetric weights, batch 32 synthesis and lr 1e-5 from the paper's grid. ViTs calibrate activation
    ranges on the raw synthetic images, as PSAQ-ViT does: ranges from the filtered ones clip real activations
    (BENCHMARKS.md, ViT).
    """
    if family not in ("cnn", "vit", "swin"):
        raise ConfigError(f"family={family!r} is not allowed; choose one of ['cnn', 'vit', 'swin']")
    small = input_size < 64
    vit = family != "cnn"
    reduction = bn_reduction or ("sum" if small else "mean")
    hast = small and reduction == "sum"  # HAST's CIFAR weights were tuned against the channel sum
    return {
        "weight_symmetric": weight_symmetric_default(family),
        "synthesis_batch_size": 32 if vit else 256,
        "synthesis_lr": {"cnn": 0.5, "vit": 0.2, "swin": 0.25}[family],
        "synthesis_bn_reduction": reduction,
        "synthesis_ce_beta": 10.0 if hast else 0.1,
        "synthesis_ce_gamma": 2.0 if hast else 0.5,
        "synthesis_augment": not small,
        "lpf_d0": 8.0 if small else 80.0,
        "calibrate_filtered": not vit,
        "tau": 0.7 if small else 0.5,
        "learning_rate": (1e-4 if vit else 1e-3) if small else (1e-5 if vit else 1e-4),
        "train_batch_size": 256 if small else 16,
    }


def weight_symmetric_default(family: str) -> bool:
    """The paper's weight quantizer per family: symmetric for ViT/Swin (PSAQ-ViT), asymmetric for CNNs."""
    return family != "cnn"


RESOLVED_FIELDS: tuple[str, ...] = tuple(paper_defaults("cnn", 224))
"""The family-dependent fields (``None`` by default) that :meth:`SynQConfig.resolve` fills in."""


LOSS_PRESETS: dict[str, dict[str, Any]] = {
    # Eq. 6 as the paper states it: a plain KL, the authors' ResNet-18 W3A3 weights for CE and CAM.
    "paper": {"kd_weight": 1.0, "kd_temperature": 1.0, "lambda_ce": 0.5, "lambda_cam": 50.0},
    # The authors' code: 20 x T^2 x KL at T = 20 (8000 x KL), crop + flip on every batch, filter after it.
    "authors": {"kd_weight": 20.0, "kd_temperature": 20.0, "lambda_ce": 0.5, "lambda_cam": 50.0,
                "augment": "crop_flip", "lpf_mode": "per_batch"},
}
"""Named loss balances (``SynQConfig.with_loss_preset``, ``synq-hf quantize --loss-preset``)."""


_MIGRATIONS: dict[int, dict[str, Any]] = {
    # v2 searches ranges by default; version 1 had min-max ranges only (the quantizers must match)
    1: {"act_range_init": "minmax", "weight_range_init": "minmax"},
    # v3 quantizes ViTs with PSAQ-ViT's full placement; older ViT checkpoints were built with 'loose'
    2: {"vit_placement": "loose"},
    # v4 adds the opt-in integer-runtime quantizers; older checkpoints were built without them
    3: {"deploy_placement": "off"},
    # v5 lets ViTs calibrate on the raw synthetic images; older fine-tuning always used the filtered ones
    4: {"calibrate_filtered": True},
    # v6 takes CNN Grad-CAM at the last conv and reduces ImageNet-size BN losses by the channel mean (issue 21);
    # older configs took it at the pooling input (classic CAM) and summed over channels at every size
    5: {"cam_layer": "pool", "synthesis_bn_reduction": "sum"},
    # v7 adds ``layer_rule`` (issue 25); older checkpoints were built with the uniform rule
    6: {"layer_rule": "uniform"},
}
"""Migrations from schema version N to N+1, as data: the values a version-N config meant for the fields that
version N+1 added or whose default it changed (a field the config sets itself is kept)."""


def has_weight_budget(config: Any) -> bool:
    """Whether ``config`` asks for mixed-precision weights (``size_budget`` or ``avg_w_bits``)."""
    return config.size_budget is not None or config.avg_w_bits is not None


def budget_replaces(config: Any) -> tuple[str, ...]:
    """The uniform bit fields a budget of ``config`` replaces (``w_bits`` and/or ``a_bits``)."""
    return (("w_bits",) if has_weight_budget(config) else ()) + (("a_bits",) if config.avg_a_bits is not None else ())


def _check_mixed(config: Any) -> None:
    """The cross-field rules of mixed precision: one weight budget, never with an explicit bit-width it replaces,
    and an average no smaller than the smallest candidate."""
    if config.size_budget is not None and config.avg_w_bits is not None:
        raise ConfigError(f"size_budget={config.size_budget!r} and avg_w_bits={config.avg_w_bits!r} are both set; "
                          "give one weight budget")
    for budget, bits in (("size_budget", "w_bits"), ("avg_w_bits", "w_bits"), ("avg_a_bits", "a_bits")):
        if getattr(config, budget) is not None and is_set(config, bits):
            raise ConfigError(f"{budget}={getattr(config, budget)!r} and {bits}={getattr(config, bits)!r} are both set; "
                              f"the budget chooses the bits per layer: drop {bits}")
    for avg, candidates in (("avg_w_bits", "w_bits_candidates"), ("avg_a_bits", "a_bits_candidates")):
        value, smallest = getattr(config, avg), min(getattr(config, candidates))
        if value is not None and value < smallest:
            raise ConfigError(f"{avg}={value!r} is below the smallest of {candidates} ({smallest} bits): no "
                              "allocation reaches it")
    for name in ("w_bits_candidates", "a_bits_candidates"):
        setattr(config, name, sorted({int(b) for b in getattr(config, name)}))
    for name in ("layer_w_bits", "layer_a_bits"):
        setattr(config, name, {str(k): int(v) for k, v in getattr(config, name).items()})


def _pkg_version() -> str:
    from .version import __version__

    return __version__


def _copy(v: Any) -> Any:
    if isinstance(v, dict):
        return dict(v)
    return list(v) if isinstance(v, (list, tuple)) else v


def _check_known(cls: type, data: dict[str, Any]) -> None:
    known = set(_fields(cls))
    unknown = sorted(set(data) - known)
    if unknown:
        import difflib

        hints = []
        for u in unknown:
            close = difflib.get_close_matches(u, known, n=1)
            hints.append(f"{u!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"unknown {cls.__name__} field(s): {', '.join(hints)}")


_PAPER_SCHEDULE = ("num_images", "synthesis_iterations", "synthesis_batch_size", "synthesis_bn_reduction",
                   "synthesis_ce_beta", "synthesis_ce_gamma", "lpf_d0", "tau", "lambda_ce", "lambda_cam",
                   "kd_temperature", "learning_rate", "train_batch_size", "num_epochs", "seed")


def _paper_setting(family: str, input_size: int, **changes: Any) -> dict[str, Any]:
    resolved = SynQConfig(**changes).resolve(family=family, input_size=input_size)
    return {k: getattr(resolved, k) for k in _PAPER_SCHEDULE}


PAPER_SETTINGS: dict[str, dict[str, Any]] = {
    # ImageNet CNNs (ResNet-18/50, MobileNetV2): 5,120 images, the authors' BN loss (channel mean) with their
    # beta 0.1 / gamma 0.5, batch 16 fine-tuning, the authors' ResNet-18 W3A3 loss weights, their filter cut-off.
    "imagenet_cnn": _paper_setting("cnn", 224),
    # ViTs (DeiT, Swin): PSAQ-ViT's 32 synthetic images.
    "imagenet_vit": _paper_setting("vit", 224, num_images=32),
    # CIFAR-10 ResNet-20.
    "cifar": _paper_setting("cnn", 32),
}
"""The paper's schedule per teacher family (every value from the field defaults and :func:`paper_defaults`);
every recipe spells its bits and starts from one of these."""
