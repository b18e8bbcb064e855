"""Tiny fixtures shared by the trainer tests, and the child process of the SIGTERM test.

``python tests/_synq_tiny.py OUT_DIR MAX_STEPS`` trains the tiny CNN with a checkpoint every step and
exits with code 3 when a SIGTERM stops it (``TrainingInterrupted``).
"""

from __future__ import annotations

import copy
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

import synq_hf  # noqa: E402,F401  (registers cifar_resnet*)
from synq_hf.apply import quantize_model  # noqa: E402
from synq_hf.config import SynQConfig  # noqa: E402
from synq_hf.training import SynQTrainer, TrainingInterrupted, build_training_args  # noqa: E402


def synthetic_dataset(n: int = 16, size: int = 32, num_classes: int = 10, seed: int = 0) -> datasets.Dataset:
    """Random normalized images with ClassLabel labels, the layout ``synthesize`` writes."""
    rng = np.random.default_rng(seed)
    features = datasets.Features(
        {"pixel_values": datasets.Array3D((3, size, size), "float32"),
         "label": datasets.ClassLabel(num_classes=num_classes)}
    )
    return datasets.Dataset.from_dict(
        {"pixel_values": rng.standard_normal((n, 3, size, size), dtype=np.float32),
         "label": rng.integers(0, num_classes, n)},
        features=features,
    )


def cnn_pair(seed: int = 0, **config: object) -> tuple[torch.nn.Module, torch.nn.Module, SynQConfig]:
    """A random CIFAR ResNet-20 teacher (8×8 final maps) and its uncalibrated W4A4 copy."""
    torch.manual_seed(seed)
    teacher = timm.create_model("cifar_resnet20", num_classes=10)
    cfg = SynQConfig(**{"lpf_d0": 0.0, "train_batch_size": 4, "calibration_num_images": 8,
                        "calibration_batch_size": 4, "learning_rate": 0.01, **config})
    return teacher, quantize_model(copy.deepcopy(teacher), cfg), cfg


def hf_vit_pair(seed: int = 0, **config: object) -> tuple[torch.nn.Module, torch.nn.Module, SynQConfig]:
    """A tiny random transformers ViT (32 px, 4×4 patches) and its uncalibrated W4A8 copy."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    teacher = ViTForImageClassification(ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
        patch_size=8, num_labels=10,
    )).eval()
    cfg = SynQConfig(**{"w_bits": 4, "a_bits": 8, "lpf_d0": 0.0, "train_batch_size": 4,
                        "calibration_num_images": 8, "calibration_batch_size": 4, "learning_rate": 0.01, **config})
    return teacher, quantize_model(copy.deepcopy(teacher), cfg), cfg


def make_trainer(out: str, pair: tuple, ds: datasets.Dataset | None = None, *, max_steps: int = 4,
                 augment: bool = False, callbacks: list | None = None, **args: object) -> SynQTrainer:
    """A SynQTrainer on CPU with quiet, test-sized arguments."""
    teacher, student, cfg = pair
    resolved = cfg.resolve(family="cnn", input_size=32)
    targs = build_training_args(resolved, out, max_steps=max_steps, progress=False, use_cpu=True,
                                **{"save_steps": 2, "logging_steps": 1, "save_total_limit": None, **args})
    return SynQTrainer(student, teacher, targs, ds if ds is not None else synthetic_dataset(), cfg,
                       augment=augment, callbacks=callbacks)


def tiny_cifar_resnet(seed: int = 0) -> torch.nn.Module:
    """The smallest CIFAR ResNet (depth 8: one block per stage, two padded shortcuts), in eval mode."""
    from synq_hf.models.cifar_resnet import CifarResNet

    torch.manual_seed(seed)
    return CifarResNet(depth=8, num_classes=10).eval()


def trained_batchnorm(model: torch.nn.Module, seed: int = 3) -> torch.nn.Module:
    """Give every BatchNorm trained-looking statistics and affine parameters (some gammas negative), in place: with
    the initial ones (beta = mean = 0) every folded conv bias is 0, which hides bias arithmetic."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
                m.weight.copy_(3 * torch.rand(n, generator=g) - 1.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model


class _Slow(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003, ANN201
        time.sleep(0.05)


if __name__ == "__main__":
    torch.set_num_threads(1)
    trainer = make_trainer(sys.argv[1], cnn_pair(), max_steps=int(sys.argv[2]), save_steps=1, augment=True,
                           callbacks=[_Slow()])
    try:
        trainer.train()
    except TrainingInterrupted as e:
        print(f"INTERRUPTED {e.checkpoint}", flush=True)
        sys.exit(3)
