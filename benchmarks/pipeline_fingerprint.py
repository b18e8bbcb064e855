"""Fingerprint of the SynQ pipeline on a shared teacher: SHA-256 of the synthetic pixels, of preprocessed test
images and of the fine-tuned student's logits, so a refactor can show that it moved no number.

    python benchmarks/pipeline_fingerprint.py --json                 # shared ResNet-20, W4A4, a small budget
    git worktree add /tmp/base REV && (cd /tmp/base && PYTHONPATH=$PWD python benchmarks/pipeline_fingerprint.py --json)

Same hashes on two commits (same machine, one thread) mean synthesis, evaluation preprocessing, quantization and
fine-tuning compute the same bits; a benchmark measured on one then holds for the other.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from shared_data import LOSSLESS, TEACHERS  # noqa: E402  (benchmarks/ is the script's folder)

TEACHER = TEACHERS / "cifar10-resnet20"


def _sha(tensor) -> str:  # noqa: ANN001
    return hashlib.sha256(tensor.detach().contiguous().numpy().tobytes()).hexdigest()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print one JSON object (the default output)")
    p.add_argument("--teacher", type=Path, default=TEACHER)
    p.add_argument("--data", type=Path, default=LOSSLESS, help="parquet test file")
    p.add_argument("--bits", type=int, default=4, help="weight and activation bits (default 4)")
    p.add_argument("--images", type=int, default=32, help="synthetic images (default 32)")
    p.add_argument("--iterations", type=int, default=10, help="synthesis iterations (default 10)")
    p.add_argument("--steps", type=int, default=4, help="fine-tuning steps (default 4)")
    p.add_argument("--eval-images", type=int, default=128, help="test images hashed (default 128)")
    args = p.parse_args()

    import torch

    torch.set_num_threads(1)
    import synq_hf.models  # noqa: F401  (registers cifar_resnet20 with timm)
    from synq_hf import SynQConfig
    from synq_hf.data import (
        build_eval_transform,
        collate_images,
        detect_columns,
        load_image_dataset,
        raw_images,
    )
    from synq_hf.model_info import model_logits
    from synq_hf.quantizer import SynQQuantizer

    cfg = SynQConfig(w_bits=args.bits, a_bits=args.bits, num_images=args.images, synthesis_iterations=args.iterations,
                     synthesis_batch_size=args.images, train_batch_size=max(1, args.images // 2),
                     calibration_num_images=args.images, seed=0)
    with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its log dict; stdout carries only the JSON
        quantizer = SynQQuantizer.from_pretrained(f"local-dir:{args.teacher}", cfg, device="cpu")
        quantizer.synthesize(progress=False)
        pixels = torch.as_tensor(quantizer.synthetic.with_format("numpy")[:]["pixel_values"])
        student = quantizer.quantize(max_steps=args.steps, progress=False)

    data = load_image_dataset(f"parquet:{args.data}").select(range(args.eval_images))
    image_column, _ = detect_columns(data, None, None, require_label=False)
    images = collate_images(raw_images(data, image_column)[image_column],
                            build_eval_transform(quantizer.teacher.data_config))
    with torch.no_grad():
        logits = model_logits(student.eval(), images)
    print(json.dumps({"teacher": args.teacher.name, "bits": args.bits, "images": args.images,
                      "iterations": args.iterations, "steps": args.steps, "eval_images": args.eval_images,
                      "synthetic_pixels_sha256": _sha(pixels), "eval_inputs_sha256": _sha(images),
                      "student_logits_sha256": _sha(logits)}, indent=1))


if __name__ == "__main__":
    main()
