"""``SynQConfig``: every knob of the SynQ method in one validated, versioned, JSON-serializable dataclass.

Fields whose best value depends on the teacher (input size, CNN vs ViT) default to ``None`` and are
filled by :meth:`SynQConfig.resolve` with the paper's setting for that family, so a bare
``SynQConfig(w_bits=4, a_bits=4)`` reproduces the paper and every value actually used is recorded.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from transformers.utils.quantization_config import QuantizationConfigMixin

from .errors import ConfigError

CONFIG_VERSION = 2
"""Schema version written into every saved config; bump it (and extend ``_MIGRATIONS``) on breaking changes."""

CONFIG_NAME = "synq_config.json"

RANGE_SEARCH_P = 3.0
"""Default exponent of the clip-range searches (``synq_hf.quant.range_search``): L3 beat MSE by 15 points at W3A3."""


def _f(default: Any, help: str, choices: tuple | None = None, **kw: Any) -> Any:
    """A dataclass field carrying its help text (shown by the CLI and docs), PEFT-style."""
    meta = {"help": help}
    if choices is not None:
        meta["choices"] = choices
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass
class SynQConfig(QuantizationConfigMixin):
    """Configuration of SynQ zero-shot quantization: quantizer, calibration, synthesis and fine-tuning.

    It is also the ``quantization_config`` of transformers models (``quant_method="synq"``), so
    ``AutoModelForImageClassification.from_pretrained(id, quantization_config=SynQConfig(...))`` works
    once ``synq_hf`` is imported.
    """

    quant_method: str = _f("synq", "Quantization method name used by transformers (always 'synq').")

    # -- quantizer ---------------------------------------------------------------------------------
    w_bits: int = _f(4, "Bit-width of weights (2-8).")
    a_bits: int = _f(4, "Bit-width of activations (2-8).")
    weight_granularity: Literal["per_channel", "per_tensor"] = _f(
        "per_channel", "Weight quantization granularity.", ("per_channel", "per_tensor")
    )
    weight_symmetric: bool | None = _f(
        None, "Symmetric weight quantization. None: asymmetric for CNNs, symmetric for ViTs (PSAQ-ViT)."
    )
    act_symmetric: bool = _f(False, "Symmetric activation quantization (default asymmetric).")
    first_layer_bits: int | None = _f(
        None, "Bit override (weights and activations) for the first layer; None keeps w_bits/a_bits."
    )
    last_layer_bits: int | None = _f(
        None, "Bit override (weights and activations) for the last layer (classifier); None keeps w_bits/a_bits."
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
        False, "Learn activation scale/zero-point (LSQ) during fine-tuning instead of freezing the calibrated range."
    )
    learnable_weight_scale: bool = _f(
        False, "Learn per-channel weight step sizes (LSQ) during fine-tuning, initialized from the weight range."
    )
    act_range_init: Literal["minmax", "search"] = _f(
        "search", "Activation range: EMA min-max, or the clip with the lowest Lp error (histogram search).",
        ("minmax", "search"),
    )
    weight_range_init: Literal["minmax", "search"] = _f(
        "search", "Weight range per output channel: min-max, or min-max shrunk by the ratio with the lowest Lp error.",
        ("minmax", "search"),
    )
    range_search_p: float = _f(
        RANGE_SEARCH_P, "Exponent p of the Lp error minimized by the range searches (2: MSE; 3 weighs the clipped tail more)."
    )

    # -- ViT/DeiT/Swin placement (issue 13) -------------------------------------------------------
    vit_placement: Literal["psaq", "loose"] = _f(
        "psaq",
        "ViT/DeiT/Swin quantizer placement: 'psaq' quantizes every tensor PSAQ-ViT does (the image, the embeddings, "
        "the mid-block residual stream, the attention-projection and fc2 outputs, plus everything of 'loose'); "
        "'loose' only every Linear input, q/k/v, the pre-softmax scores, block outputs and the logits.",
        ("psaq", "loose"),
    )

    # -- calibration -------------------------------------------------------------------------------
    calibration_num_images: int = _f(512, "Images used to calibrate activation ranges.")
    calibration_batch_size: int = _f(64, "Batch size of the calibration forward passes.")
    ema_momentum: float = _f(0.9, "EMA momentum of the min/max observers during calibration (0 < m < 1).")

    # -- synthesis ---------------------------------------------------------------------------------
    num_images: int = _f(5120, "Number of synthetic images to generate.")
    synthesis_iterations: int = _f(1000, "Optimization iterations per synthetic batch.")
    synthesis_batch_size: int | None = _f(None, "Synthetic images optimized together. None: 256 (CNN) or 32 (ViT).")
    synthesis_lr: float | None = _f(None, "Adam learning rate on pixels. None: 0.5 (CNN), 0.2 (ViT), 0.25 (Swin).")
    synthesis_ce_beta: float | None = _f(
        None, "Weight of the hard-sample CE term. None: 0.1 (ImageNet-size), 10 (32x32 inputs, HAST setting)."
    )
    synthesis_ce_gamma: float | None = _f(
        None, "Focal exponent of the hard-sample CE term. None: 0.5 (ImageNet-size), 2 (32x32 inputs)."
    )
    synthesis_augment: bool | None = _f(
        None, "Random-resized-crop + flip during CNN synthesis. None: on for inputs of 64 px and up."
    )
    synthesis_lr_patience: int = _f(50, "ReduceLROnPlateau patience (iterations).")
    synthesis_lr_factor: float = _f(0.1, "ReduceLROnPlateau decay factor.")
    synthesis_min_lr: float = _f(1e-4, "ReduceLROnPlateau minimum learning rate.")
    synthesis_calibration_centres: bool = _f(False, "TexQ-style: also synthesize one calibration-centre image per class.")
    synthesis_groups_per_forward: int = _f(
        1, "Groups of synthesis_batch_size images sent through one forward (BN statistics stay per group)."
    )
    synthesis_tv_weight: float = _f(1e-4, "ViT synthesis: weight of the total-variation prior.")
    synthesis_kde_bandwidth: float = _f(0.01, "ViT synthesis: Gaussian KDE bandwidth of patch similarities.")
    synthesis_kde_points: int = _f(10, "ViT synthesis: KDE evaluation points between batch min and max.")
    synthesis_log_every: int = _f(50, "Log synthesis losses every k iterations (no host sync in between).")

    # -- fine-tuning (Eq. 6) ----------------------------------------------------------------------
    lpf_d0: float | None = _f(None, "Low-pass filter cut-off D0. None: 80 (ImageNet-size), 8 (32x32). 0 disables.")
    lpf_mode: Literal["once", "per_batch"] = _f(
        "once", "Filter the synthetic set once before fine-tuning (paper) or every batch after augmentation.",
        ("once", "per_batch"),
    )
    tau: float | None = _f(None, "Difficulty threshold of selective CE (0-1). None: 0.5 (ImageNet), 0.7 (CIFAR).")
    lambda_ce: float = _f(0.5, "Weight of the selective cross-entropy term (>= 0).")
    lambda_cam: float = _f(50.0, "Weight of the Grad-CAM alignment term (>= 0).")
    kd_temperature: float = _f(1.0, "KD temperature; 1 is the paper's plain KL (the loss is scaled by T^2).")
    kd_weight: float = _f(1.0, "Weight of the KD term (the authors' code: 20 at T=20, i.e. 8000 x KL).")
    cam_target: Literal["label", "argmax"] = _f(
        "label", "Grad-CAM target class: the synthetic label (paper) or the teacher's argmax (authors' code).",
        ("label", "argmax"),
    )
    learning_rate: float | None = _f(None, "SGD learning rate. None: 1e-3 (CIFAR), 1e-4 (ImageNet CNN), 1e-5 (ViT).")
    quantizer_lr: float | None = _f(
        None, "Learning rate of learnable quantizer step sizes (own parameter group). None: learning_rate."
    )
    max_grad_norm: float = _f(
        5.0, "Clip the gradient norm of each fine-tuning step to this (0 disables; unclipped SGD can diverge)."
    )
    augment: Literal["none", "shift_flip", "crop_flip"] = _f(
        "none", "Fine-tuning augmentation per batch: random shift + flip, or random-resized-crop (0.5-1) + flip.",
        ("none", "shift_flip", "crop_flip"),
    )
    momentum: float = _f(0.9, "SGD momentum.")
    weight_decay: float = _f(1e-4, "SGD weight decay.")
    train_batch_size: int | None = _f(None, "Fine-tuning batch size per device. None: 256 (32x32 inputs), 16 otherwise.")
    num_epochs: float = _f(100.0, "Fine-tuning epochs over the synthetic set.")
    max_steps: int | None = _f(None, "Stop fine-tuning after this many steps (overrides num_epochs).")
    hast_feature_alignment: bool = _f(False, "Authors' extra: HAST feature-alignment loss.")
    hast_weight: float = _f(1.0, "Weight of the HAST feature-alignment loss.")
    perturbed_loss: bool = _f(False, "Authors' extra: sign-gradient (FGSM-style) perturbed-sample KD loss.")
    perturbed_eps: float = _f(0.01, "Step size of the sign-gradient perturbation (normalized pixel units).")
    perturbed_weight: float = _f(1.0, "Weight of the perturbed-sample loss.")

    # -- bookkeeping ------------------------------------------------------------------------------
    seed: int = _f(0, "Random seed of synthesis, calibration and fine-tuning.")
    version: int = _f(CONFIG_VERSION, "Config schema version (for loading old checkpoints).")

    def __post_init__(self) -> None:
        self.validate()

    # -- validation -------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first field whose value is not allowed, and what is."""
        if self.quant_method != "synq":
            raise ConfigError(f"quant_method={self.quant_method!r} is not allowed; it is always 'synq'")
        for name in ("w_bits", "a_bits"):
            _check_bits(name, getattr(self, name))
        for name in ("first_layer_bits", "last_layer_bits"):
            if getattr(self, name) is not None:
                _check_bits(name, getattr(self, name))
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ConfigError(f"{f.name}={getattr(self, f.name)!r} is not allowed; choose one of {list(choices)}")
        for name in ("include", "exclude"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, [value])
            elif not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{name} must be a list of glob patterns (strings), got {value!r}")
            else:
                setattr(self, name, list(value))
        for name in ("calibration_num_images", "calibration_batch_size", "num_images", "synthesis_lr_patience",
                     "synthesis_groups_per_forward", "synthesis_kde_points", "synthesis_log_every"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("synthesis_iterations", self.synthesis_iterations, minimum=0)
        _check_int("seed", self.seed, minimum=0)
        for name in ("synthesis_batch_size", "train_batch_size", "max_steps"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=1)
        _check_range("ema_momentum", self.ema_momentum, 0.0, 1.0, open_low=True, open_high=True)
        if self.tau is not None:
            _check_range("tau", self.tau, 0.0, 1.0)
        _check_range("synthesis_lr_factor", self.synthesis_lr_factor, 0.0, 1.0, open_low=True, open_high=True)
        _check_range("momentum", self.momentum, 0.0, 1.0, open_high=True)
        for name in ("kd_weight", "max_grad_norm", "lambda_ce", "lambda_cam", "weight_decay", "synthesis_tv_weight", "hast_weight",
                     "perturbed_eps", "perturbed_weight", "synthesis_min_lr"):
            _check_range(name, getattr(self, name), 0.0, None)
        _check_range("range_search_p", self.range_search_p, 0.0, None, open_low=True)
        for name in ("synthesis_lr", "synthesis_ce_beta", "synthesis_ce_gamma", "lpf_d0", "learning_rate",
                     "quantizer_lr"):
            if getattr(self, name) is not None:
                _check_range(name, getattr(self, name), 0.0, None, open_low=name in ("synthesis_lr", "learning_rate", "quantizer_lr"))
        _check_range("kd_temperature", self.kd_temperature, 0.0, None, open_low=True)
        _check_range("synthesis_kde_bandwidth", self.synthesis_kde_bandwidth, 0.0, None, open_low=True)
        _check_range("num_epochs", self.num_epochs, 0.0, None, open_low=True)
        for name in ("weight_symmetric", "synthesis_augment"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true, false or null, got {getattr(self, name)!r}")
        for name in ("act_symmetric", "learnable_act_scale", "learnable_weight_scale", "synthesis_calibration_centres",
                     "hast_feature_alignment", "perturbed_loss"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.version != CONFIG_VERSION:
            raise ConfigError(
                f"version={self.version!r}: this synq_hf writes config version {CONFIG_VERSION}; "
                "load older configs with SynQConfig.from_dict, which migrates them"
            )

    # -- family-dependent defaults ----------------------------------------------------------------
    def resolve(self, *, family: str, input_size: int) -> SynQConfig:
        """Return a copy with every ``None`` default replaced by the paper's value for this teacher.

        ``family`` is ``"cnn"``, ``"vit"`` or ``"swin"``; ``input_size`` the teacher's image side in pixels.
        """
        if family not in ("cnn", "vit", "swin"):
            raise ConfigError(f"family={family!r} is not allowed; choose one of ['cnn', 'vit', 'swin']")
        small = input_size < 64
        vit = family != "cnn"
        defaults = {
            "weight_symmetric": vit,
            "synthesis_batch_size": 32 if vit else 256,
            "synthesis_lr": {"cnn": 0.5, "vit": 0.2, "swin": 0.25}[family],
            "synthesis_ce_beta": 10.0 if small else 0.1,
            "synthesis_ce_gamma": 2.0 if small else 0.5,
            "synthesis_augment": not small,
            "lpf_d0": 8.0 if small else 80.0,
            "tau": 0.7 if small else 0.5,
            "learning_rate": 1e-3 if small else (1e-5 if vit else 1e-4),
            "train_batch_size": 256 if small else 16,
        }
        filled = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        return self.replace(**filled)

    def with_loss_preset(self, name: str) -> SynQConfig:
        """A copy with the loss weights, temperature and augmentation of ``LOSS_PRESETS[name]``."""
        if name not in LOSS_PRESETS:
            raise ConfigError(f"loss preset {name!r} does not exist; choose one of {sorted(LOSS_PRESETS)}")
        return self.replace(**LOSS_PRESETS[name])

    def replace(self, **changes: Any) -> SynQConfig:
        """A validated copy with some fields changed (unknown names raise ``ConfigError``)."""
        _check_known(changes)
        return dataclasses.replace(self, **changes)

    # -- serialization ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict of every field (lists copied)."""
        return {f.name: _copy(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], return_unused_kwargs: bool = False, **kwargs: Any) -> SynQConfig:
        """Build from a dict written by any synq_hf version; older schema versions are migrated.

        ``return_unused_kwargs``/``kwargs`` follow transformers' ``QuantizationConfigMixin.from_dict``.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"a SynQConfig must be built from a dict, got {type(data).__name__}")
        data = dict(data)
        data.pop("quant_method", None)
        version = data.pop("version", CONFIG_VERSION)
        if not isinstance(version, int) or version < 1 or version > CONFIG_VERSION:
            raise ConfigError(
                f"config version {version!r} is not supported: this synq_hf {_pkg_version()} reads versions "
                f"1-{CONFIG_VERSION}; upgrade synq_hf to load newer checkpoints"
            )
        for v in range(version, CONFIG_VERSION):
            data = _MIGRATIONS[v](data)
        _check_known(data)
        known = {f.name for f in dataclasses.fields(cls)}
        data.update({k: v for k, v in kwargs.items() if k in known})
        config = cls(**data)
        if return_unused_kwargs:
            return config, {k: v for k, v in kwargs.items() if k not in known}  # type: ignore[return-value]
        return config

    def to_diff_dict(self) -> dict[str, Any]:
        return self.to_dict()

    def update(self, **kwargs: Any) -> dict[str, Any]:
        """Set known fields in place (validated); return the unknown ones, like transformers' configs."""
        known = {f.name for f in dataclasses.fields(self)}
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
    def from_json_file(cls, path: str | os.PathLike) -> SynQConfig:
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {os.fspath(path)!r} does not exist") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"config file {os.fspath(path)!r} is not valid JSON: {e}") from None
        return cls.from_dict(data)

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """Help text of every field (used by the CLI and the docs)."""
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


LOSS_PRESETS: dict[str, dict[str, Any]] = {
    # Eq. 6 as the paper states it: a plain KL, the authors' ResNet-18 W3A3 weights for CE and CAM.
    "paper": {"kd_weight": 1.0, "kd_temperature": 1.0, "lambda_ce": 0.5, "lambda_cam": 50.0},
    # The authors' code: 20 x T^2 x KL at T = 20 (8000 x KL), crop + flip on every batch, filter after it.
    "authors": {"kd_weight": 20.0, "kd_temperature": 20.0, "lambda_ce": 0.5, "lambda_cam": 50.0,
                "augment": "crop_flip", "lpf_mode": "per_batch"},
}
"""Named loss balances (``SynQConfig.with_loss_preset``, ``synq-hf quantize --loss-preset``)."""


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 had min-max ranges only; version 2 searches them by default (the quantizers must match)."""
    out = {"act_range_init": "minmax", "weight_range_init": "minmax"}
    out.update(data)
    return out


# Migrations from schema version N to N+1.
_MIGRATIONS: dict[int, Any] = {1: _v1_to_v2}


def _pkg_version() -> str:
    from .version import __version__

    return __version__


def _copy(v: Any) -> Any:
    return list(v) if isinstance(v, (list, tuple)) else v


def _check_known(data: dict[str, Any]) -> None:
    known = {f.name for f in dataclasses.fields(SynQConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        import difflib

        hints = []
        for u in unknown:
            close = difflib.get_close_matches(u, known, n=1)
            hints.append(f"{u!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"unknown SynQConfig field(s): {', '.join(hints)}")


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
