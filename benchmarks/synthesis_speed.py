"""Cost of one synthesis iteration against its floor (one teacher forward + backward to the pixels).

    python benchmarks/synthesis_speed.py --json                 # shared ResNet-20 @256 and DeiT-tiny @224, CPU
    python benchmarks/synthesis_speed.py --json --models vit    # the shared CIFAR-10 ViT (32 px, 32 images)
    python benchmarks/synthesis_speed.py --json --device cuda   # adds ResNet-18 images/s on a GPU

Prints one JSON object per line: {"model", "batch", "iteration_s", "floor_s", "ratio", ...}. Iterations and
floors are timed alternately in the same process so machine noise hits both alike.
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
from synq_hf.synthesis.api import synthesis_family  # noqa: E402
from synq_hf.synthesis.cnn import BNStatsObjective  # noqa: E402
from synq_hf.synthesis.engine import GroupOptimizer  # noqa: E402
from synq_hf.synthesis.vit import PSAQ_BETAS, PSAQ_SCHEDULE, PatchSimilarityObjective  # noqa: E402

TEACHERS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "teachers"
if not TEACHERS.exists():
    TEACHERS = Path("/work/shared/data/teachers")
RESNET20 = TEACHERS / "cifar10-resnet20"
VIT = TEACHERS / "cifar10-vit-tiny"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _objective(teacher: torch.nn.Module, family: str, cfg: SynQConfig, device: torch.device):
    gen = torch.Generator(device=device).manual_seed(0)
    if family == "cnn":
        return BNStatsObjective(teacher, beta=cfg.synthesis_ce_beta, gamma=cfg.synthesis_ce_gamma,
                                augment=cfg.synthesis_augment, generator=gen, host_rng=random.Random(0),
                                reduction=cfg.synthesis_bn_reduction)
    return PatchSimilarityObjective(teacher, family=family, tv_weight=cfg.synthesis_tv_weight,
                                    bandwidth=cfg.synthesis_kde_bandwidth, num_points=cfg.synthesis_kde_points,
                                    generator=gen, host_rng=random.Random(0))


def measure(name: str, teacher: torch.nn.Module, batch: int, size: int, device: torch.device, repeats: int,
            groups: int = 1) -> dict:
    """Mean seconds of one synthesis iteration and of the floor, alternating, after a warm-up of each."""
    teacher = teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    family = synthesis_family(teacher)
    cfg = SynQConfig().resolve(family=family, input_size=size)
    num_classes = teacher.num_classes if hasattr(teacher, "num_classes") else 1000
    pixels = torch.randn(groups, batch, 3, size, size, device=device)
    labels = torch.randint(num_classes, (groups, batch), device=device)
    floor_x = pixels.flatten(0, 1).clone().requires_grad_(True)

    def floor_step() -> None:
        loss = F.cross_entropy(model_logits(teacher, floor_x), labels.flatten())
        torch.autograd.grad(loss, floor_x)

    iters, floors = [], []
    with _objective(teacher, family, cfg, device) as objective:
        schedule = {} if family == "cnn" else {"betas": PSAQ_BETAS, "schedule": PSAQ_SCHEDULE,
                                               "iterations": cfg.synthesis_iterations}
        opt = GroupOptimizer(objective, pixels, labels, lr=cfg.synthesis_lr, patience=cfg.synthesis_lr_patience,
                             factor=cfg.synthesis_lr_factor, min_lr=cfg.synthesis_min_lr, **schedule)
        for _ in range(2):
            opt.step()
            floor_step()
        for _ in range(repeats):
            for fn, out in ((opt.step, iters), (floor_step, floors)):
                _sync(device)
                t0 = time.perf_counter()
                fn()
                _sync(device)
                out.append(time.perf_counter() - t0)
    it_s, floor_s = statistics.mean(iters), statistics.mean(floors)
    return {"model": name, "batch": batch * groups, "iteration_s": round(it_s, 5), "floor_s": round(floor_s, 5),
            "ratio": round(it_s / floor_s, 3), "median_ratio": round(statistics.median(iters) / statistics.median(floors), 3),
            "device": device.type, "repeats": repeats}


def vit_loss_memory(teacher: torch.nn.Module, batch: int, size: int, device: torch.device) -> dict:
    """Bytes the patch-similarity loss keeps for backward beyond the model's own, vs a naive B x P x P x d form."""
    teacher = teacher.to(device).eval()
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

    with _objective(teacher, "vit", cfg, device) as objective:
        full = saved_bytes(lambda: objective(x, y))
    base = saved_bytes(model_only)
    blocks = len(objective.blocks)
    tokens = (size // 16) ** 2
    dim = teacher.embed_dim // teacher.blocks[0].attn.num_heads
    naive = blocks * batch * tokens * tokens * dim * 4
    return {"model": "vit_loss_memory", "batch": batch, "loss_saved_bytes": full - base,
            "model_saved_bytes": base, "naive_pairwise_bytes": naive}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object per measurement")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=10, help="timed iterations (and floors) per model")
    parser.add_argument("--models", default="resnet20,deit", help="comma list of resnet20, deit, vit")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results = []
    if not RESNET20.exists():
        print(f"shared teacher not found at {RESNET20}", file=sys.stderr)
        return 1
    models = set(args.models.split(","))
    if "resnet20" in models:
        resnet20 = timm.create_model(f"local-dir:{RESNET20}", pretrained=True)
        results.append(measure("cifar10-resnet20", resnet20, 256, 32, device, args.repeats))
    if "deit" in models:
        deit = timm.create_model("deit_tiny_patch16_224", pretrained=False)
        results.append(measure("deit_tiny_patch16_224 (random init)", deit, 32, 224, device, max(3, args.repeats // 3)))
        results.append(vit_loss_memory(deit, 32, 224, device))
    if "vit" in models:
        vit = timm.create_model(f"local-dir:{VIT}", pretrained=True)
        results.append(measure("cifar10-vit-tiny", vit, 32, 32, device, args.repeats))
    if device.type == "cuda":
        r18 = timm.create_model("resnet18", pretrained=False)
        row = measure("resnet18 (random init, 4 groups)", r18, 256, 224, device, args.repeats, groups=4)
        row["images_per_s"] = round(row["batch"] / row["iteration_s"], 1)
        row["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
        results.append(row)
    for row in results:
        print(json.dumps(row) if args.json else "  ".join(f"{k}={v}" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
