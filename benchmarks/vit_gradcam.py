"""ViT Grad-CAM check on the shared CIFAR-10 ViT: teacher and W4A4 student maps on synthetic images.

    python benchmarks/vit_gradcam.py --json --synthetic /tmp/syn/seed0 --figure benchmarks/figures/vit_gradcam.png

Prints one JSON object: for the teacher and the W4A4 PTQ student (PSAQ-ViT placement, min-max ranges on the same
images), the share of all-zero maps, the share of flat maps (standard deviation below 0.05 on the [0, 1] scale),
the mean per-map standard deviation, and the mean Pearson correlation between teacher and student maps. With
``--figure`` it writes a PNG: per image, the (un-normalized) image, the teacher map and the student map.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from synq_hf import SynQConfig, load_model  # noqa: E402
from synq_hf.apply import calibrate, iter_batches, quantize_model  # noqa: E402
from synq_hf.training.cam import compute_cam  # noqa: E402

TEACHER = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "teachers" / "cifar10-vit-tiny"
if not TEACHER.exists():
    TEACHER = Path("/work/shared/data/teachers/cifar10-vit-tiny")
FLAT_STD = 0.05


def map_stats(maps: torch.Tensor) -> dict[str, float]:
    """Share of all-zero and of flat maps, and the mean per-map standard deviation, of (B, P) maps in [0, 1]."""
    std = maps.std(dim=1)
    return {"all_zero": float((maps.abs().amax(1) == 0).float().mean()), "flat": float((std < FLAT_STD).float().mean()),
            "mean_std": round(float(std.mean()), 4)}


def _heat(cam: np.ndarray, side: int, scale: int) -> Image.Image:
    """A (P,) map as a red-yellow heat image of ``side * scale`` pixels."""
    grid = int(round(len(cam) ** 0.5))
    v = cam.reshape(grid, grid)
    rgb = np.stack([np.clip(2 * v, 0, 1), np.clip(2 * v - 1, 0, 1), np.zeros_like(v)], -1)
    return Image.fromarray((rgb * 255).astype(np.uint8)).resize((side * scale, side * scale), Image.NEAREST)


def figure(pixels: torch.Tensor, mean: tuple, std: tuple, teacher_maps: torch.Tensor, student_maps: torch.Tensor,
           path: Path, scale: int = 4) -> None:
    """Rows: image, teacher map, student map; one column per image."""
    n, side = pixels.shape[0], pixels.shape[-1]
    tile = side * scale
    canvas = Image.new("RGB", (n * (tile + 4), 3 * (tile + 4)), "white")
    images = (pixels * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)).clamp(0, 1)
    for i in range(n):
        img = Image.fromarray((images[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).resize((tile, tile))
        canvas.paste(img, (i * (tile + 4), 0))
        canvas.paste(_heat(teacher_maps[i].numpy(), side, scale), (i * (tile + 4), tile + 4))
        canvas.paste(_heat(student_maps[i].numpy(), side, scale), (i * (tile + 4), 2 * (tile + 4)))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", required=True, help="a synthetic set saved by benchmarks/vit_accuracy.py")
    parser.add_argument("--teacher", default=str(TEACHER))
    parser.add_argument("--figure", default=None, help="PNG path for the teacher/student maps of the first images")
    parser.add_argument("--figure-images", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    teacher = load_model(f"local-dir:{args.teacher}")
    data = datasets.load_from_disk(args.synthetic).with_format("torch")[:]
    pixels, labels = data["pixel_values"].float(), data["label"]
    student = quantize_model(copy.deepcopy(teacher.model), SynQConfig(w_bits=4, a_bits=4, act_range_init="minmax",
                                                                     weight_range_init="minmax"))
    calibrate(student, iter_batches(pixels, len(pixels)), progress=False)
    t_maps = compute_cam(teacher.model, pixels, labels)
    s_maps = compute_cam(student.eval(), pixels, labels)
    tc, sc = t_maps - t_maps.mean(1, keepdim=True), s_maps - s_maps.mean(1, keepdim=True)
    corr = (tc * sc).sum(1) / (tc.norm(dim=1) * sc.norm(dim=1)).clamp_min(1e-12)
    result = {"images": len(pixels), "tokens": t_maps.shape[1], "teacher": map_stats(t_maps),
              "student_w4a4_ptq": map_stats(s_maps), "teacher_student_corr_mean": round(float(corr.mean()), 4)}
    if args.figure:
        k = args.figure_images
        figure(pixels[:k], teacher.data_config["mean"], teacher.data_config["std"], t_maps[:k], s_maps[:k],
               Path(args.figure))
        result["figure"] = args.figure
    print(json.dumps(result) if args.json else result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
