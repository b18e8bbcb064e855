"""Cost of one SynQ fine-tuning step against the floor measured in the same run.

SynQ step = ``SynQTrainer.compute_loss`` (teacher forward with its Grad-CAM, student forward, KD +
selective CE + CAM; extras off) + backward. Floor = teacher forward (no grad) + student forward +
backward of a plain CE. Neither includes the optimizer update. Timings are medians over interleaved
repeats (floor, step, floor, step, ...) after warm-up, so load drift hits both alike. CNNs time one step per
``--cam-layers`` entry in the same run (Grad-CAM at the last conv's output, and classic CAM at the pooling
input), each against the same floor.

    python benchmarks/finetune_speed.py --json            # ResNet-20 @256 and DeiT-tiny-sized @32
    python benchmarks/finetune_speed.py --json --models resnet20 --threads 1 --repeats 10 --cam-layers last_conv,pool
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import synq_hf  # noqa: E402,F401  (registers cifar_resnet*)
from synq_hf.config import SynQConfig  # noqa: E402
from synq_hf.model_info import model_logits  # noqa: E402
from synq_hf.quant import calibrate, quantize_model  # noqa: E402
from synq_hf.training import SynQTrainer, build_training_args  # noqa: E402

RESNET20 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "teachers" / "cifar10-resnet20"


def _models(name: str) -> tuple[torch.nn.Module, SynQConfig, int, int]:
    """Teacher, config, batch size and input side of a benchmark model."""
    if name == "resnet20":
        if not RESNET20.exists():
            raise SystemExit(f"the shared ResNet-20 teacher is missing: {RESNET20}")
        return timm.create_model(f"local-dir:{RESNET20}", pretrained=True), SynQConfig(w_bits=4, a_bits=4), 256, 32
    if name == "deit_tiny":
        teacher = timm.create_model("deit_tiny_patch16_224", pretrained=False)
        return teacher, SynQConfig(w_bits=4, a_bits=8), 32, 224
    raise SystemExit(f"unknown model {name!r}: choose resnet20 or deit_tiny")


def _dataset(n: int, size: int, num_classes: int) -> datasets.Dataset:
    rng = np.random.default_rng(0)
    features = datasets.Features({"pixel_values": datasets.Array3D((3, size, size), "float32"),
                                  "label": datasets.ClassLabel(num_classes=num_classes)})
    return datasets.Dataset.from_dict(
        {"pixel_values": rng.standard_normal((n, 3, size, size), dtype=np.float32),
         "label": rng.integers(0, num_classes, n)}, features=features)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(name: str, repeats: int, warmup: int, cam_layers: list[str]) -> dict[str, object]:
    """Median seconds of a SynQ step (per CAM layer for CNNs) and of the floor for one model, and their ratios."""
    teacher, cfg, batch, size = _models(name)
    teacher.eval()
    student = quantize_model(copy.deepcopy(teacher), cfg)
    noise = torch.randn(2 * batch, 3, size, size)
    calibrate(student, noise.split(batch), progress=False)  # ranges from random normalized noise
    ds = _dataset(batch, size, teacher.num_classes)
    family = "vit" if name == "deit_tiny" else "cnn"
    layers = cam_layers if family == "cnn" else [cfg.cam_layer]  # ViTs have one CAM layer
    trainers = {}
    with tempfile.TemporaryDirectory() as out:
        resolved = cfg.resolve(family=family, input_size=size)
        for layer in layers:
            run = resolved.replace(train_batch_size=batch, cam_layer=layer)
            args = build_training_args(run, out, max_steps=1, progress=False)
            trainers[layer] = SynQTrainer(student, teacher, args, ds, cfg.replace(cam_layer=layer))
    trainer = trainers[layers[0]]
    device = trainer.args.device
    inputs = {k: v.to(device) for k, v in trainer.data_collator([ds[i] for i in range(batch)]).items()}
    model, t = trainer.model, trainer.teacher

    def synq_step(layer: str) -> None:
        trainers[layer].compute_loss(model, inputs).backward()
        model.zero_grad(set_to_none=True)

    def floor_step() -> None:
        model.eval()
        with torch.no_grad():
            model_logits(t, inputs["pixel_values"])
        F.cross_entropy(model_logits(model, inputs["pixel_values"]), inputs["labels"]).backward()
        model.zero_grad(set_to_none=True)

    def timed(fn) -> float:  # noqa: ANN001
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        return time.perf_counter() - start

    for _ in range(warmup):
        floor_step()
        for layer in layers:
            synq_step(layer)
    floors: list[float] = []
    steps: dict[str, list[float]] = {layer: [] for layer in layers}
    for _ in range(repeats):
        floors.append(timed(floor_step))
        for layer in layers:
            steps[layer].append(timed(lambda layer=layer: synq_step(layer)))
    floor_s = statistics.median(floors)
    per_layer = {layer: {"step_s": round(statistics.median(v), 4), "ratio": round(statistics.median(v) / floor_s, 3)}
                 for layer, v in steps.items()}
    first = per_layer[layers[0]]
    return {"model": name, "batch": batch, "device": str(device), "threads": torch.get_num_threads(),
            "cam_layer": layers[0], "step_s": first["step_s"], "floor_s": round(floor_s, 4),
            "ratio": first["ratio"], "cam_layers": per_layer if family == "cnn" else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,deit_tiny", help="comma-separated: resnet20, deit_tiny")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--cam-layers", default="last_conv,pool",
                        help="CNNs: comma-separated cam_layer values, each timed against the same floor")
    parser.add_argument("--json", action="store_true", help="one JSON object per model on stdout")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for name in args.models.split(","):
        layers = [v.strip() for v in args.cam_layers.split(",") if v.strip()]
        unknown = sorted(set(layers) - {"last_conv", "pool"})
        if unknown or not layers:
            raise SystemExit(f"--cam-layers takes last_conv and/or pool, got {args.cam_layers!r}")
        result = bench(name.strip(), args.repeats, args.warmup, layers)
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            for layer, r in (result["cam_layers"] or {result["cam_layer"]: result}).items():
                print(f"{result['model']} ({layer}): SynQ step {r['step_s']:.4f} s, floor {result['floor_s']:.4f} s, "
                      f"ratio {r['ratio']:.3f} (batch {result['batch']}, {result['device']})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
