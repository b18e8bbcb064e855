"""Top-1 of float, PTQ-on-synthetic and SynQ for the shared CIFAR-10 ResNet-20 at W4A4 and W3A3.

One synthetic set is made per run (or loaded from ``--synthetic DIR``, where a new one is also cached) and
shared by every bit-width; float accuracy is measured once per test file. Both shared test files are used:
the lossless first 1,017 test images and the JPEG-degraded (q75) full 10k test split.

    python benchmarks/cifar10_accuracy.py --json                              # cpu budget, W4A4 + W3A3
    python benchmarks/cifar10_accuracy.py --json --synthetic /tmp/syn         # cache / reuse the synthetic set
    python benchmarks/cifar10_accuracy.py --json --budget paper --device cuda # the paper's schedule (GPU)
    python benchmarks/cifar10_accuracy.py --json --ablation --bits W4A4 --synthetic /tmp/syn

Prints a JSON list of rows ``{"bits", "data", "fp_top1", "ptq_top1", "synq_top1", "seconds"}`` (with
``--ablation`` each row also has ``"variant"``). ``seconds`` is the wall time of that bit-width's PTQ
calibration plus SynQ fine-tuning; synthesis (shared) and evaluation are excluded and reported on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402
import torch  # noqa: E402

from synq_hf import SynQConfig, SynQQuantizer, evaluate_model, load_image_dataset, load_model  # noqa: E402
from synq_hf.errors import ConfigError  # noqa: E402
from synq_hf.synthesis.dataset import synthesis_metadata  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEFAULT_TEACHER = SHARED / "teachers" / "cifar10-resnet20"
DATA_FILES = {
    "lossless": SHARED / "cifar10" / "test-lossless-first1017.parquet",
    "jpeg": SHARED / "cifar10" / "test-jpeg-q75.parquet",
}


@dataclass(frozen=True)
class Budget:
    """Synthesis and fine-tuning schedule of one benchmark budget (``max_steps=None``: run ``num_epochs``)."""

    num_images: int
    iterations: int
    synthesis_batch_size: int
    train_batch_size: int
    max_steps: int | None
    num_epochs: float = 100.0
    augment: bool = False
    eval_limit: int | None = None
    config: dict[str, Any] = field(default_factory=dict)


BUDGETS: dict[str, Budget] = {
    # The paper's CIFAR schedule: 5,120 images x 1,000 iterations, 100 epochs at batch 256 (2,000 steps); a GPU job.
    "paper": Budget(num_images=5120, iterations=1000, synthesis_batch_size=256, train_batch_size=256, max_steps=None),
    # <= 30 min for both bit-widths on 2 idle CPU cores, evaluation of both test files included (BENCHMARKS.md).
    "cpu": Budget(num_images=512, iterations=200, synthesis_batch_size=256, train_batch_size=128, max_steps=300),
    # Seconds: checks the pipeline and the row format only (tests/test_cifar10_benchmark.py).
    "smoke": Budget(num_images=16, iterations=2, synthesis_batch_size=16, train_batch_size=8, max_steps=2,
                    eval_limit=64, config={"calibration_num_images": 16, "calibration_batch_size": 16}),
}

# Ablation variants at one budget: the same synthetic set and steps, one component switched off.
ABLATION: dict[str, dict[str, Any]] = {
    "all": {},  # all on
    "no_lpf": {"lpf_d0": 0.0},  # without the low-pass filter
    "no_cam": {"lambda_cam": 0.0},  # without the Grad-CAM alignment loss
    "ce_all": {"tau": 1.0},  # without selective CE: CE on every sample
    "no_ce": {"lambda_ce": 0.0},  # without any CE term
}


def parse_bits(spec: str) -> list[tuple[int, int]]:
    """``"W4A4,W3A3"`` -> ``[(4, 4), (3, 3)]``."""
    out = []
    for part in spec.split(","):
        p = part.strip().upper()
        if not (p.startswith("W") and "A" in p):
            raise SystemExit(f"--bits entries look like W4A4, got {part!r}")
        w, a = p[1:].split("A", 1)
        try:
            out.append((int(w), int(a)))
        except ValueError:
            raise SystemExit(f"--bits entries look like W4A4, got {part!r}") from None
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["lpf_d0=12", "lambda_cam=100"]`` -> SynQConfig field overrides (values parsed as JSON when possible)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_or_synthesize(teacher: Any, config: SynQConfig, budget: Budget, seed: int, folder: str | None,
                       device: str, progress: bool) -> tuple[datasets.Dataset, float]:
    """The synthetic set from ``folder`` if one is saved there, else a new one (saved to ``folder`` if given)."""
    if folder and (Path(folder) / "dataset_info.json").exists():
        dataset = datasets.load_from_disk(folder)
        meta = synthesis_metadata(dataset)
        made = (meta.get("num_images"), meta.get("config", {}).get("synthesis_iterations"), meta.get("seed"))
        if made != (budget.num_images, budget.iterations, seed):
            _log(f"note: {folder} holds (images, iterations, seed) = {made}, not the budget's "
                 f"{(budget.num_images, budget.iterations, seed)}; using it as it is")
        _log(f"loaded {len(dataset)} synthetic images from {folder}")
        return dataset, 0.0
    q = SynQQuantizer(teacher, config, device=device)
    start = time.perf_counter()
    dataset = q.synthesize(num_images=budget.num_images, iterations=budget.iterations, seed=seed, progress=progress)
    seconds = time.perf_counter() - start
    if folder:
        dataset.save_to_disk(folder)
        _log(f"saved the synthetic set to {folder}")
    return dataset, seconds


def quantize_synq(q: SynQQuantizer, synthetic: datasets.Dataset, budget: Budget, output_dir: str | None,
                  progress: bool) -> None:
    """SynQ fine-tuning of ``q`` on ``synthetic`` with the budget's steps (and augmentation if it asks)."""
    if not budget.augment:
        q.quantize(synthetic, max_steps=budget.max_steps, output_dir=output_dir, progress=progress)
        return
    # SynQQuantizer.quantize has no augment switch: run the same steps through finetune directly.
    import copy
    import tempfile

    from synq_hf.quant import quantize_model
    from synq_hf.training import finetune

    student = quantize_model(copy.deepcopy(q.teacher.model), q.config).requires_grad_(True)
    with tempfile.TemporaryDirectory(prefix="synq-bench-") as tmp:
        q.model = finetune(q.teacher, student, synthetic, q.config, output_dir=output_dir or tmp,
                           max_steps=budget.max_steps, augment=True, progress=progress, save_final=False).eval()
    q.method = "synq"


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run the benchmark described by parsed ``args``; return the JSON rows."""
    budget = BUDGETS[args.budget]
    if args.steps is not None:
        budget = dataclasses.replace(budget, max_steps=args.steps)
    if args.augment is not None:
        budget = dataclasses.replace(budget, augment=args.augment)
    limit = args.limit if args.limit is not None else budget.eval_limit
    bits_list = parse_bits(args.bits)
    names = [d.strip() for d in args.data.split(",") if d.strip()]
    for name in names:
        if name not in DATA_FILES:
            raise SystemExit(f"--data names are {sorted(DATA_FILES)}, got {name!r}")
    base = {
        "num_images": budget.num_images, "synthesis_iterations": budget.iterations,
        "synthesis_batch_size": budget.synthesis_batch_size, "train_batch_size": budget.train_batch_size,
        "max_steps": budget.max_steps, "num_epochs": budget.num_epochs, "seed": args.seed, **budget.config,
    }
    try:
        config = SynQConfig(**{**base, **parse_overrides(args.set)})
    except (ConfigError, TypeError) as e:
        raise SystemExit(f"bad configuration: {e}") from None
    variants: dict[str | None, dict[str, Any]] = {None: {}}
    if args.ablation:
        chosen = [v.strip() for v in args.variants.split(",")] if args.variants else list(ABLATION)
        unknown = [v for v in chosen if v not in ABLATION]
        if unknown:
            raise SystemExit(f"unknown ablation variant(s) {unknown}; choose from {list(ABLATION)}")
        variants = {v: ABLATION[v] for v in chosen}
    progress = not args.no_progress

    teacher_id = args.teacher if ":" in args.teacher else f"local-dir:{args.teacher}"
    teacher = load_model(teacher_id)
    wall = time.perf_counter()
    synthetic, synth_s = load_or_synthesize(teacher, config, budget, args.seed, args.synthetic, args.device, progress)
    test_sets = {name: load_image_dataset(f"parquet:{DATA_FILES[name]}") for name in names}

    eval_s = 0.0

    def evaluate(fn: Any, data: Any, **kwargs: Any) -> float:
        nonlocal eval_s
        start = time.perf_counter()
        top1 = fn(data, limit=limit, progress=progress, **kwargs)["top1"]
        eval_s += time.perf_counter() - start
        return round(top1, 2)

    def float_model(data: Any, **kwargs: Any) -> dict[str, Any]:
        return evaluate_model(teacher, data, device=args.device, **kwargs)

    fp = {name: evaluate(float_model, d) for name, d in test_sets.items()}
    _log(f"float top-1: {fp}")
    rows: list[dict[str, Any]] = []
    for w_bits, a_bits in bits_list:
        cfg = config.replace(w_bits=w_bits, a_bits=a_bits)
        start = time.perf_counter()
        ptq_q = SynQQuantizer(teacher, cfg, device=args.device)
        ptq_q.ptq(synthetic, progress=progress)
        ptq_s = time.perf_counter() - start
        ptq = {name: evaluate(ptq_q.evaluate, d, which="ptq") for name, d in test_sets.items()}
        _log(f"W{w_bits}A{a_bits} PTQ top-1: {ptq}")
        for variant, changes in variants.items():
            q = SynQQuantizer(teacher, cfg.replace(**changes), device=args.device)
            start = time.perf_counter()
            quantize_synq(q, synthetic, budget, args.output_dir, progress)
            synq_s = time.perf_counter() - start
            for name, d in test_sets.items():
                row = {"bits": f"W{w_bits}A{a_bits}", "data": name, "fp_top1": fp[name], "ptq_top1": ptq[name],
                       "synq_top1": evaluate(q.evaluate, d, which="synq"),
                       "seconds": round(ptq_s + synq_s, 1)}
                if variant is not None:
                    row["variant"] = variant
                rows.append(row)
                _log(json.dumps(row))
    total = time.perf_counter() - wall
    _log(f"wall time {total:.0f} s (synthesis {synth_s:.0f} s, evaluation {eval_s:.0f} s, "
         f"threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f})")
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="cpu",
                        help="cpu: <= 30 min on 2 cores; paper: 5,120 images, 1,000 iterations, 100 epochs (GPU)")
    parser.add_argument("--bits", default="W4A4,W3A3", help="comma-separated bit-widths, e.g. W4A4,W3A3")
    parser.add_argument("--teacher", default=str(DEFAULT_TEACHER), help="teacher folder or model id")
    parser.add_argument("--data", default="lossless,jpeg", help="test files: lossless, jpeg or both")
    parser.add_argument("--synthetic", default=None, help="folder to load the synthetic set from, or to save it to")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a SynQConfig field (repeatable), e.g. --set lpf_d0=12")
    parser.add_argument("--steps", type=int, default=None, help="override the budget's fine-tuning steps")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help="random shift + flip during fine-tuning (default: the budget's choice)")
    parser.add_argument("--ablation", action="store_true",
                        help="SynQ with each component switched off in turn (same synthetic set and steps)")
    parser.add_argument("--variants", default=None,
                        help=f"with --ablation: comma-separated subset of {','.join(ABLATION)} (default: all)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate on the first N test images only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output-dir", default=None, help="fine-tuning checkpoints (default: a temporary folder)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print the rows as one JSON list on stdout")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with contextlib.redirect_stdout(sys.stderr):  # Trainer logs go to stdout; keep it for the JSON
        rows = run(args)
    if args.json:
        print(json.dumps(rows, indent=1), flush=True)
    else:
        for r in rows:
            extra = f"  [{r['variant']}]" if "variant" in r else ""
            print(f"{r['bits']} {r['data']:8s} float {r['fp_top1']:6.2f}  PTQ {r['ptq_top1']:6.2f}  "
                  f"SynQ {r['synq_top1']:6.2f}  ({r['seconds']:.0f} s){extra}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
