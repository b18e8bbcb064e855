"""``finetune``: the one call the pipeline and the Python API use to run SynQ fine-tuning."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from torch import nn
from transformers import TrainerCallback, TrainingArguments

from ..architectures import ArchSpec
from ..config import LossSettings, SynQConfig
from ..pipeline import LoadedModel, match_spec, resolve_config
from .arguments import SynQTrainingArguments
from .frozen import frozen
from .trainer import SynQTrainer


class TrainedSteps(TrainerCallback):
    """A ``TrainerCallback`` noting how many steps and epochs were really trained (for the card): ``.state``."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Record the global step, the epoch and the global batch size."""
        self.state = {"global_step": state.global_step, "epoch": round(float(state.epoch or 0), 2),
                      "batch_size": args.per_device_train_batch_size * max(args.world_size, 1)}


def build_training_args(
    config: SynQConfig, output_dir: str | os.PathLike, *, max_steps: int | None = None, progress: bool = True,
    **overrides: Any,
) -> SynQTrainingArguments:
    """``SynQTrainingArguments.from_config``: the ``TrainingArguments`` of a resolved ``SynQConfig``."""
    return SynQTrainingArguments.from_config(config, output_dir, max_steps=max_steps, progress=progress, **overrides)


def finetune(
    teacher: nn.Module | LoadedModel,
    student: nn.Module,
    synthetic_dataset: Any,
    config: SynQConfig,
    *,
    output_dir: str | os.PathLike,
    max_steps: int | None = None,
    training_args: TrainingArguments | dict[str, Any] | None = None,
    resume_from_checkpoint: str | bool | None = None,
    augment: bool | str | None = None,
    progress: bool = True,
    save_final: bool = True,
    callbacks: list[TrainerCallback] | None = None,
    spec: ArchSpec | None = None,
) -> nn.Module:
    """Calibrate the student's activation ranges (if it has none yet) and fine-tune it with SynQ; return it.

    ``student`` is the fake-quantized copy of ``teacher`` (``synq_hf.apply.quantize_model``);
    ``synthetic_dataset`` comes from ``synq_hf.synthesis.synthesize``. ``training_args`` is a ready
    ``TrainingArguments`` or a dict of overrides for :func:`build_training_args`. With ``save_final``
    the trained student's state dict goes to ``output_dir`` (``synq_student.safetensors``, main process
    only). ``augment`` overrides ``config.augment`` (``True``: shift + flip under 64 px, else crop + flip);
    ``callbacks`` are added to the trainer. ``config`` may be unresolved (it is resolved here, once, through
    :func:`synq_hf.pipeline.resolve_config`); ``spec`` is the teacher's architecture spec when the caller already
    matched it (default: the ``LoadedModel``'s, else matched here).
    """
    num_classes = image_shape = None
    if isinstance(teacher, LoadedModel):
        num_classes, image_shape = teacher.num_classes, tuple(teacher.data_config["input_size"])
        spec = spec if spec is not None else teacher.spec
        teacher = teacher.model
    if isinstance(training_args, TrainingArguments):
        args = training_args
    else:
        spec = match_spec(teacher, spec)
        size = image_shape[-1] if image_shape else _first_side(synthetic_dataset)
        resolved = resolve_config(config, family=spec.family, input_size=size)
        args = build_training_args(resolved, output_dir, max_steps=max_steps, progress=progress,
                                   **(training_args or {}))
        # overrides win: training_args={"bf16": True} selects bf16 fine-tuning (issue 24); a loss field the caller's
        # config left to resolution follows args (its overrides included), a set one must agree (SynQTrainer checks)
        unset = {f.name: getattr(args, f.name) for f in dataclasses.fields(LossSettings)
                 if getattr(config, f.name) is None}
        config = resolved.replace(finetune_precision=args.finetune_precision, **unset)
    with frozen(teacher):  # the caller's teacher gets its train/eval mode and requires_grad back
        trainer = SynQTrainer(student, teacher, args, synthetic_dataset, config, augment=augment,
                              image_shape=image_shape, num_classes=num_classes, callbacks=callbacks, spec=spec)
        trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    if save_final:
        trainer.save_model(os.fspath(output_dir))
    return trainer.accelerator.unwrap_model(trainer.model)


def _first_side(dataset: Any) -> int:
    import numpy as np

    return int(np.asarray(dataset.with_format("numpy")[0]["pixel_values"]).shape[-1])
