"""What every setting is made of: constants, the value checks, and ``setting`` (a dataclass field carrying its
help, choices, check and group). The settings modules build their fields from these."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import field
from typing import Any

from ..errors import ConfigError

CONFIG_VERSION = 8
"""Schema version written into every saved config; bump it (and add the old meaning to ``MIGRATIONS``) on breaking
changes."""

CONFIG_NAME = "synq_config.json"

PRECISIONS = ("fp32", "bf16", "fp16")
"""Choices of ``synthesis_precision`` / ``finetune_precision`` (``synq_hf.precision`` runs them)."""
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
"""Choices of ``finetune_compile``: off, or a ``torch.compile`` mode."""

RANGE_SEARCH_P = 3.0
"""Default exponent of the clip-range searches (``synq_hf.quant.range_search``): L3 beat MSE by 15 points at W3A3."""


# -- field checks (each field names its own in its metadata) --------------------------------------------


def check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}={value!r} is not allowed; it must be an integer >= {minimum}")


def check_bits(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 8:
        raise ConfigError(f"{name}={value!r} is not allowed; bit-widths must be integers from 2 to 8")


def check_range(
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


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")


def check_bit_width(name: str, value: Any) -> None:
    check_bits(name, value)


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


def check_size_budget(name: str, value: Any) -> None:
    parse_size_budget(value, name)


def check_bits_list(name: str, value: Any) -> None:
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{name}={value!r} is not allowed; give a non-empty list of bit-widths (2-8)")
    for v in value:
        check_bits(name, v)


def check_layer_bits(name: str, value: Any) -> None:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"{name} must map module names to bit-widths, e.g. {{\"conv1\": 8}}; got {value!r}")
    for k, v in value.items():
        check_bits(f"{name}[{k!r}]", v)


def check_avg_bits(name: str, value: Any) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 32
    if not ok:
        raise ConfigError(f"{name}={value!r} is not allowed; an average bit-width must be a number above 0 and below "
                          "32 (float weights are 32-bit)")


def int_at_least(minimum: int) -> Callable[[str, Any], None]:
    return lambda name, value: check_int(name, value, minimum)


def number_in(low: float = 0.0, high: float | None = None, *, open_low: bool = False,
            open_high: bool = False) -> Callable[[str, Any], None]:
    return lambda name, value: check_range(name, value, low, high, open_low, open_high)


def setting(default: Any, help: str, choices: tuple | None = None, check: Callable[[str, Any], None] | None = None,
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
