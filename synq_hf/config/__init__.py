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
from dataclasses import dataclass
from typing import Any

from transformers.utils.quantization_config import QuantizationConfigMixin

from ..errors import ConfigError
from .fields import (
    COMPILE_MODES,
    CONFIG_NAME,
    CONFIG_VERSION,
    PRECISIONS,
    RANGE_SEARCH_P,
    DefaultBits,
    check_field,
    int_at_least,
    is_set,
    parse_size_budget,
    setting,
)
from .finetune import FinetuneSettings, LossSettings, ScheduleSettings
from .presets import LOSS_PRESETS, MIGRATIONS, RESOLVED_FIELDS, paper_defaults, weight_symmetric_default
from .quantization import QuantizationSettings
from .synthesis import SynthesisSettings


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
            data = {**MIGRATIONS[v], **data}
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

    version: int = setting(CONFIG_VERSION, "Config schema version (for loading old checkpoints).")


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

    seed: int = setting(0, "Random seed of synthesis, calibration and fine-tuning.", check=int_at_least(0))
    version: int = setting(CONFIG_VERSION, "Config schema version (for loading old checkpoints).")

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


def has_weight_budget(config: Any) -> bool:
    """Whether ``config`` asks for mixed-precision weights (``size_budget`` or ``avg_w_bits``)."""
    return config.size_budget is not None or config.avg_w_bits is not None


def reconstruction_image_copies(config: Any) -> tuple[bool, int]:
    """Whether block reconstruction low-pass filters its images (``reconstruct_synq`` with ``lpf_d0`` and
    ``reconstruct_synq_images`` other than ``"raw"``), and how many copies of each image it runs on (2: raw, then
    filtered)."""
    filtered = bool(config.reconstruct_synq and config.lpf_d0) and config.reconstruct_synq_images != "raw"
    return filtered, 2 if filtered and config.reconstruct_synq_images == "both" else 1


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
    from ..version import __version__

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


__all__ = [
    "COMPILE_MODES",
    "CONFIG_NAME",
    "CONFIG_VERSION",
    "DefaultBits",
    "FINETUNE_FIELDS",
    "FinetuneSettings",
    "LOSS_PRESETS",
    "LossSettings",
    "MIGRATIONS",
    "PAPER_SETTINGS",
    "PRECISIONS",
    "QUANTIZATION_FIELDS",
    "QuantizationSettings",
    "RESOLVED_FIELDS",
    "RANGE_SEARCH_P",
    "SYNTHESIS_FIELDS",
    "ScheduleSettings",
    "SynQConfig",
    "SynQQuantizationConfig",
    "SynthesisSettings",
    "budget_replaces",
    "check_field",
    "has_weight_budget",
    "is_set",
    "paper_defaults",
    "reconstruction_image_copies",
    "weight_symmetric_default",
    "parse_size_budget",
]
