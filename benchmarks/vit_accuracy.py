"""Top-1 of float, PSAQ-ViT, SynQ and the real-data ceiling on the shared CIFAR-10 ViT (faithful PSAQ-ViT placement).

Per seed, one synthetic set (PSAQ-ViT patch-similarity synthesis) is made (or loaded from ``--synthetic DIR``,
one sub-folder per seed) and shared by every bit-width. Columns:

* ``psaq_top1``: PSAQ-ViT, i.e. PTQ with per-tensor min-max activation ranges calibrated in one batch on the
  first ``--psaq-images`` (32) raw synthetic images (no filter), min-max symmetric per-channel weights;
* ``synq_top1``: SynQ fine-tuning (KD + selective CE + ViT Grad-CAM, low-pass filtered set) starting from the
  config's PTQ (searched ranges, calibrated on the raw synthetic images: ``calibrate_filtered``), final step;
  ``synq_images`` records how many synthetic images it used;
* ``ceiling_top1`` (``--ceiling``): the same fine-tuning on the first N real *training* images
  (``train-jpeg-q75.parquet``, never used by the zero-shot path), same number of steps;
* ``agreement``: the fraction of synthetic images the float teacher classifies as their assigned label.

    python benchmarks/vit_accuracy.py --json                                   # cpu budget, seed 0, 4 bit-widths
    python benchmarks/vit_accuracy.py --json --seeds 0,1,2 --ceiling           # the 3-seed table (BENCHMARKS.md)
    python benchmarks/vit_accuracy.py --json --budget smoke --limit 64         # seconds: pipeline check only
    python benchmarks/vit_accuracy.py --json --synthesis-only --iterations 1000  # label agreement only

Prints ``{"rows": [...], "summary": [...]}`` (mean and min over seeds per bit-width and test file).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cifar10_accuracy as base  # noqa: E402
import torch  # noqa: E402

from synq_hf import SynQConfig, SynQQuantizer, evaluate_model, load_image_dataset, load_model  # noqa: E402
from synq_hf.apply import calibrate, iter_batches, quantize_model  # noqa: E402
from synq_hf.model_info import model_logits  # noqa: E402

DEFAULT_TEACHER = base.SHARED / "teachers" / "cifar10-vit-tiny"
if not DEFAULT_TEACHER.exists():
    DEFAULT_TEACHER = Path("/work/shared/data/teachers/cifar10-vit-tiny")
PSAQ = {"act_range_init": "minmax", "weight_range_init": "minmax"}

BUDGETS: dict[str, base.Budget] = {
    # <= 30 CPU-minutes per bit-width row on 2 idle cores (recipes/cifar10_vit_*.py use the same schedule)
    "cpu": base.Budget(num_images=32, iterations=1000, synthesis_batch_size=32, train_batch_size=32, max_steps=100,
                       eval_every=0, config={"learning_rate": 1e-4, "lpf_d0": 8.0, "tau": 0.7}),
    # a few CPU minutes: the slow CI guard (tests/integration/test_vit_benchmark.py) that SynQ beats PSAQ-ViT at W4A4
    "guard": base.Budget(num_images=32, iterations=100, synthesis_batch_size=32, train_batch_size=32, max_steps=60,
                         eval_every=0, eval_limit=256, config={"learning_rate": 1e-4, "lpf_d0": 8.0, "tau": 0.7}),
    # seconds: the row format only
    "smoke": base.Budget(num_images=8, iterations=2, synthesis_batch_size=8, train_batch_size=8, max_steps=2,
                         eval_every=0, eval_limit=64,
                         config={"calibration_num_images": 8, "calibration_batch_size": 8}),
}


def agreement(teacher: torch.nn.Module, pixels: torch.Tensor, labels: torch.Tensor, device: str) -> float:
    """Fraction of synthetic images the float teacher classifies as their assigned label."""
    with torch.no_grad():
        pred = model_logits(teacher.to(device), pixels.to(device)).argmax(-1).cpu()
    return float((pred == labels).float().mean())


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark described by ``args``; return ``{"rows": [...], "summary": [...]}``."""
    budget = BUDGETS[args.budget]
    if args.steps is not None:
        budget = dataclasses.replace(budget, max_steps=args.steps)
    if args.iterations is not None:
        budget = dataclasses.replace(budget, iterations=args.iterations)
    if args.eval_every is not None:  # the fine-tuning trajectory, logged to stderr (the rows keep the final step)
        budget = dataclasses.replace(budget, eval_every=args.eval_every)
    if args.num_images is not None:
        budget = dataclasses.replace(budget, num_images=args.num_images,
                                     synthesis_batch_size=min(budget.synthesis_batch_size, args.num_images))
    limit = args.limit if args.limit is not None else budget.eval_limit
    bits_list = base.parse_bits(args.bits)
    seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    names = [d.strip() for d in args.data.split(",") if d.strip()]
    config = SynQConfig(num_images=budget.num_images, synthesis_iterations=budget.iterations,
                        synthesis_batch_size=budget.synthesis_batch_size, train_batch_size=budget.train_batch_size,
                        max_steps=budget.max_steps, **{**budget.config, **base.parse_overrides(args.set)})
    progress = not args.no_progress
    teacher = load_model(args.teacher if ":" in args.teacher else f"local-dir:{args.teacher}")
    config = SynQQuantizer(teacher, config, device=args.device).config
    test_sets = {n: load_image_dataset(f"parquet:{base.DATA_FILES[n]}") for n in names}

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        return {n: round(evaluate_model(model, d, teacher.data_config, device=args.device, limit=limit,
                                        progress=False)["top1"], 2) for n, d in test_sets.items()}

    fp = evaluate(teacher.model)
    base._log(f"float top-1: {fp}")
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        folder = os.path.join(args.synthetic, f"seed{seed}") if args.synthetic else None
        synthetic, synth_s = base.load_or_synthesize(teacher, config, budget, seed, folder, args.device, progress)
        raw = synthetic.with_format("torch")[:]
        pixels, labels = raw["pixel_values"].float(), raw["label"]
        agree = agreement(teacher.model, pixels, labels, args.device)
        base._log(f"seed {seed}: teacher agrees with {agree:.3f} of {len(labels)} synthetic labels")
        if args.synthesis_only:
            rows.append({"seed": seed, "images": len(labels), "iterations": budget.iterations,
                         "agreed": int(round(agree * len(labels))), "agreement": round(agree, 4),
                         "synthesis_seconds": round(synth_s, 1)})
            continue
        real = base.real_training_set(teacher, args.ceiling_images, synthetic) if args.ceiling else None
        for w_bits, a_bits in bits_list:
            cfg = config.replace(w_bits=w_bits, a_bits=a_bits, seed=seed)
            start = time.perf_counter()
            psaq_images = pixels[: args.psaq_images]
            psaq_cfg = cfg.replace(**PSAQ, calibration_batch_size=len(psaq_images))
            student = quantize_model(copy.deepcopy(teacher.model), psaq_cfg).to(args.device)
            calibrate(student, iter_batches(psaq_images, len(psaq_images)), device=args.device, progress=False)
            psaq = evaluate(student.eval())
            ceiling = None
            if real is not None:
                _, tracker, _ = base.fine_tune(teacher, cfg, real, budget, args.device, progress, evaluate, None)
                ceiling = tracker.history[-1][1]
            _, tracker, diverged = base.fine_tune(teacher, cfg, synthetic, budget, args.device, progress, evaluate,
                                                  None)
            synq = tracker.history[-1][1]
            for n in names:
                row = {"bits": f"W{w_bits}A{a_bits}", "data": n, "seed": seed, "fp_top1": fp[n], "psaq_top1": psaq[n],
                       "synq_top1": synq[n], "synq_images": len(synthetic), "psaq_images": len(psaq_images),
                       "calibrate_filtered": cfg.calibrate_filtered,
                       "agreement": round(agree, 4), "nonfinite": diverged,
                       "seconds": round(time.perf_counter() - start, 1)}
                if ceiling is not None:
                    row["ceiling_top1"] = ceiling[n]
                rows.append(row)
                base._log(json.dumps(row))
    return {"rows": rows, "summary": [] if args.synthesis_only else summarize(rows)}


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and min over seeds of every accuracy, and the mean drop from float, per (bits, data)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["bits"], r["data"]), []).append(r)
    out = []
    for (bits, data), rs in groups.items():
        entry: dict[str, Any] = {"bits": bits, "data": data, "seeds": [r["seed"] for r in rs],
                                 "fp_top1": rs[0]["fp_top1"], "any_nonfinite": any(r["nonfinite"] for r in rs)}
        for key in ("psaq_top1", "synq_top1", "ceiling_top1", "agreement"):
            values = [r[key] for r in rs if r.get(key) is not None]
            if values:
                entry[f"{key}_mean"] = round(statistics.fmean(values), 4 if key == "agreement" else 2)
                entry[f"{key}_min"] = min(values)
        entry["synq_drop_mean"] = round(entry["fp_top1"] - entry["synq_top1_mean"], 2)
        entry["synq_minus_psaq_mean"] = round(entry["synq_top1_mean"] - entry["psaq_top1_mean"], 2)
        out.append(entry)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    parser.add_argument("--bits", default="W8A8,W4A8,W4A6,W4A4", help="comma-separated bit-widths")
    parser.add_argument("--teacher", default=str(DEFAULT_TEACHER), help="teacher folder or model id")
    parser.add_argument("--data", default="lossless", help="test files: lossless, jpeg or both (comma-separated)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (synthesis, calibration, fine-tuning)")
    parser.add_argument("--synthetic", default=None, help="folder to cache the synthetic sets in (seedN/ per seed)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a SynQConfig field")
    parser.add_argument("--steps", type=int, default=None, help="override the budget's fine-tuning steps")
    parser.add_argument("--iterations", type=int, default=None, help="override the budget's synthesis iterations")
    parser.add_argument("--eval-every", type=int, default=None,
                        help="also evaluate every N fine-tuning steps (logged to stderr; rows report the final step)")
    parser.add_argument("--num-images", type=int, default=None,
                        help="override the budget's synthetic images (SynQ fine-tunes on all of them)")
    parser.add_argument("--synthesis-only", action="store_true",
                        help="only synthesize and report the teacher's label agreement per seed")
    parser.add_argument("--psaq-images", type=int, default=32, help="synthetic images PSAQ-ViT calibrates on")
    parser.add_argument("--ceiling", action="store_true", help="also fine-tune on real training images")
    parser.add_argument("--ceiling-images", type=int, default=32, help="real training images for --ceiling")
    base.add_run_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def line(r: dict) -> str:
        if args.synthesis_only:
            return f"seed {r['seed']}  agreement {r['agreed']}/{r['images']} = {r['agreement']:.3f}"
        return (f"{r['bits']} {r['data']:8s} seed {r['seed']}  float {r['fp_top1']:6.2f}  PSAQ-ViT {r['psaq_top1']:6.2f}"
                f"  SynQ {r['synq_top1']:6.2f}  ceiling {r.get('ceiling_top1')}  agreement {r['agreement']:.3f}")

    return base.run_and_print(args, run, line)

if __name__ == "__main__":
    sys.exit(main())
