"""Cost of one synthesis iteration against its floor (one teacher forward + backward to the pixels, same precision).

    python benchmarks/synthesis_speed.py --json                          # shared ResNet-20 @256 and DeiT-tiny @224, CPU
    python benchmarks/synthesis_speed.py --json --models vit             # the shared CIFAR-10 ViT (32 px, 32 images)
    python benchmarks/synthesis_speed.py --json --models vit --kde loop,fused --threads 1   # the two KDE forms
    python benchmarks/synthesis_speed.py --json --device cuda --precision fp32,bf16 \\
        --models resnet18,resnet50,mobilenetv2_100,deit_small_patch16_224,swin_tiny_patch4_window7_224

Models: ``resnet20`` and ``vit`` (the shared CIFAR-10 teachers), ``deit`` (random DeiT-tiny at 224 px), or any timm
name (random weights, ``pretrained=False``, at ``--size``, default 224). Batches are the paper's (256 for CNNs, 32
for ViTs) unless ``--batch``. CNNs run channels_last on CUDA, as synthesis does. Prints one JSON object per
measurement: {"model", "batch", "precision", "kde", "iteration_s", "floor_s", "ratio", "peak_memory_bytes", ...}.
Iterations and floors are timed alternately in the same process, so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import timm  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import synq_hf.models  # noqa: E402,F401  (registers cifar_resnet20 with timm)
from synq_hf.config import SynQConfig  # noqa: E402
from synq_hf.model_info import model_logits  # noqa: E402
from synq_hf.precision import autocast, check_precision, wants_channels_last  # noqa: E402
from synq_hf.synthesis.api import synthesis_family  # noqa: E402
from synq_hf.synthesis.cnn import BNStatsObjective  # noqa: E402
from synq_hf.synthesis.engine import GroupOptimizer  # noqa: E402
from synq_hf.synthesis.vit import KDE_FORMS, PatchSimilarityObjective  # noqa: E402

TEACHERS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "teachers"
if not TEACHERS.exists():
    TEACHERS = Path("/work/shared/data/teachers")
RESNET20 = TEACHERS / "cifar10-resnet20"
VIT = TEACHERS / "cifar10-vit-tiny"


def sync(device: torch.device) -> None:
    """Wait for the device (timings on CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(device: torch.device) -> int | None:
    """Peak bytes allocated on a CUDA device since the last reset (None on CPU)."""
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def count_syncs(fn, device: torch.device) -> int | None:  # noqa: ANN001
    """Host syncs (blocking copies, ``.item()``...) that one call of ``fn`` makes on CUDA, from torch's sync debug
    mode; None on CPU, where there is nothing to wait for."""
    if device.type != "cuda":
        return None
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message).lower() for w in caught)


def _objective(teacher: torch.nn.Module, family: str, cfg: SynQConfig, device: torch.device, precision: str,
               kde: str):
    gen = torch.Generator(device=device).manual_seed(0)
    if family == "cnn":
        return BNStatsObjective(teacher, beta=cfg.synthesis_ce_beta, gamma=cfg.synthesis_ce_gamma,
                                augment=cfg.synthesis_augment, generator=gen, host_rng=random.Random(0),
                                precision=precision, channels_last=wants_channels_last(family, device),
                                reduction=cfg.synthesis_bn_reduction)
    return PatchSimilarityObjective(teacher, family=family, tv_weight=cfg.synthesis_tv_weight,
                                    bandwidth=cfg.synthesis_kde_bandwidth, num_points=cfg.synthesis_kde_points,
                                    generator=gen, host_rng=random.Random(0), iterations=cfg.synthesis_iterations,
                                    precision=precision, kde=kde)


def measure(name: str, teacher: torch.nn.Module, batch: int, size: int, device: torch.device, repeats: int,
            groups: int = 1, precision: str = "fp32", kde: str = "auto", warmup: int = 2) -> dict:
    """Mean seconds of one synthesis iteration (the engine's step: objective, backward, Adam) and of the floor
    (teacher forward + backward to the pixels, same precision and layout), alternating, after ``warmup`` of each."""
    check_precision(precision, device)
    teacher = teacher.to(device).eval()
    grad_flags = [p.requires_grad for p in teacher.parameters()]  # restored at the end, as synthesis does
    for p in teacher.parameters():
        p.requires_grad_(False)
    family = synthesis_family(teacher)
    nhwc = wants_channels_last(family, device)
    if nhwc:
        teacher.to(memory_format=torch.channels_last)
    cfg = SynQConfig().resolve(family=family, input_size=size)
    num_classes = teacher.num_classes if hasattr(teacher, "num_classes") else 1000
    pixels = torch.randn(groups, batch, 3, size, size, device=device)
    labels = torch.randint(num_classes, (groups, batch), device=device)
    floor_x = pixels.flatten(0, 1).clone()
    if nhwc:
        floor_x = floor_x.contiguous(memory_format=torch.channels_last)
    floor_x.requires_grad_(True)

    def floor_step() -> None:
        with autocast(precision, device):
            logits = model_logits(teacher, floor_x)
        torch.autograd.grad(F.cross_entropy(logits.float(), labels.flatten()), floor_x)

    reset_peak_memory(device)
    iters, floors = [], []
    with _objective(teacher, family, cfg, device, precision, kde) as objective:
        opt = GroupOptimizer(objective, pixels, labels, lr=cfg.synthesis_lr, patience=cfg.synthesis_lr_patience,
                             factor=cfg.synthesis_lr_factor, min_lr=cfg.synthesis_min_lr,
                             iterations=cfg.synthesis_iterations, **objective.optimizer)
        for _ in range(warmup):
            opt.step()
            floor_step()
        syncs = count_syncs(opt.step, device)
        for _ in range(repeats):
            for fn, out in ((opt.step, iters), (floor_step, floors)):
                sync(device)
                t0 = time.perf_counter()
                fn()
                sync(device)
                out.append(time.perf_counter() - t0)
    if nhwc:
        teacher.to(memory_format=torch.contiguous_format)
    for p, flag in zip(teacher.parameters(), grad_flags):
        p.requires_grad_(flag)
    it_s, floor_s = statistics.mean(iters), statistics.mean(floors)
    used_kde = "-" if family == "cnn" else (kde if kde != "auto" else ("fused" if device.type == "cuda" else "loop"))
    return {"model": name, "batch": batch * groups, "groups": groups, "size": size, "precision": precision,
            "kde": used_kde, "iteration_s": round(it_s, 5), "floor_s": round(floor_s, 5),
            "ratio": round(it_s / floor_s, 3),
            "median_ratio": round(statistics.median(iters) / statistics.median(floors), 3),
            "images_per_s": round(batch * groups / it_s, 1), "peak_memory_bytes": peak_memory(device),
            "host_syncs_per_iteration": syncs,
            "device": device.type, "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "threads": torch.get_num_threads(), "repeats": repeats}


def vit_loss_memory(teacher: torch.nn.Module, batch: int, size: int, device: torch.device, kde: str = "auto") -> dict:
    """Bytes the patch-similarity loss keeps for backward beyond the model's own, vs a naive B x P x P x d form."""
    teacher = teacher.to(device).eval()
    grad_flags = [p.requires_grad for p in teacher.parameters()]
    teacher.requires_grad_(False)  # as in synthesis: only the pixels get gradients
    cfg = SynQConfig().resolve(family="vit", input_size=size)
    x = torch.randn(1, batch, 3, size, size, device=device, requires_grad=True)
    y = torch.randint(1000, (1, batch), device=device)

    def saved_bytes(fn) -> int:
        total = [0]
        seen: set[int] = set()

        def pack(t: torch.Tensor) -> torch.Tensor:
            key = t.untyped_storage().data_ptr()
            if key not in seen:
                seen.add(key)
                total[0] += t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn()
        return total[0]

    def model_only() -> None:
        model_logits(teacher, x.flatten(0, 1)).sum()

    with _objective(teacher, "vit", cfg, device, "fp32", kde) as objective:
        full = saved_bytes(lambda: objective(x, y))
    base = saved_bytes(model_only)
    for p, flag in zip(teacher.parameters(), grad_flags):
        p.requires_grad_(flag)
    blocks = len(objective.blocks)
    tokens = (size // 16) ** 2
    dim = teacher.embed_dim // teacher.blocks[0].attn.num_heads
    naive = blocks * batch * tokens * tokens * dim * 4
    return {"model": "vit_loss_memory", "batch": batch, "kde": kde, "loss_saved_bytes": full - base,
            "model_saved_bytes": base, "naive_pairwise_bytes": naive}


def build(name: str, size: int) -> tuple[torch.nn.Module, int, int]:
    """Teacher, default batch and input side of a benchmark model name."""
    if name == "resnet20":
        return timm.create_model(f"local-dir:{RESNET20}", pretrained=True), 256, 32
    if name == "vit":
        return timm.create_model(f"local-dir:{VIT}", pretrained=True), 32, 32
    if name == "deit":
        return timm.create_model("deit_tiny_patch16_224", pretrained=False), 32, 224
    try:
        model = timm.create_model(name, pretrained=False, img_size=size) if _takes_img_size(name) else \
            timm.create_model(name, pretrained=False)
    except (RuntimeError, ValueError, TypeError) as e:
        raise SystemExit(f"cannot build timm model {name!r}: {e}") from None
    family = synthesis_family(model)
    return model, (256 if family == "cnn" else 32), size


def _takes_img_size(name: str) -> bool:
    return any(k in name for k in ("vit", "deit", "swin"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object per measurement")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cpu or cuda")
    parser.add_argument("--precision", default="fp32", help="comma list of fp32, bf16, fp16 (fp16: CUDA only)")
    parser.add_argument("--kde", default="auto", help=f"comma list of ViT KDE forms {list(KDE_FORMS)}")
    parser.add_argument("--repeats", type=int, default=10, help="timed iterations (and floors) per model")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations (and floors) first")
    parser.add_argument("--models", default="resnet20,deit",
                        help="comma list: resnet20, vit (shared CIFAR-10 teachers), deit (DeiT-tiny), or timm names")
    parser.add_argument("--size", type=int, default=224, help="input side of timm-name models (default 224)")
    parser.add_argument("--batch", type=int, default=None, help="images per group (default: 256 CNN, 32 ViT)")
    parser.add_argument("--groups", type=int, default=1, help="groups per forward (synthesis_groups_per_forward)")
    parser.add_argument("--memory", action="store_true",
                        help="also the ViT loss's saved-for-backward bytes (always for deit; timm ViTs only)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available on this machine")
    device = torch.device(args.device)
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    kdes = [k.strip() for k in args.kde.split(",") if k.strip()]
    for k in kdes:
        if k not in KDE_FORMS:
            raise SystemExit(f"--kde {k!r}: choose from {list(KDE_FORMS)}")
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        if name in ("resnet20", "vit") and not TEACHERS.exists():
            print(f"shared teachers not found at {TEACHERS}", file=sys.stderr)
            return 1
        teacher, batch, size = build(name, args.size)
        family = synthesis_family(teacher)
        batch = args.batch or batch
        repeats = max(3, args.repeats // 3) if name == "deit" and device.type == "cpu" else args.repeats
        label = {"resnet20": "cifar10-resnet20", "vit": "cifar10-vit-tiny"}.get(name, f"{name} (random init)")
        for precision in precisions:
            for kde in (kdes if family != "cnn" else ["auto"]):
                row = measure(label, teacher, batch, size, device, repeats, groups=args.groups,
                              precision=precision, kde=kde, warmup=args.warmup)
                print(json.dumps(row) if args.json else "  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        if (args.memory or name == "deit") and hasattr(teacher, "blocks") and hasattr(teacher, "embed_dim"):
            for kde in kdes:
                row = vit_loss_memory(teacher, batch, size, device, kde)
                print(json.dumps(row) if args.json else "  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
