"""SynQ fine-tuning: ``SynQTrainer`` (a ``transformers.Trainer``), its losses, Grad-CAM and ``finetune``."""

from .arguments import SynQTrainingArguments
from .cam import CamTarget, compute_cam, resolve_cam_target
from .collator import (
    BatchTransform,
    SyntheticCollator,
    calibration_images,
    low_pass_dataset,
    validate_synthetic_dataset,
)
from .finetune import TrainedSteps, build_training_args, finetune
from .losses import cam_alignment_loss, kd_loss, selective_ce
from .trainer import (
    STUDENT_WEIGHTS,
    SynQTrainer,
    TrainingDiverged,
    TrainingInterrupted,
    last_checkpoint,
    load_student,
    save_student,
)

__all__ = [
    "STUDENT_WEIGHTS",
    "BatchTransform",
    "CamTarget",
    "SynQTrainer",
    "SynQTrainingArguments",
    "SyntheticCollator",
    "TrainedSteps",
    "TrainingDiverged",
    "TrainingInterrupted",
    "build_training_args",
    "calibration_images",
    "cam_alignment_loss",
    "compute_cam",
    "finetune",
    "kd_loss",
    "last_checkpoint",
    "load_student",
    "low_pass_dataset",
    "resolve_cam_target",
    "save_student",
    "selective_ce",
    "validate_synthetic_dataset",
]
