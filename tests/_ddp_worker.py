"""Worker launched by tests/training/test_trainer_distributed.py under ``torchrun --nproc_per_node 2``.

Trains a tiny quantized CIFAR ResNet for two steps on CPU ranks, then writes each rank's student
weights (to compare across ranks) and lets the trainer save the final result from the main process.
"""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import copy  # noqa: E402

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import safetensors.torch  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402

import synq_hf  # noqa: E402,F401  (registers cifar_resnet*)
from synq_hf.apply import quantize_model  # noqa: E402
from synq_hf.config import SynQConfig  # noqa: E402
from synq_hf.training import build_training_args, finetune  # noqa: E402


def main(out: str) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    teacher = timm.create_model("cifar_resnet20", num_classes=10)
    student = quantize_model(copy.deepcopy(teacher), SynQConfig())
    rng = np.random.default_rng(0)
    n = 16
    features = datasets.Features(
        {"pixel_values": datasets.Array3D((3, 32, 32), "float32"), "label": datasets.ClassLabel(num_classes=10)}
    )
    ds = datasets.Dataset.from_dict(
        {"pixel_values": rng.standard_normal((n, 3, 32, 32), dtype=np.float32), "label": rng.integers(0, 10, n)},
        features=features,
    )
    cfg = SynQConfig(lpf_d0=0.0, train_batch_size=4, calibration_num_images=8, calibration_batch_size=4,
                     learning_rate=0.05).resolve(family="cnn", input_size=32)
    args = build_training_args(cfg, out, max_steps=2, progress=False, use_cpu=True, save_strategy="no",
                               logging_steps=1)
    rank = int(os.environ["RANK"])
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in student.state_dict().items()}
    trained = finetune(teacher, student, ds, cfg, output_dir=out, training_args=args)
    torch.save(student_before, os.path.join(out, f"student_before_rank{rank}.pt"))
    torch.save(teacher_before, os.path.join(out, f"teacher_before_rank{rank}.pt"))
    safetensors.torch.save_model(trained, os.path.join(out, f"rank{rank}.safetensors"))
    torch.save(teacher.state_dict(), os.path.join(out, f"teacher_after_rank{rank}.pt"))


if __name__ == "__main__":
    from synq_hf.distributed import end_processes

    try:
        main(sys.argv[1])
    finally:
        end_processes()  # exit without the gloo teardown abort (SIGABRT at interpreter exit)
