"""PTQ only, on the shared CIFAR ViT: min-max vs searched ranges, calibrated on the raw vs the low-pass filtered
synthetic images; lossless + JPEG-10k top-1 and the teacher-student KL on both image sets. One JSON line per model.

    RANGES=minmax,search python ptq_calibration_images.py SEEDS BITS SYNTHETIC_DIR   # e.g. 0 W8A8,W4A8 /tmp/syn

SYNTHETIC_DIR holds seedN/ folders as written by ``benchmarks/vit_accuracy.py --synthetic``.
"""

import copy
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import cifar10_accuracy as base  # noqa: E402
import datasets  # noqa: E402
import torch  # noqa: E402

from synq_hf import SynQConfig, SynQQuantizer, load_image_dataset, load_model  # noqa: E402
from synq_hf.apply import calibrate, iter_batches, quantize_model  # noqa: E402
from synq_hf.data import build_eval_transform, detect_columns  # noqa: E402
from synq_hf.lowpass import low_pass_filter  # noqa: E402
from synq_hf.model_info import model_logits  # noqa: E402


def load(name: str, transform: object) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_image_dataset(f"parquet:{base.DATA_FILES[name]}")
    image_col, label_col = detect_columns(data)
    return torch.stack([transform(im) for im in data[image_col]]), torch.tensor(data[label_col])


@torch.no_grad()
def top1(model: torch.nn.Module, tests: dict) -> dict[str, float]:
    out = {}
    for name, (x, y) in tests.items():
        hits = sum(int((model_logits(model, x[i:i + 500]).argmax(-1) == y[i:i + 500]).sum()) for i in range(0, len(x), 500))
        out[name] = round(100 * hits / len(x), 2)
    return out


@torch.no_grad()
def kl(teacher: torch.nn.Module, model: torch.nn.Module, x: torch.Tensor) -> float:
    t, s = model_logits(teacher, x).log_softmax(-1), model_logits(model, x).log_softmax(-1)
    return float((t.exp() * (t - s)).sum(-1).mean())


def main() -> None:
    torch.set_num_threads(1)
    ranges = os.environ.get("RANGES", "minmax,search").split(",")
    teacher = load_model(f"local-dir:{base.SHARED / 'teachers' / 'cifar10-vit-tiny'}")
    transform = build_eval_transform(teacher.data_config)
    tests = {n: load(n, transform) for n in ("lossless", "jpeg")}
    cfg0 = SynQQuantizer(teacher, SynQConfig(), device="cpu").config
    print("float", top1(teacher.model, tests), flush=True)
    for seed in [int(s) for s in sys.argv[1].split(",")]:
        raw = datasets.load_from_disk(f"{sys.argv[3]}/seed{seed}").with_format("torch")[:]["pixel_values"].float()
        filtered = low_pass_filter(raw, cfg0.lpf_d0)
        for bits in sys.argv[2].split(","):
            for rng in ranges:
                for source, images in (("raw", raw), ("lpf", filtered)):
                    cfg = cfg0.replace(w_bits=int(bits[1]), a_bits=int(bits[3]), act_range_init=rng,
                                       weight_range_init=rng, calibration_batch_size=64)
                    student = quantize_model(copy.deepcopy(teacher.model), cfg)
                    calibrate(student, iter_batches(images, 64), progress=False)
                    student.eval()
                    row = {"seed": seed, "bits": bits, "range": rng, "calib": source, **top1(student, tests),
                           "kl_raw": round(kl(teacher.model, student, raw), 5),
                           "kl_lpf": round(kl(teacher.model, student, filtered), 5)}
                    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
