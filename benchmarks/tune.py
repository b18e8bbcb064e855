"""Tuning trials for the CIFAR-10 accuracy benchmark: many SynQConfig variants on the same synthetic sets.

Loads the teacher and test files once, then for every (trial, bit-width, seed) runs the benchmark's SynQ
fine-tuning (``cifar10_accuracy.fine_tune``) on the cached synthetic set of that seed and prints one JSON line
per result. Trials are a JSON file ``{"name": {field: value, ...}, ...}`` of SynQConfig overrides applied on
top of the budget; ``--shard i/n`` runs every n-th job so that several processes can share a grid.

    python benchmarks/tune.py --grid grid.json --budget cpu --synthetic /tmp/syn --seeds 0,1,2 --bits W4A4,W3A3
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import torch

_SPEC = importlib.util.spec_from_file_location("cifar10_accuracy", Path(__file__).with_name("cifar10_accuracy.py"))
bench = importlib.util.module_from_spec(_SPEC)
sys.modules["cifar10_accuracy"] = bench
_SPEC.loader.exec_module(bench)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", required=True, help="JSON file: {trial name: {SynQConfig field: value}}")
    p.add_argument("--budget", default="cpu", choices=sorted(bench.BUDGETS))
    p.add_argument("--synthetic", required=True, help="folder with one synthetic set per seed (seedN/)")
    p.add_argument("--seeds", default="0")
    p.add_argument("--bits", default="W4A4,W3A3")
    p.add_argument("--shard", default="0/1", help="i/n: run every n-th job starting at i")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    grid = json.loads(Path(args.grid).read_text())
    budget = bench.BUDGETS[args.budget]
    seeds = [int(s) for s in args.seeds.split(",")]
    index, count = (int(v) for v in args.shard.split("/"))
    teacher = bench.load_model(f"local-dir:{bench.DEFAULT_TEACHER}")
    base = bench.SynQConfig(num_images=budget.num_images, synthesis_iterations=budget.iterations,
                            synthesis_batch_size=budget.synthesis_batch_size, train_batch_size=budget.train_batch_size,
                            max_steps=budget.max_steps, num_epochs=budget.num_epochs, **budget.config)
    base = bench.SynQQuantizer(teacher, base, device=args.device).config
    test = bench.load_image_dataset(f"parquet:{bench.DATA_FILES['lossless']}")

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        return {"lossless": round(bench.evaluate_model(model, test, teacher.data_config, device=args.device,
                                                       progress=False)["top1"], 2)}

    jobs = [(name, bits, seed) for name in grid for bits in bench.parse_bits(args.bits) for seed in seeds]
    for name, (w, a), seed in jobs[index::count]:
        folder = os.path.join(args.synthetic, f"seed{seed}")
        synthetic, _ = bench.load_or_synthesize(teacher, base, budget, seed, folder, args.device, False)
        overrides = dict(grid[name])
        steps = overrides.pop("max_steps", None)
        cfg = base.replace(w_bits=w, a_bits=a, seed=seed, **overrides)
        b = dataclasses.replace(budget, max_steps=steps or budget.max_steps)
        start = time.perf_counter()
        _, tracker, diverged = bench.fine_tune(teacher, cfg, synthetic, b, args.device, False, evaluate, None)
        best, best_step = tracker.best("lossless")
        print(json.dumps({"trial": name, "bits": f"W{w}A{a}", "seed": seed, "synq_top1": tracker.history[-1][1]["lossless"],
                          "best_top1": best, "best_step": best_step, "nonfinite": diverged,
                          "seconds": round(time.perf_counter() - start, 1), "overrides": grid[name]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
