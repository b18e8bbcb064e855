"""How the teacher and student forwards run on an accelerator (issue 24): autocast precision, memory layout, compile.

``precision`` is ``"fp32"`` (the default: every op in float32, the only setting that reproduces the CPU numbers bit
for bit), ``"bf16"`` or ``"fp16"``: the teacher's and the student's forwards then run under ``torch.autocast``
(convolutions, linears and matmuls in the low precision), while everything that decides a result keeps float32:
the quantizers cast their input to float32 before computing scales and rounding (``synq_hf.quant.fake_quant``),
the BN-statistics loss and the patch-similarity KDE accumulate in float32 (``synq_hf.synthesis``), the fine-tuning
losses and the Grad-CAM maps cast to float32 (``synq_hf.training``). The synthetic pixels, their Adam state and the
student's weights stay float32 (autocast, not a cast of the model). ``fp16`` needs CUDA (and, in fine-tuning,
the gradient scaler ``TrainingArguments(fp16=True)`` brings); ``bf16`` runs on CUDA and on CPU (slowly: CPU has
no bf16 speed-up worth having, it is there to test the path).

channels_last (NHWC) is what cuDNN's tensor-core convolutions read natively; it is used for CNNs on CUDA only:
on CPU it changes the float summation order and would move the CPU numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from .config import COMPILE_MODES, PRECISIONS
from .errors import ConfigError

__all__ = ["COMPILE_MODES", "PRECISIONS", "autocast", "autocast_dtype", "check_precision", "compile_blocks",
           "float32", "training_precision", "uncompile_blocks", "wants_channels_last"]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
COMPILE_BACKEND = "inductor"
"""Backend of :func:`compile_blocks` (tests set ``"eager"``: same dynamo tracing and guards, no C++ build)."""


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of ``precision`` (None for fp32)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r} is not allowed; choose one of {list(PRECISIONS)}")
    return _DTYPES.get(precision)


def check_precision(precision: str, device: torch.device | str, *, what: str = "precision") -> None:
    """Raise a one-line ``ConfigError`` when ``precision`` cannot run on ``device`` (fp16 off CUDA, bf16 on a
    GPU without bf16, low precision on devices torch cannot autocast)."""
    dtype = autocast_dtype(precision)
    if dtype is None:
        return
    kind = torch.device(device).type
    if precision == "fp16" and kind != "cuda":
        raise ConfigError(f"{what}='fp16' needs a CUDA device (this run is on {kind}); use 'bf16' or 'fp32'")
    if kind == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"{what}='bf16': this GPU has no bfloat16 support; use 'fp16' or 'fp32'")
    if kind not in ("cuda", "cpu"):
        raise ConfigError(f"{what}={precision!r} is supported on cuda and cpu, not {kind}; use 'fp32'")


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``precision`` on ``device``'s type; a no-op context for fp32."""
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


@contextlib.contextmanager
def float32(device: torch.device | str) -> Iterator[None]:
    """Switch autocast off (inside an autocast region): what follows computes in the dtype of its inputs."""
    kind = torch.device(device).type
    if torch.is_autocast_enabled(kind):
        with torch.autocast(kind, enabled=False):
            yield
    else:
        yield


def wants_channels_last(family: str, device: torch.device | str) -> bool:
    """Whether a model of ``family`` should run channels_last on ``device``: CNNs on CUDA only."""
    return family == "cnn" and torch.device(device).type == "cuda"


def training_precision(precision: str, args: object) -> str:
    """The fine-tuning precision from ``finetune_precision`` and ``TrainingArguments``' ``bf16``/``fp16`` flags.

    The flags alone (``finetune_precision="fp32"``) select their precision; ``fp16`` needs ``fp16=True`` (its
    gradient scaler lives in accelerate); a flag that contradicts ``finetune_precision`` raises ``ConfigError``.
    """
    flags = [name for name in ("bf16", "fp16") if getattr(args, name, False)]
    if len(flags) > 1:
        raise ConfigError("TrainingArguments sets both bf16 and fp16; choose one")
    if flags and precision == "fp32":
        return flags[0]
    if flags and flags[0] != precision:
        raise ConfigError(f"finetune_precision={precision!r} contradicts TrainingArguments({flags[0]}=True); "
                          "set one of them")
    if precision == "fp16" and not flags:
        raise ConfigError("finetune_precision='fp16' needs TrainingArguments(fp16=True) for its gradient scaler "
                          "(SynQTrainingArguments and build_training_args set it)")
    return precision


def compile_blocks(model: nn.Module, names: list[str], mode: str, *, skip: tuple[str, ...] = ()) -> list[str]:
    """``torch.compile`` the ``forward`` of the submodules ``names`` of ``model`` in place (an instance attribute:
    parameters, state-dict keys and the modules' own hooks stay as they are, hooks run eagerly around the compiled
    code). Blocks that contain a module named in ``skip`` (hooked anew every step, e.g. the Grad-CAM target, which
    would make the compiled code re-trace each step) stay eager. :func:`uncompile_blocks` undoes it.

    Returns the names compiled. ``mode`` is a ``torch.compile`` mode; ``"off"`` compiles nothing.
    """
    if mode not in COMPILE_MODES:
        raise ConfigError(f"finetune_compile={mode!r} is not allowed; choose one of {list(COMPILE_MODES)}")
    if mode == "off":
        return []
    options = {"backend": COMPILE_BACKEND}
    if mode != "default" and COMPILE_BACKEND == "inductor":
        options["mode"] = mode
    done = []
    for name in names:
        if any(s == name or s.startswith(name + ".") for s in skip):
            continue
        module = model.get_submodule(name)
        module.forward = torch.compile(module.forward, **options)
        done.append(name)
    return done


def uncompile_blocks(model: nn.Module, names: list[str]) -> None:
    """Undo :func:`compile_blocks`: the blocks run their class's eager ``forward`` again."""
    for name in names:
        module = model.get_submodule(name)
        if "forward" in vars(module):
            del module.forward
