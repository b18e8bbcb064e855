"""Train the demo teacher on the digits training split and save it in timm's Hub layout.

This is the script that produced the committed ``synq_hf/assets/digits_teacher`` (under a minute on
2 CPU cores)::

    python -m synq_hf.demo.train_teacher                  # rebuild the committed weights
    python -m synq_hf.demo.train_teacher --out /tmp/t      # or train a copy elsewhere

Images go through the model's own eval preprocessing (the path every evaluation uses), then
random affine jitter (rotation, scale, shift) in pixel space; AdamW with a cosine schedule.
The float test accuracy and the split fingerprint are written into ``config.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import digits as D

logger = logging.getLogger(__name__)

DEFAULT_RECIPE: dict[str, Any] = {
    "seed": 0,
    "epochs": 30,
    "batch_size": 64,
    "lr": 3e-3,
    "weight_decay": 5e-4,
    "max_rotation_deg": 12.0,
    "scale_range": (0.9, 1.1),
    "max_shift_px": 1.5,
}


def _eval_transform(model: nn.Module) -> Any:
    """synq_hf's eval preprocessing for the model (16×16 bilinear resize, to tensor, normalize)."""
    from timm.data import resolve_model_data_config

    from ..data import build_eval_transform

    return build_eval_transform(resolve_model_data_config(model))


def preprocess(model: nn.Module, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalized images (N, 3, 16, 16), labels (N,)) of a split, via the model's eval transform."""
    ds = D.digits_dataset(split)
    transform = _eval_transform(model)
    x = torch.stack([transform(img) for img in ds["image"]])
    return x, torch.tensor(ds["label"], dtype=torch.long)


def training_stats(x_unnormalized: torch.Tensor) -> tuple[float, float]:
    """Mean and std of the (grey, channel-replicated) training pixels in [0, 1]."""
    return float(x_unnormalized.mean()), float(x_unnormalized.std())


def random_affine(x: torch.Tensor, gen: torch.Generator, recipe: dict[str, Any]) -> torch.Tensor:
    """Per-sample random rotation/scale/shift of [0, 1] images, zero (background) outside."""
    n, _, h, _ = x.shape
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(recipe["max_rotation_deg"])
    lo, hi = recipe["scale_range"]
    scale = lo + torch.rand(n, generator=gen) * (hi - lo)
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (2 * recipe["max_shift_px"] / h)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 250) -> tuple[int, float]:
    """(correct count, top-1 %) of ``model`` in eval mode."""
    model.eval()
    correct = sum(int((model(xb).argmax(-1) == yb).sum()) for xb, yb in zip(x.split(batch_size), y.split(batch_size)))
    return correct, 100.0 * correct / len(y)


def train(out: Path, recipe: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train the teacher with ``recipe`` (defaults: ``DEFAULT_RECIPE``), save it to ``out``, return metadata."""
    import timm
    from timm.models import save_for_hf

    recipe = {**DEFAULT_RECIPE, **(recipe or {})}
    torch.manual_seed(recipe["seed"])
    gen = torch.Generator().manual_seed(recipe["seed"])
    start = time.perf_counter()

    model = timm.create_model(D.ARCHITECTURE)
    mean, std = torch.tensor(D.DIGITS_MEAN).view(1, 3, 1, 1), torch.tensor(D.DIGITS_STD).view(1, 3, 1, 1)
    x_train, y_train = preprocess(model, "train")
    x_test, y_test = preprocess(model, "test")
    pixels = x_train * std + mean
    got_mean, got_std = training_stats(pixels)
    if abs(got_mean - D.DIGITS_MEAN[0]) > 1e-4 or abs(got_std - D.DIGITS_STD[0]) > 1e-4:
        raise RuntimeError(
            f"DIGITS_MEAN/DIGITS_STD in digits.py are stale: the training split has mean {got_mean:.4f}, "
            f"std {got_std:.4f}; update the constants and rerun"
        )

    steps_per_epoch = math.ceil(len(y_train) / recipe["batch_size"])
    total = steps_per_epoch * recipe["epochs"]
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe["lr"], total_steps=total, pct_start=0.15)
    for _ in tqdm(range(recipe["epochs"]), desc="train digits teacher", unit="epoch"):
        model.train()
        for idx in torch.randperm(len(y_train), generator=gen).split(recipe["batch_size"]):
            xb = (random_affine(pixels[idx], gen, recipe) - mean) / std
            loss = F.cross_entropy(model(xb), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    correct, top1 = accuracy(model, x_test, y_test)
    _, train_top1 = accuracy(model, x_train, y_train)
    meta = {
        "dataset": "sklearn.datasets.load_digits (UCI optdigits, CC BY 4.0)",
        "split_seed": D.SPLIT_SEED,
        "num_train": len(y_train),
        "num_test": len(y_test),
        "test_indices_sha256": D.split_fingerprint(),
        "float_test_correct": correct,
        "float_test_top1": round(top1, 2),
        "float_train_top1": round(train_top1, 2),
        "recipe": {k: list(v) if isinstance(v, tuple) else v for k, v in recipe.items()},
        "train_seconds": round(time.perf_counter() - start, 1),
        "torch_version": torch.__version__,
        "trained_by": "python -m synq_hf.demo.train_teacher",
    }
    model.eval()
    save_for_hf(model, str(out), model_config={"synq_hf_demo": meta}, safe_serialization=True)
    (out / "model.safetensors").chmod(0o644)  # safetensors creates it owner-only; the package ships it
    logger.info("float top-1 on the %d held-out digits: %.2f%% (%d correct)", len(y_test), top1, correct)
    return meta


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: ``python -m synq_hf.demo.train_teacher [--out DIR] [--seed N] [--epochs N]``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_out = Path(__file__).resolve().parent.parent / "assets" / "digits_teacher"
    parser.add_argument("--out", type=Path, default=default_out, help=f"output folder (default: {default_out})")
    parser.add_argument("--seed", type=int, default=DEFAULT_RECIPE["seed"], help="training seed")
    parser.add_argument("--epochs", type=int, default=DEFAULT_RECIPE["epochs"], help="training epochs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)  # a 34k-parameter net: more threads only add sync overhead (10x on a busy CPU)
    meta = train(args.out, {"seed": args.seed, "epochs": args.epochs})
    print(json.dumps(meta, indent=2))
    print(f"saved to {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
