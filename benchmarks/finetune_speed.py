"""Cost of one SynQ fine-tuning step against the floor measured in the same run.

SynQ step = ``SynQTrainer.compute_loss`` (teacher forward with its Grad-CAM, student forward, KD + selective CE +
CAM; extras off) + backward. Floor = teacher forward (no grad) + student forward + backward of a plain CE, at the
same precision and memory layout. Neither includes the optimizer update; ``optimizer_s`` (gradient clipping + SGD
step + zero_grad) is timed on its own, ``train_step_s`` = step + optimizer is what a training step costs on the
device, and ``data_s`` is the host's time to collate one batch from the dataset and copy it over (the Trainer's
DataLoader runs it in the training process, ``dataloader_num_workers=0``). Timings are medians over interleaved
repeats (floor, step, floor, step, ...) after warm-up, so load drift hits both alike. CNNs print one row per
``--cam-layers`` entry (issue 21: Grad-CAM at the last conv's output, classic CAM at the pooling input), each with
its own interleaved floor; ViTs have one CAM layer and print one row.

    python benchmarks/finetune_speed.py --json            # ResNet-20 @256 and DeiT-tiny-sized @32, CPU
    python benchmarks/finetune_speed.py --json --models resnet20 --threads 1 --repeats 10 --cam-layers last_conv,pool
    python benchmarks/finetune_speed.py --json --device cuda --precision fp32,bf16 --batch 16,256 \\
        --models resnet18,resnet50,mobilenetv2_100,deit_small_patch16_224,swin_tiny_patch4_window7_224

Models: ``resnet20`` (the shared CIFAR-10 teacher, W4A4), ``deit_tiny`` (random, W4A8), or any timm name (random
weights, ``pretrained=False``, at ``--size``; CNNs W4A4, ViTs W4A8 as the recipes).
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
from synq_hf.apply import calibrate, quantize_model  # noqa: E402
from synq_hf.architectures import get_spec  # noqa: E402
from synq_hf.config import COMPILE_MODES, SynQConfig  # noqa: E402
from synq_hf.model_info import model_logits  # noqa: E402
from synq_hf.precision import autocast  # noqa: E402
from synq_hf.training import SynQTrainer, build_training_args  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthesis_speed import count_syncs  # noqa: E402

RESNET20 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "teachers" / "cifar10-resnet20"


def build(name: str, size: int | None = None) -> tuple[torch.nn.Module, SynQConfig, int, int]:
    """Teacher, config, default batch size and input side of a benchmark model name."""
    if name == "resnet20":
        if not RESNET20.exists():
            raise SystemExit(f"the shared ResNet-20 teacher is missing: {RESNET20}")
        return timm.create_model(f"local-dir:{RESNET20}", pretrained=True), SynQConfig(w_bits=4, a_bits=4), 256, 32
    if name == "deit_tiny":
        teacher = timm.create_model("deit_tiny_patch16_224", pretrained=False)
        return teacher, SynQConfig(w_bits=4, a_bits=8), 32, 224
    size = size or 224
    kwargs = {"img_size": size} if any(k in name for k in ("vit", "deit", "swin")) else {}
    try:
        teacher = timm.create_model(name, pretrained=False, **kwargs)
    except (RuntimeError, ValueError, TypeError) as e:
        raise SystemExit(f"cannot build timm model {name!r}: {e}") from None
    vit = get_spec(teacher).family != "cnn"
    return teacher, SynQConfig(w_bits=4, a_bits=8 if vit else 4), 16, size


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


def make_trainer(teacher: torch.nn.Module, cfg: SynQConfig, batch: int, size: int, device: str, out: str,
                 calibration_images: int | None = None) -> tuple[SynQTrainer, float]:
    """A SynQTrainer on random data of ``batch`` images, its student calibrated on random normalized noise (as
    fine-tuning does, ``calibration_num_images`` of them unless given); returns it and the calibration seconds."""
    teacher.eval()
    family = get_spec(teacher).family
    resolved = cfg.resolve(family=family, input_size=size).replace(train_batch_size=batch)
    student = quantize_model(copy.deepcopy(teacher), resolved)
    n = calibration_images or resolved.calibration_num_images
    dev = torch.device(device)
    student.to(dev)
    noise = torch.randn(n, 3, size, size)
    _sync(dev)
    start = time.perf_counter()
    calibrate(student, noise.split(resolved.calibration_batch_size), progress=False, device=dev)
    _sync(dev)
    calibration_s = time.perf_counter() - start
    ds = _dataset(batch, size, teacher.num_classes)
    args = build_training_args(resolved, out, max_steps=1, progress=False, use_cpu=device == "cpu")
    return SynQTrainer(student, teacher, args, ds, resolved, image_shape=(3, size, size)), calibration_s


def bench(name: str, repeats: int, warmup: int, device: str = "cpu", precision: str = "fp32", batch: int | None = None,
          size: int | None = None, compile_mode: str = "off", teacher: torch.nn.Module | None = None,
          cfg: SynQConfig | None = None, calibration_images: int | None = None,
          cam_layer: str | None = None) -> dict[str, object]:
    """Median seconds of a SynQ step, the floor and the optimizer update for one model; their ratio; peak memory."""
    if teacher is None:
        teacher, cfg, default_batch, size = build(name, size)
        batch = batch or default_batch
    assert cfg is not None and batch is not None and size is not None
    cfg = cfg.replace(finetune_precision=precision, finetune_compile=compile_mode)
    if cam_layer is not None:
        cfg = cfg.replace(cam_layer=cam_layer)
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    if calibration_images is None:  # the config's on a GPU (time_to_model reports it); CPU: keep it short
        calibration_images = 2 * batch if dev.type == "cpu" else cfg.calibration_num_images
    with tempfile.TemporaryDirectory() as out:
        trainer, calibration_s = make_trainer(teacher, cfg, batch, size, device, out,
                                              calibration_images=calibration_images)
    device_t = trainer.args.device

    def load_batch() -> dict[str, torch.Tensor]:  # what the Trainer's DataLoader does per step (num_workers=0)
        return {k: v.to(device_t, non_blocking=True) for k, v in trainer.data_collator(
            [trainer.train_dataset[i] for i in range(batch)]).items()}

    data_times = []
    for _ in range(3):
        _sync(device_t)
        start = time.perf_counter()
        inputs = load_batch()
        _sync(device_t)
        data_times.append(time.perf_counter() - start)
    model, t = trainer.model, trainer.teacher
    trainer.compile_models()
    optimizer = trainer.create_optimizer()
    params = [p for p in model.parameters() if p.requires_grad]

    def synq_step() -> None:
        trainer.compute_loss(model, inputs).backward()

    def optimizer_step() -> None:
        torch.nn.utils.clip_grad_norm_(params, trainer.args.max_grad_norm)
        optimizer.step()
        model.zero_grad(set_to_none=True)

    def floor_step() -> None:
        model.eval()
        with autocast(trainer.precision, device_t):
            with torch.no_grad():
                model_logits(t, inputs["pixel_values"])
            logits = model_logits(model, inputs["pixel_values"])
        F.cross_entropy(logits.float(), inputs["labels"]).backward()
        model.zero_grad(set_to_none=True)

    def timed(fn) -> float:  # noqa: ANN001
        _sync(device_t)
        start = time.perf_counter()
        fn()
        _sync(device_t)
        return time.perf_counter() - start

    for _ in range(warmup):
        floor_step(), synq_step(), optimizer_step()
    syncs = count_syncs(lambda: (synq_step(), optimizer_step()), device_t)
    floors, steps, opts = [], [], []
    for _ in range(repeats):
        floors.append(timed(floor_step))
        steps.append(timed(synq_step))
        opts.append(timed(optimizer_step))
    diverged = trainer.divergence_monitor.first_divergence()
    step_s, floor_s, opt_s = statistics.median(steps), statistics.median(floors), statistics.median(opts)
    return {"model": name, "batch": batch, "size": size, "precision": precision, "compile": compile_mode,
            "device": str(device_t), "gpu": torch.cuda.get_device_name(device_t) if device_t.type == "cuda" else None,
            "threads": torch.get_num_threads(), "cam_layer": cfg.cam_layer if get_spec(teacher).family == "cnn" else None,
            "step_s": round(step_s, 5), "floor_s": round(floor_s, 5),
            "ratio": round(step_s / floor_s, 3), "optimizer_s": round(opt_s, 5),
            "train_step_s": round(step_s + opt_s, 5), "data_s": round(statistics.median(data_times), 5),
            "peak_memory_bytes": torch.cuda.max_memory_allocated(device_t) if device_t.type == "cuda" else None,
            "calibration_s": round(calibration_s, 4), "calibration_images": calibration_images,
            "host_syncs_per_step": syncs, "finite": diverged is None, "repeats": repeats}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,deit_tiny",
                        help="comma-separated: resnet20, deit_tiny, or timm names (random weights)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="fp32", help="comma list of fp32, bf16, fp16 (fp16: CUDA only)")
    parser.add_argument("--batch", default=None, help="comma list of batch sizes (default: the model's)")
    parser.add_argument("--size", type=int, default=None, help="input side of timm-name models (default 224)")
    parser.add_argument("--compile", default="off", choices=COMPILE_MODES, help="finetune_compile mode")
    parser.add_argument("--calibration-images", type=int, default=None,
                        help="random images the student calibrates on (default: 2 x batch on CPU, the config's 512 "
                             "on CUDA)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--cam-layers", default="last_conv,pool",
                        help="CNNs: comma list of cam_layer values, one row each (ViTs: one row)")
    parser.add_argument("--json", action="store_true", help="one JSON object per model on stdout")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available on this machine")
    layers = [v.strip() for v in args.cam_layers.split(",") if v.strip()]
    if not layers or set(layers) - {"last_conv", "pool"}:
        raise SystemExit(f"--cam-layers takes last_conv and/or pool, got {args.cam_layers!r}")
    torch.manual_seed(0)
    batches = [int(b) for b in args.batch.split(",")] if args.batch else [None]
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        for batch in batches:
            for precision in [p.strip() for p in args.precision.split(",") if p.strip()]:
                for layer in layers:
                    result = bench(name, args.repeats, args.warmup, args.device, precision, batch, args.size,
                                   args.compile, calibration_images=args.calibration_images, cam_layer=layer)
                    if args.json:
                        print(json.dumps(result), flush=True)
                    else:
                        print(f"{result['model']} ({result['cam_layer'] or 'vit'}): SynQ step {result['step_s']:.4f} s, "
                              f"floor {result['floor_s']:.4f} s, "
                              f"ratio {result['ratio']:.3f} (batch {result['batch']}, {result['precision']}, "
                              f"{result['device']})", flush=True)
                    if result["cam_layer"] is None:
                        break  # a ViT has one CAM layer
    return 0


if __name__ == "__main__":
    sys.exit(main())
