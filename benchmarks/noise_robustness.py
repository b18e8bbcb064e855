"""Robustness to noisy synthetic images (the paper's Table 9): SynQ against the baseline on the shared ResNet-20.

Noise is added to every synthetic image before fine-tuning (in pixel units: the images are mapped back to [0, 1]
with the teacher's mean/std, noised, and normalized again; nothing is clipped, as synthetic pixels are not):

* ``gaussian``: ``x + n``, ``n ~ N(0, 0.1²)``;
* ``speckle``: ``x + x·n``, ``n ~ N(0, 0.2²)``;
* ``salt_pepper``: 5% of the pixel positions set to 0 or 1 (all channels, each with probability 1/2);
* ``uniform``: ``x + n``, ``n ~ U(-0.2, 0.2)``;

``--strength`` scales every level. Both methods fine-tune the same noisy set with the same budget; each
calibrates on its own calibration images (``calibration_images``: SynQ's are low-pass filtered, the baseline's
are not, as it has no filter):

* ``synq``: the library defaults (low-pass filter, Grad-CAM alignment, selective CE);
* ``baseline``: no low-pass filter, no CAM term, CE on every sample (``lpf_d0=0, lambda_cam=0, tau=1``).

    python benchmarks/noise_robustness.py --json --synthetic /work/cache/syn/r20-cpu-seed0 --threads 1 --no-progress
    python benchmarks/noise_robustness.py --json --synthetic DIR --noises none,gaussian --methods synq --bits W3A3

Prints ``{"rows": [...]}``, a row per (noise, method, test file): ``noise, level, method, bits, data, seed,
top1`` (final step), ``best_top1``/``best_step``, ``nonfinite``, ``seconds``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cifar10_accuracy as bench  # noqa: E402
import datasets  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from synq_hf import SynQQuantizer, evaluate_model, load_image_dataset, load_model  # noqa: E402
from synq_hf.config import SynQConfig  # noqa: E402

NOISES: dict[str, float] = {"none": 0.0, "gaussian": 0.1, "speckle": 0.2, "salt_pepper": 0.05, "uniform": 0.2}
"""Noise -> level at ``--strength 1``: the standard deviation (gaussian, speckle), the fraction of pixel
positions (salt_pepper) or the half-width (uniform), in [0, 1] pixel units."""
METHODS: dict[str, dict[str, Any]] = {
    "synq": {},
    "baseline": {"lpf_d0": 0.0, "lambda_cam": 0.0, "tau": 1.0},
}


def add_noise(pixels: torch.Tensor, noise: str, level: float, mean: torch.Tensor, std: torch.Tensor,
              generator: torch.Generator) -> torch.Tensor:
    """``pixels`` (N, C, H, W, normalized) with ``noise`` of ``level`` added in [0, 1] pixel units."""
    if noise not in NOISES:
        raise SystemExit(f"unknown noise {noise!r}; choose from {list(NOISES)}")
    if noise == "none" or level == 0:
        return pixels.clone()
    x = pixels * std + mean
    if noise == "gaussian":
        x = x + level * torch.randn(x.shape, generator=generator)
    elif noise == "speckle":
        x = x + x * level * torch.randn(x.shape, generator=generator)
    elif noise == "uniform":
        x = x + level * (2 * torch.rand(x.shape, generator=generator) - 1)
    else:  # salt and pepper: whole pixel positions, every channel
        n, _, h, w = x.shape
        hit = torch.rand((n, 1, h, w), generator=generator) < level
        value = (torch.rand((n, 1, h, w), generator=generator) < 0.5).to(x.dtype)
        x = torch.where(hit, value.expand_as(x), x)
    return (x - mean) / std


def noisy_dataset(dataset: datasets.Dataset, noise: str, level: float, data_config: dict[str, Any],
                  seed: int) -> datasets.Dataset:
    """A copy of the synthetic set with noise added to every image (labels and metadata kept)."""
    pixels = torch.as_tensor(np.asarray(dataset.with_format("numpy")["pixel_values"], dtype=np.float32))
    mean = torch.tensor(data_config["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(data_config["std"], dtype=torch.float32).view(1, -1, 1, 1)
    generator = torch.Generator().manual_seed(seed)
    noisy = add_noise(pixels, noise, level, mean, std, generator)
    return datasets.Dataset.from_dict({"pixel_values": noisy.numpy(), "label": dataset["label"]},
                                      features=dataset.features, info=dataset.info)


def run(args: argparse.Namespace) -> dict[str, Any]:
    budget = dataclasses.replace(bench.BUDGETS[args.budget], eval_every=args.eval_every)
    if args.steps is not None:
        budget = dataclasses.replace(budget, max_steps=args.steps)
    noises = [n.strip() for n in args.noises.split(",") if n.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for name in noises:
        if name not in NOISES:
            raise SystemExit(f"unknown noise {name!r}; choose from {list(NOISES)}")
    for name in methods:
        if name not in METHODS:
            raise SystemExit(f"unknown method {name!r}; choose from {list(METHODS)}")
    names = [d.strip() for d in args.data.split(",") if d.strip()]
    for name in names:
        if name not in bench.DATA_FILES:
            raise SystemExit(f"--data names are {sorted(bench.DATA_FILES)}, got {name!r}")
    (w_bits, a_bits), = bench.parse_bits(args.bits)
    teacher = load_model(args.teacher if ":" in args.teacher else f"local-dir:{args.teacher}")
    base = SynQConfig(num_images=budget.num_images, synthesis_iterations=budget.iterations,
                      synthesis_batch_size=budget.synthesis_batch_size, train_batch_size=budget.train_batch_size,
                      max_steps=budget.max_steps, num_epochs=budget.num_epochs, **budget.config)
    config = SynQQuantizer(teacher, base, device=args.device).config.replace(w_bits=w_bits, a_bits=a_bits,
                                                                             seed=args.seed)
    synthetic, _ = bench.load_or_synthesize(teacher, config, budget, args.seed, args.synthetic, args.device,
                                            not args.no_progress)
    tests = {n: load_image_dataset(f"parquet:{bench.DATA_FILES[n]}") for n in names}

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        return {n: round(evaluate_model(model, d, teacher.data_config, device=args.device, limit=args.limit,
                                        progress=False)["top1"], 2) for n, d in tests.items()}

    rows = []
    for noise in noises:
        level = NOISES[noise] * args.strength
        noisy = noisy_dataset(synthetic, noise, level, teacher.data_config, args.seed)
        for method in methods:
            start = time.perf_counter()
            cfg = config.replace(**METHODS[method])
            model, tracker, diverged = bench.fine_tune(teacher, cfg, noisy, budget, args.device, not args.no_progress,
                                                       evaluate, None)
            final = tracker.history[-1][1]
            for name in names:
                best, step = tracker.best(name)
                row = {"noise": noise, "level": level, "method": method, "bits": f"W{w_bits}A{a_bits}",
                       "data": name, "seed": args.seed, "top1": final[name], "best_top1": best, "best_step": step,
                       "nonfinite": diverged, "seconds": round(time.perf_counter() - start, 1)}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    return {"rows": rows}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=sorted(bench.BUDGETS), default="cpu")
    parser.add_argument("--bits", default="W3A3", help="one bit-width, e.g. W3A3")
    parser.add_argument("--noises", default=",".join(NOISES), help=f"comma-separated subset of {list(NOISES)}")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {list(METHODS)}")
    parser.add_argument("--strength", type=float, default=1.0, help="multiply every noise level by this")
    parser.add_argument("--teacher", default=str(bench.DEFAULT_TEACHER), help="teacher folder or model id")
    parser.add_argument("--synthetic", default=None, help="the synthetic set to load (or to save a new one to)")
    parser.add_argument("--data", default="lossless", help="comma-separated test files: lossless, jpeg (e.g. lossless,jpeg)")
    parser.add_argument("--seed", type=int, default=0, help="synthesis, noise and fine-tuning seed")
    parser.add_argument("--steps", type=int, default=None, help="override the budget's fine-tuning steps")
    parser.add_argument("--eval-every", type=int, default=0,
                        help="also evaluate every N steps for the best step (0, the default: the final model only)")
    bench.add_run_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    return bench.run_and_print(build_parser().parse_args(argv), run, lambda r: (
        f"{r['noise']:12s} {r['method']:9s} {r['bits']} {r['data']:8s} top-1 {r['top1']:6.2f} (best {r['best_top1']})"))

if __name__ == "__main__":
    sys.exit(main())
