"""``SynQTrainer``: a ``transformers.Trainer`` fine-tuning a fake-quantized student against its frozen teacher.

Loss per batch (Eq. 6 of the paper), each part logged as ``loss_<part>``::

    L = KD(T) + lambda_ce · CE on easy samples (1 − p_teacher(y) <= tau) + lambda_cam · MSE(CAM_s, CAM_t)
        [+ hast_weight · HAST feature alignment] [+ perturbed_weight · loss on sign-gradient inputs]

One teacher forward and one student forward + backward per step: the Grad-CAM maps come from those
forwards (see :mod:`synq_hf.training.cam`). The teacher is never wrapped in DDP and never updated; the
student runs in eval mode (BatchNorm statistics frozen, dropout off) while its weights and any learnable
quantizer scales train with SGD. Checkpoints hold the student's full state dict (quantizer ranges
included) in safetensors and are loaded strictly, so resuming is bit-exact for CNNs and ViTs alike.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import os
import re
import signal
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from ..apply import SYNQ_CONFIG_ATTR, act_quantizers, calibrate, deploy_convert, iter_batches
from ..architectures import ArchSpec, find_spec, get_spec
from ..config import CONFIG_NAME, LossSettings, SynQConfig
from ..errors import CheckpointError, ConfigError, DataError, SynQError
from ..model_info import model_logits, model_num_classes
from ..pipeline import match_spec, resolve_config
from ..precision import (
    autocast,
    check_precision,
    compile_blocks,
    training_precision,
    uncompile_blocks,
    wants_channels_last,
)
from .arguments import SynQTrainingArguments
from .cam import CamHook, CamTarget, resolve_cam_target, student_cam, teacher_forward_cam
from .collator import (
    PIXELS,
    BatchTransform,
    SyntheticCollator,
    calibration_images,
    low_pass_dataset,
    validate_synthetic_dataset,
)
from .divergence import DivergenceMonitor
from .extras import FeatureCapture, feature_alignment_loss, feature_modules, sign_perturbation
from .frozen import ModuleState, frozen
from .losses import cam_alignment_loss, kd_loss, masked_ce, selective_ce

logger = logging.getLogger(__name__)

STUDENT_WEIGHTS = "synq_student.safetensors"
TRAINING_ARGS_NAME = "training_args.bin"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


class TrainingDiverged(SynQError):
    """Fine-tuning produced a non-finite or exploding loss; ``checkpoint`` is the last one saved before (or None)."""

    def __init__(self, message: str, checkpoint: str | None) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint


class TrainingInterrupted(SynQError):
    """Training stopped on SIGTERM after finishing its step; ``checkpoint`` is the folder to resume from."""

    def __init__(self, message: str, checkpoint: str, signum: int | None = None) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint
        self.signum = signum


# -- checkpoints -------------------------------------------------------------------------------------


def save_student(student: nn.Module, output_dir: str, config: SynQConfig | None = None) -> str:
    """Write the student's complete state dict (weights, BN buffers, quantizer ranges) as safetensors."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, STUDENT_WEIGHTS)
    metadata = {"format": "pt", "synq_model_class": type(student).__name__}
    if any(not p.is_contiguous() for p in student.parameters()):  # channels_last weights (CNNs on CUDA)
        student = copy.deepcopy(student).to(memory_format=torch.contiguous_format)
    safetensors.torch.save_model(student, path, metadata=metadata)
    if config is not None:
        config.to_json_file(os.path.join(output_dir, CONFIG_NAME))
    return path


def load_student(student: nn.Module, checkpoint_dir: str) -> None:
    """Load a student state dict written by :func:`save_student` strictly; ``CheckpointError`` on any mismatch."""
    path = os.path.join(checkpoint_dir, STUDENT_WEIGHTS)
    if not os.path.isfile(path):
        raise CheckpointError(
            f"{checkpoint_dir!r} is not a SynQ fine-tuning checkpoint: it has no {STUDENT_WEIGHTS} "
            "(resume from a checkpoint-N folder written by SynQTrainer)"
        )
    try:
        with safetensors.safe_open(path, "pt") as f:
            saved_class = (f.metadata() or {}).get("synq_model_class")
        missing, unexpected = safetensors.torch.load_model(student, path, strict=False, device="cpu")
    except RuntimeError as e:  # shape mismatches
        raise CheckpointError(f"{checkpoint_dir!r} belongs to another model: {str(e).splitlines()[0]} ...") from None
    except safetensors.SafetensorError as e:
        raise CheckpointError(f"{path!r} is corrupt: {e}") from None
    if missing or unexpected or (saved_class and saved_class != type(student).__name__):
        raise CheckpointError(
            f"{checkpoint_dir!r} belongs to another model (saved from {saved_class}, loading into "
            f"{type(student).__name__}): {len(missing)} missing tensors {sorted(missing)[:3]}, "
            f"{len(unexpected)} unexpected {sorted(unexpected)[:3]}"
        )


# Not transformers' get_last_checkpoint: it picks incomplete checkpoints (a killed save) and raises on a missing folder
def last_checkpoint(output_dir: str) -> str | None:
    """The highest-numbered complete ``checkpoint-N`` folder in ``output_dir`` (weights and trainer state)."""
    if not os.path.isdir(output_dir):
        return None
    found = []
    for name in os.listdir(output_dir):
        m = _CHECKPOINT_RE.match(name)
        folder = os.path.join(output_dir, name)
        if m and all(os.path.isfile(os.path.join(folder, f)) for f in (STUDENT_WEIGHTS, "trainer_state.json")):
            found.append((int(m.group(1)), folder))
    return max(found)[1] if found else None


# -- model metadata -----------------------------------------------------------------------------------


def model_image_shape(model: nn.Module) -> tuple[int, int, int] | None:
    """(C, H, W) a timm (``pretrained_cfg``) or transformers (``config.image_size``) model expects."""
    size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size")
    if size and len(size) == 3:
        return tuple(int(s) for s in size)  # type: ignore[return-value]
    cfg = getattr(model, "config", None)
    image_size = getattr(cfg, "image_size", None)
    if image_size is not None:
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        return (int(getattr(cfg, "num_channels", 3)), int(h), int(w))
    return None


# -- SIGTERM: finish the step, save, stop -------------------------------------------------------------


class _StopOnSignal(TrainerCallback):
    """After a SIGTERM, the current optimizer step completes, a checkpoint is saved and training stops; at each log
    and at the end the divergence flags are read (``SynQTrainer._raise_if_diverged``)."""

    def __init__(self, trainer: SynQTrainer) -> None:
        self.trainer = trainer

    def on_step_end(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.trainer._stop_requested():
            control.should_save = True
            control.should_training_stop = True
        if control.should_log or control.should_training_stop or state.global_step >= state.max_steps:
            self.trainer._raise_if_diverged()  # where the Trainer syncs anyway (checkpoints check it themselves)
        return control


# -- the trainer --------------------------------------------------------------------------------------


def trainer_config(model: nn.Module, args: TrainingArguments, config: SynQConfig | None = None) -> SynQConfig:
    """The ``SynQConfig`` a :class:`SynQTrainer` runs: ``config`` (default: the student's own, from
    ``quantize_model``) with the loss settings of ``args`` when it is a ``SynQTrainingArguments``.

    A loss setting given both ways must agree (``None`` in ``config`` means "resolve it", and takes ``args``'s).
    """
    if config is not None and not isinstance(config, SynQConfig):
        raise ConfigError(f"config must be a SynQConfig, got {type(config).__name__}")
    if not isinstance(args, SynQTrainingArguments):
        if config is None:
            raise ConfigError("SynQTrainer needs its loss settings: pass args=SynQTrainingArguments(...) "
                              "(or a SynQConfig as config=)")
        return config
    loss = {f.name: getattr(args, f.name) for f in dataclasses.fields(LossSettings)}
    if config is None:
        base = getattr(model, SYNQ_CONFIG_ATTR, None) or SynQConfig()
        return base.replace(**loss, seed=args.seed)
    clash = [f"{name} ({getattr(config, name)!r} in config, {value!r} in args)" for name, value in loss.items()
             if getattr(config, name) is not None and getattr(config, name) != value]
    if clash:
        raise ConfigError(f"config and args disagree on {', '.join(clash)}: set the loss settings in "
                          "SynQTrainingArguments only")
    return config.replace(**loss)


class SynQTrainer(Trainer):
    """Fine-tune a fake-quantized ``model`` (the student) against ``teacher`` on a synthetic dataset.

    ``train_dataset`` has ``pixel_values`` (C×H×W, the teacher's normalized space) and ``label``
    columns, as written by :func:`synq_hf.synthesis.synthesize`. The loss weights, the low-pass filter and
    SGD's momentum come from ``args`` when it is a :class:`SynQTrainingArguments` (as TRL's ``SFTTrainer``
    reads ``SFTConfig``), else from ``config``; ``config`` (default: the ``SynQConfig`` the student was
    quantized with) supplies the rest (calibration, seed for plain ``TrainingArguments``).
    Family/size-dependent ``None`` fields are resolved from the teacher (:func:`synq_hf.pipeline.resolve_config`;
    a resolved config, as ``finetune`` and ``SynQQuantizer`` pass, is used as it is). ``spec`` is the teacher's
    architecture spec when the caller already matched it. With ``lpf_mode="once"`` (the default, as in the paper) the dataset is filtered here, before
    training; ``"per_batch"`` filters each batch on the device after the optional ``augment``.

    KD temperature: ``config.kd_temperature`` defaults to 1, the paper's plain KL (the loss carries the
    T² factor, so a recipe may raise T, as the authors' code does with T = 20, without re-weighting).
    """

    loss_is_scaled_for_ga = False  # every part is a per-batch mean

    def __init__(
        self,
        model: nn.Module,
        teacher: nn.Module,
        args: TrainingArguments,
        train_dataset: Any,
        config: SynQConfig | None = None,
        *,
        augment: bool | str | None = None,
        image_shape: tuple[int, int, int] | None = None,
        num_classes: int | None = None,
        callbacks: list[TrainerCallback] | None = None,
        spec: ArchSpec | None = None,
        **kwargs: Any,
    ) -> None:
        config = trainer_config(model, args, config)
        config.validate()
        self.cam_target: CamTarget | None = None
        spec = spec if spec is not None else find_spec(teacher)
        target = resolve_cam_target(teacher, config.cam_layer, spec=spec) if config.lambda_cam > 0 else None
        num_classes = num_classes or model_num_classes(teacher)
        image_shape = image_shape or model_image_shape(teacher)
        if num_classes is None:
            raise DataError(f"cannot tell how many classes {type(teacher).__name__} predicts: pass num_classes=")
        validate_synthetic_dataset(train_dataset, num_classes=num_classes, image_shape=image_shape)
        size = int(np.asarray(train_dataset.with_format("numpy")[0][PIXELS]).shape[-2])
        spec = match_spec(teacher, spec)
        family = spec.family
        self.arch_spec = spec
        self.synq_config = resolve_config(config, family=family, input_size=size)  # a no-op for a resolved config
        cfg = self.synq_config
        self.precision = training_precision(cfg.finetune_precision, args)  # issue 24: autocast of both forwards
        check_precision(self.precision, args.device, what="finetune_precision")
        self._raw_dataset = train_dataset  # calibration_images filters its first images itself
        if cfg.lpf_mode == "once":
            train_dataset = low_pass_dataset(train_dataset, cfg.lpf_d0)
        self.batch_transform = BatchTransform(
            augment=cfg.augment if augment is None else augment,
            lpf_d0=cfg.lpf_d0 if cfg.lpf_mode == "per_batch" else None, seed=cfg.seed,
        )
        kwargs.setdefault("data_collator", SyntheticCollator())
        super().__init__(model=model, args=args, train_dataset=train_dataset, **kwargs)
        self.add_callback(_StopOnSignal(self))
        for cb in callbacks or []:
            self.add_callback(cb)
        if not any(p.requires_grad for p in model.parameters()):
            raise ConfigError("the student has no parameter that requires gradients (was it copied from a frozen "
                              "model?): call student.requires_grad_(True) before fine-tuning it")
        self._teacher_state = ModuleState.of(teacher)  # the caller's; train() gives it back
        self.teacher = teacher.eval().requires_grad_(False).to(self.args.device)
        self.cam_target = target
        self.hast_modules = feature_modules(teacher, spec) if cfg.hast_feature_alignment else []
        self._channels_last = spec.channels_last_features
        # issue 24: channels_last CNNs on CUDA, the divergence check without a host sync
        self._nhwc = wants_channels_last(family, self.args.device)
        if self._nhwc:
            for m in (self.teacher, self.model):
                m.to(memory_format=torch.channels_last)
        self._compiled: list[tuple[nn.Module, list[str]]] = []
        self.divergence_monitor = DivergenceMonitor(num_classes, cfg.kd_temperature)
        self._parts: dict[str, torch.Tensor] = {}
        self._parts_count = 0
        self._signal: int | None = None
        try:
            self._check_teacher_accepts(train_dataset, num_classes)
        except BaseException:
            self._teacher_state.restore(teacher)
            raise

    # -- setup ------------------------------------------------------------------------------------
    def _check_teacher_accepts(self, dataset: Any, num_classes: int) -> None:
        x = SyntheticCollator()([dataset[0]])[PIXELS].to(self.args.device)
        try:
            with torch.no_grad():
                logits = model_logits(self.teacher, x)
        except Exception as e:  # noqa: BLE001 - any failure here means the images do not fit the teacher
            raise DataError(f"the teacher cannot run on the synthetic images {tuple(x.shape[1:])}: {e}") from None
        if logits.shape[-1] != num_classes:
            raise DataError(f"the teacher predicts {logits.shape[-1]} classes, the dataset has {num_classes}")

    def calibrate_if_needed(self) -> bool:
        """Calibrate activation ranges if any quantizer lacks one (then frozen) on :func:`calibration_images`: the
        filtered synthetic images, or the raw ones with ``calibrate_filtered=False``."""
        quantizers = act_quantizers(self.model)
        if not quantizers or all(q._is_calibrated for q in quantizers):
            return False
        images = calibration_images(self._raw_dataset, self.synq_config)  # the same images PTQ calibrates on
        bs = self.synq_config.calibration_batch_size
        calibrate(self.model, iter_batches(images, bs), device=self.args.device, progress=not self.args.disable_tqdm,
                  total=-(-len(images) // bs))
        return True

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """SGD (momentum from the config); quantizer step sizes in their own group (``quantizer_lr``, no decay)."""
        if self.optimizer is None:
            model = model if model is not None else self.model
            decay, quant = [], []
            for name, p in model.named_parameters():
                if p.requires_grad:
                    leaf = name.rsplit(".", 1)[-1]
                    (quant if leaf in ("scale", "zero_point") and "quantizer" in name else decay).append(p)
            groups = [{"params": decay, "weight_decay": self.args.weight_decay}]
            if quant:
                lr = self.synq_config.quantizer_lr or self.args.learning_rate
                groups.append({"params": quant, "weight_decay": 0.0, "lr": lr})
            self.optimizer = torch.optim.SGD(groups, lr=self.args.learning_rate, momentum=self.synq_config.momentum)
        return self.optimizer

    # -- the step ---------------------------------------------------------------------------------
    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """SynQ loss of one batch: one teacher forward, one student forward (its backward is the Trainer's)."""
        model.eval()  # Trainer calls model.train() every step: keep BN statistics frozen and dropout off
        cfg = self.synq_config
        student = self.accelerator.unwrap_model(model)
        x, y = inputs[PIXELS], inputs["labels"]
        if self.batch_transform.active:
            x = self.batch_transform(x, step=self.state.global_step, rank=self.args.process_index)
        target = self.cam_target
        cam_classes = y if cfg.cam_target == "label" else None
        hast = self.hast_modules
        with contextlib.ExitStack() as stack:
            stack.enter_context(autocast(self.precision, x.device))
            t_feats = (stack.enter_context(FeatureCapture(self.teacher, hast, channels_last=self._channels_last,
                                                          detach=True)) if hast else None)
            if target is not None:
                t_logits, t_cam = teacher_forward_cam(self.teacher, x, target, cam_classes)
            else:
                with torch.no_grad():
                    t_logits = model_logits(self.teacher, x)
        if cam_classes is None:
            cam_classes = t_logits.argmax(dim=1)
        x_s = x.detach().requires_grad_(True) if cfg.perturbed_loss else x
        with contextlib.ExitStack() as stack:
            stack.enter_context(autocast(self.precision, x.device))
            s_hook = stack.enter_context(CamHook(student, target, detach=False)) if target is not None else None
            s_feats = (stack.enter_context(FeatureCapture(student, hast, channels_last=self._channels_last,
                                                          detach=False)) if hast else None)
            s_logits = model_logits(model, x_s)
            s_act = s_hook.take() if s_hook is not None else None
        kd = kd_loss(s_logits, t_logits, cfg.kd_temperature)
        ce, easy = selective_ce(s_logits, t_logits, y, cfg.tau)
        loss = cfg.kd_weight * kd + cfg.lambda_ce * ce
        parts = {"kd": kd, "ce": ce, "easy_fraction": easy.float().mean()}
        if hast:
            fa = feature_alignment_loss(s_feats.features, t_feats.features)
            loss = loss + cfg.hast_weight * fa
            parts["hast"] = fa
        if cfg.perturbed_loss:
            x_adv = sign_perturbation(loss, x_s, cfg.perturbed_eps)
            with torch.no_grad(), autocast(self.precision, x.device):
                t_adv = model_logits(self.teacher, x_adv)
            with autocast(self.precision, x.device):
                s_adv = model_logits(student, x_adv)  # unwrapped: one DDP forward per step
            adv = kd_loss(s_adv, t_adv, cfg.kd_temperature) + cfg.lambda_ce * masked_ce(s_adv, y, easy)
            loss = loss + cfg.perturbed_weight * adv
            parts["perturbed"] = adv
        if target is not None:
            s_cam = student_cam(s_logits, s_act, cam_classes, target, size=tuple(x.shape[-2:]))
            cam = cam_alignment_loss(s_cam, t_cam)
            loss = loss + cfg.lambda_cam * cam
            parts["cam"] = cam
        self._check_finite(loss, parts, num_classes=s_logits.shape[-1])
        self._record(parts)
        return (loss, {"logits": s_logits}) if return_outputs else loss

    def training_step(self, model: nn.Module, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        """The Trainer's step; an error in a step after a diverged one (NaN weights break the quantizers' ranges)
        is reported as the divergence it follows."""
        try:
            return super().training_step(model, inputs, *args, **kwargs)
        except (RuntimeError, ValueError):
            self._raise_if_diverged(collective=False)  # only this process is here
            raise

    def _check_finite(self, loss: torch.Tensor, parts: dict[str, torch.Tensor], *, num_classes: int) -> None:
        """Record a non-finite loss or an exploded KD term on the device (no host sync in the step);
        :meth:`_raise_if_diverged` stops training at the next log, checkpoint or the end (see ``DivergenceMonitor``)."""
        self.divergence_monitor.update(self.state.global_step + 1, loss, parts)

    def _raise_if_diverged(self, collective: bool = True) -> None:
        """Raise ``TrainingDiverged`` (one line, naming the step and the last good checkpoint) if a step diverged;
        under several processes every process raises when one diverged (``collective``: all of them call this
        at the same step), so none is left waiting in a collective."""
        found = self.divergence_monitor.first_divergence()
        if collective and self.args.world_size > 1 and torch.distributed.is_initialized():
            flag = torch.tensor([0.0 if found is None else 1.0], device=self.args.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            if found is None and flag.item() > 0:
                found = (0, "another process's loss diverged")
        if found is None:
            return
        _, what = found
        ckpt = last_checkpoint(self.args.output_dir)
        where = (f"; the last good checkpoint is {ckpt!r} (resume_from_checkpoint=...)" if ckpt
                 else "; no checkpoint was saved before it")
        raise TrainingDiverged(f"fine-tuning diverged: {what}; lower learning_rate or max_grad_norm{where}", ckpt)

    # -- logging ----------------------------------------------------------------------------------
    def _record(self, parts: dict[str, torch.Tensor]) -> None:
        for k, v in parts.items():
            v = v.detach().float()
            self._parts[k] = self._parts[k] + v if k in self._parts else v
        self._parts_count += 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the mean of each loss part since the last log (averaged over processes) to training logs."""
        if "loss" in logs and self._parts_count:
            keys = sorted(self._parts)
            stacked = torch.stack([self._parts[k] for k in keys]) / self._parts_count
            stacked = self.accelerator.reduce(stacked, reduction="mean")
            for k, v in zip(keys, stacked.tolist()):
                logs[k if k == "easy_fraction" else f"loss_{k}"] = v
            self._parts, self._parts_count = {}, 0
        super().log(logs, start_time)

    # -- save / resume ----------------------------------------------------------------------------
    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        self._raise_if_diverged()  # a checkpoint is never written after a diverged step
        super()._save_checkpoint(model, trial)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        save_student(self.accelerator.unwrap_model(self.model), output_dir, self.synq_config)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        load_student(self.accelerator.unwrap_model(model if model is not None else self.model), resume_from_checkpoint)

    def _load_best_model(self) -> None:
        load_student(self.accelerator.unwrap_model(self.model), self.state.best_model_checkpoint)

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any) -> Any:
        """Calibrate (if needed, not when resuming), then train; SIGTERM finishes the step, saves and stops."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise CheckpointError(f"no complete checkpoint-N folder in {self.args.output_dir!r} to resume from")
        if resume_from_checkpoint:
            resume_from_checkpoint = os.fspath(resume_from_checkpoint)
            if not os.path.isfile(os.path.join(resume_from_checkpoint, "trainer_state.json")):
                raise CheckpointError(f"{resume_from_checkpoint!r} is not a complete checkpoint (no trainer_state.json)")
            load_student(self.accelerator.unwrap_model(self.model), resume_from_checkpoint)  # fail fast, clearly
        else:
            resume_from_checkpoint = None
            self.calibrate_if_needed()
        self.divergence_monitor.reset()
        self.compile_models()
        try:
            with self._sigterm_handler(), frozen(self.teacher, restore=self._teacher_state):  # the caller's state after
                out = super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
            self._raise_if_diverged()
        finally:
            for model, names in self._compiled:
                uncompile_blocks(model, names)
            self._compiled = []
        if self._signal is not None:
            ckpt = os.path.join(self.args.output_dir, f"checkpoint-{self.state.global_step}")
            raise TrainingInterrupted(
                f"training stopped by signal {self._signal} at step {self.state.global_step}; resume with "
                f"resume_from_checkpoint={ckpt!r}", ckpt, self._signal,
            )
        example = SyntheticCollator()([self.train_dataset[0]])[PIXELS]
        student = self.accelerator.unwrap_model(self.model)
        if self._nhwc:
            student.to(memory_format=torch.contiguous_format)  # hand back NCHW weights
        deploy_convert(student, example)  # "int8" placement: int32-grid biases
        return out

    def compile_models(self) -> None:
        """``finetune_compile``: compile the blocks of both models after calibration (whose observer modes would
        each need their own graphs); the block holding the Grad-CAM target stays eager (it is hooked every step)."""
        mode = self.synq_config.finetune_compile
        if mode == "off" or self._compiled:
            return
        skip = (self.cam_target.module,) if self.cam_target is not None else ()
        for model in (self.teacher, self.accelerator.unwrap_model(self.model)):
            names = compile_blocks(model, get_spec(model).feature_blocks(model), mode, skip=skip)
            self._compiled.append((model, names))

    @contextlib.contextmanager
    def _sigterm_handler(self) -> Iterator[None]:
        self._signal = None
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if signum == signal.SIGINT and self._signal == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C stops at once
            self._signal = signum

        # Ctrl-C (SIGINT) is handled like SIGTERM: finish the step, save a checkpoint, stop.
        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def _stop_requested(self) -> bool:
        flag = self._signal is not None
        if self.args.world_size > 1 and torch.distributed.is_initialized():
            t = torch.tensor([float(flag)], device=self.args.device)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            if t.item() > 0 and self._signal is None:
                self._signal = signal.SIGTERM
            flag = bool(t.item() > 0)
        return flag


def checkpoint_summary(checkpoint_dir: str) -> dict[str, Any]:
    """Global step and log history of a checkpoint folder (for progress reports and tests)."""
    with open(os.path.join(checkpoint_dir, "trainer_state.json"), encoding="utf-8") as fh:
        state = json.load(fh)
    return {"global_step": state.get("global_step"), "log_history": state.get("log_history", [])}
