"""``SynQTrainingArguments``: ``TrainingArguments`` plus SynQ's loss settings (the TRL ``SFTConfig`` pattern)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import torch
from transformers import TrainingArguments

from ..config import LossSettings, ScheduleSettings, SynQConfig, check_field
from ..errors import ConfigError
from ..precision import training_precision

__all__ = ["SynQTrainingArguments"]


@dataclass
class SynQTrainingArguments(LossSettings, TrainingArguments):
    """``TrainingArguments`` with SynQ's loss fields (``lpf_d0``, ``tau``, ``lambda_ce``, ``lambda_cam`` ...).

    :meth:`from_config` builds it from a resolved ``SynQConfig``: each schedule field of the config sets the
    ``TrainingArguments`` field its metadata names (``train_batch_size`` -> ``per_device_train_batch_size``,
    ``num_epochs`` -> ``num_train_epochs`` ...), each loss field is copied by name.
    """

    def __post_init__(self) -> None:
        # finetune_precision and TrainingArguments' bf16/fp16 flags say the same thing: make them agree before
        # TrainingArguments reads the flags (fp16 needs accelerate's gradient scaler, which fp16=True brings)
        if self.finetune_precision in ("bf16", "fp16") and not (self.bf16 or self.fp16):
            setattr(self, self.finetune_precision, True)
        self.finetune_precision = training_precision(self.finetune_precision, self)
        if self.bf16 and not self.use_cpu and not _has_accelerator():
            self.use_cpu = True  # bf16 autocast runs on CPU, but TrainingArguments wants that said explicitly
        super().__post_init__()
        for f in dataclasses.fields(LossSettings):
            check_field(f, getattr(self, f.name))

    @classmethod
    def from_config(
        cls, config: SynQConfig, output_dir: str | os.PathLike, *, max_steps: int | None = None,
        progress: bool = True, **overrides: Any,
    ) -> SynQTrainingArguments:
        """The arguments of a SynQ fine-tuning run from a resolved ``config``; ``overrides`` win over everything.

        Choices: cosine learning-rate decay without warm-up; gradient-norm clipping at ``config.max_grad_norm``;
        ``remove_unused_columns=False`` (our collator names the columns); no reporting integrations; one
        checkpoint every 500 steps, the last two kept; DDP without unused-parameter search.
        """
        for name in ("train_batch_size", "learning_rate", "tau", "lpf_d0"):
            if getattr(config, name) is None:
                raise ConfigError(f"{name} is unset: pass config.resolve(family=..., input_size=...) to "
                                  "build_training_args")
        schedule = {f.metadata["trainer"]: getattr(config, f.name) for f in dataclasses.fields(ScheduleSettings)}
        steps = max_steps if max_steps is not None else schedule["max_steps"]
        schedule["max_steps"] = steps if steps is not None else -1
        kwargs: dict[str, Any] = dict(
            output_dir=os.fspath(output_dir),
            **schedule,
            **{f.name: getattr(config, f.name) for f in dataclasses.fields(LossSettings)},
            seed=config.seed,
            data_seed=config.seed,
            lr_scheduler_type="cosine",
            warmup_steps=0,
            remove_unused_columns=False,
            report_to="none",
            save_strategy="steps",
            save_steps=500,
            save_total_limit=2,
            logging_steps=50,
            dataloader_num_workers=0,
            ddp_find_unused_parameters=False,
            disable_tqdm=not progress,
            dataloader_pin_memory=torch.cuda.is_available(),
            logging_nan_inf_filter=False,  # its per-step isnan check syncs the host; SynQTrainer stops on NaN itself
        )
        if torch.cuda.is_available():  # pinned batches copied without blocking the host (no sync per step)
            kwargs["accelerator_config"] = {"non_blocking": True}
        kwargs.update(overrides)
        return cls(**kwargs)


def _has_accelerator() -> bool:
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or torch.backends.mps.is_available() or bool(xpu and xpu.is_available())
