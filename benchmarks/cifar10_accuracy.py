"""Top-1 of float, min-max PTQ, clip-searched PTQ, SynQ (and a real-data ceiling) on the shared CIFAR-10 ResNet-20.

One synthetic set is made per seed (or loaded from ``--synthetic DIR``, where new ones are also cached, one
sub-folder per seed) and shared by every bit-width. Both PTQ baselines calibrate on exactly the images SynQ
calibrates on (``synq_hf.training.calibration_images``: the first images of the synthetic set, low-pass filtered
for CNNs whatever ``lpf_mode`` is).
The real-data ceiling (``--ceiling``) runs the same quantizer and fine-tuning on N real *training* images
(``train-jpeg-q75.parquet``, never used by the zero-shot path) instead of the synthetic ones.

    python benchmarks/cifar10_accuracy.py --json                              # cpu budget, W4A4 + W3A3, seed 0
    python benchmarks/cifar10_accuracy.py --json --seeds 0,1,2 --ceiling      # mean/min over seeds + ceiling
    python benchmarks/cifar10_accuracy.py --json --synthetic /tmp/syn         # cache / reuse the synthetic sets
    python benchmarks/cifar10_accuracy.py --json --budget paper --device cuda # the paper's schedule (GPU)
    python benchmarks/cifar10_accuracy.py --json --ablation --bits W3A3 --synthetic /tmp/syn

Prints ``{"rows": [...], "summary": [...]}``. A row: ``bits, data, seed, fp_top1, ptq_minmax_top1,
ptq_search_top1, synq_top1`` (final step), ``synq_best_top1``/``synq_best_step`` (the best evaluated step on
that test file, which is what the authors report; ``--eval-every``), ``ceiling_top1`` with ``--ceiling``,
``nonfinite`` (whether fine-tuning stopped on a non-finite or exploding loss) and ``seconds`` (that
bit-width's calibrations + fine-tuning wall time; synthesis and evaluation go to stderr). The summary has
the mean and min over seeds of every accuracy, per bit-width, test file (and ablation variant).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from synq_hf import SynQConfig, SynQQuantizer, evaluate_model, load_image_dataset, load_model  # noqa: E402
from synq_hf.apply import calibrate, iter_batches, quantize_model  # noqa: E402
from synq_hf.config import LOSS_PRESETS  # noqa: E402
from synq_hf.data import build_eval_transform, detect_columns  # noqa: E402
from synq_hf.errors import ConfigError  # noqa: E402
from synq_hf.synthesis.dataset import synthesis_metadata  # noqa: E402
from synq_hf.training import TrainingDiverged, calibration_images, finetune  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEFAULT_TEACHER = SHARED / "teachers" / "cifar10-resnet20"
TRAIN_FILE = SHARED / "cifar10" / "train-jpeg-q75.parquet"  # the real-data ceiling only
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
    eval_limit: int | None = None
    eval_every: int = 50
    config: dict[str, Any] = field(default_factory=dict)


BUDGETS: dict[str, Budget] = {
    # The paper's CIFAR schedule: 5,120 images x 1,000 iterations, 100 epochs at batch 256 (2,000 steps); a GPU job.
    "paper": Budget(num_images=5120, iterations=1000, synthesis_batch_size=256, train_batch_size=256, max_steps=None,
                    eval_every=200),
    # The authors' code: the paper's synthetic set, ~19k steps at batch 256 (200 iterations x 96 epochs),
    # random-resized-crop + flip on every batch with the filter after it, 20 x T^2 x KL at T = 20.
    "authors": Budget(num_images=5120, iterations=1000, synthesis_batch_size=256, train_batch_size=256,
                      max_steps=19200, eval_every=1000,
                      config={**LOSS_PRESETS["authors"], "learning_rate": 1e-4}),
    # <= 30 min for both bit-widths on 2 idle CPU cores, synthesis and evaluation included (BENCHMARKS.md).
    "cpu": Budget(num_images=512, iterations=200, synthesis_batch_size=256, train_batch_size=128, max_steps=300),
    # A few CPU minutes: the CI guard (tests/integration/test_cifar10_benchmark.py) that SynQ still beats the PTQ it starts from.
    "guard": Budget(num_images=256, iterations=100, synthesis_batch_size=256, train_batch_size=128, max_steps=120,
                    eval_every=0),
    # Seconds: checks the pipeline and the row format only (tests/integration/test_cifar10_benchmark.py).
    "smoke": Budget(num_images=16, iterations=2, synthesis_batch_size=16, train_batch_size=8, max_steps=2,
                    eval_limit=64, eval_every=1,
                    config={"calibration_num_images": 16, "calibration_batch_size": 16}),
}

# Ablation variants at one budget: the same synthetic set and steps, one component switched off.
ABLATION: dict[str, dict[str, Any]] = {
    "all": {},  # all on
    "no_lpf": {"lpf_d0": 0.0},  # without the low-pass filter
    "no_cam": {"lambda_cam": 0.0},  # without the Grad-CAM alignment loss
    "ce_all": {"tau": 1.0},  # without selective CE: CE on every sample
    "no_ce": {"lambda_ce": 0.0},  # without any CE term
}
MINMAX = {"act_range_init": "minmax", "weight_range_init": "minmax"}
SEARCH = {"act_range_init": "search", "weight_range_init": "search"}


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
    q = SynQQuantizer(teacher, config.replace(seed=seed), device=device)
    start = time.perf_counter()
    dataset = q.synthesize(num_images=budget.num_images, iterations=budget.iterations, seed=seed, progress=progress)
    seconds = time.perf_counter() - start
    if folder:
        dataset.save_to_disk(folder)
        _log(f"saved the synthetic set to {folder}")
    return dataset, seconds


def real_training_set(teacher: Any, n: int, template: datasets.Dataset) -> datasets.Dataset:
    """The first ``n`` real training images (shuffled file), preprocessed like the test set, as a synthetic-style set."""
    data = load_image_dataset(f"parquet:{TRAIN_FILE}").select(range(n))
    image_col, label_col = detect_columns(data)
    transform = build_eval_transform(teacher.data_config)
    pixels = torch.stack([transform(img) for img in data[image_col]]).numpy()
    labels = np.asarray(data[label_col], dtype=np.int64)
    real = datasets.Dataset.from_dict({"pixel_values": pixels, "label": labels}, features=template.features)
    return real


class BestStep(TrainerCallback):
    """Evaluates the student every ``every`` steps (and at the end) on the test files; keeps each file's best."""

    def __init__(self, every: int, evaluate: Any, model: torch.nn.Module) -> None:
        self.every, self.evaluate, self.model = every, evaluate, model
        self.history: list[tuple[int, dict[str, float]]] = []
        self.last_step = 0

    def _run(self, step: int) -> None:
        if not self.history or self.history[-1][0] != step:
            was_training = self.model.training
            self.history.append((step, self.evaluate(self.model.eval())))
            self.model.train(was_training)
            _log(f"step {step}: top-1 {self.history[-1][1]}")  # a run cut short still shows how far it got

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.last_step = state.global_step
        if self.every and state.global_step % self.every == 0:
            self._run(state.global_step)
        return control

    def best(self, name: str) -> tuple[float | None, int | None]:
        scored = [(acc[name], step) for step, acc in self.history if name in acc]
        if not scored:
            return None, None
        top, step = max(scored, key=lambda t: (t[0], -t[1]))
        return top, step


def fine_tune(teacher: Any, config: SynQConfig, dataset: datasets.Dataset, budget: Budget, device: str,
              progress: bool, evaluate: Any, output_dir: str | None) -> tuple[torch.nn.Module, BestStep, bool]:
    """SynQ fine-tuning with the budget's steps, evaluating every ``eval_every`` steps; (model, tracker, diverged)."""
    student = quantize_model(copy.deepcopy(teacher.model), config).requires_grad_(True).to(device)
    tracker = BestStep(budget.eval_every, evaluate, student)
    diverged = False
    with tempfile.TemporaryDirectory(prefix="synq-bench-") as tmp:
        try:
            model = finetune(teacher, student, dataset, config, output_dir=output_dir or tmp,
                             max_steps=budget.max_steps, progress=progress, save_final=False,
                             training_args={"disable_tqdm": not progress}, callbacks=[tracker])
        except TrainingDiverged as e:
            _log(f"diverged: {e}")
            model, diverged = student, True
    tracker._run(tracker.last_step)  # the final model (whatever the step it stopped at)
    return model.eval(), tracker, diverged


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark described by parsed ``args``; return ``{"rows": [...], "summary": [...]}``."""
    budget = BUDGETS[args.budget]
    if args.steps is not None:
        budget = dataclasses.replace(budget, max_steps=args.steps)
    if args.eval_every is not None:
        budget = dataclasses.replace(budget, eval_every=args.eval_every)
    limit = args.limit if args.limit is not None else budget.eval_limit
    bits_list = parse_bits(args.bits)
    seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    names = [d.strip() for d in args.data.split(",") if d.strip()]
    for name in names:
        if name not in DATA_FILES:
            raise SystemExit(f"--data names are {sorted(DATA_FILES)}, got {name!r}")
    base = {
        "num_images": budget.num_images, "synthesis_iterations": budget.iterations,
        "synthesis_batch_size": budget.synthesis_batch_size, "train_batch_size": budget.train_batch_size,
        "max_steps": budget.max_steps, "num_epochs": budget.num_epochs, **budget.config,
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
    config = SynQQuantizer(teacher, config, device=args.device).config  # resolved for this teacher
    wall = time.perf_counter()
    test_sets = {name: load_image_dataset(f"parquet:{DATA_FILES[name]}") for name in names}
    eval_s = synth_total = 0.0

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        nonlocal eval_s
        start = time.perf_counter()
        out = {name: round(evaluate_model(model, d, teacher.data_config, device=args.device, limit=limit,
                                          progress=False)["top1"], 2) for name, d in test_sets.items()}
        eval_s += time.perf_counter() - start
        return out

    def ptq(cfg: SynQConfig, images: torch.Tensor) -> dict[str, float]:
        student = quantize_model(copy.deepcopy(teacher.model), cfg).to(args.device)
        calibrate(student, iter_batches(images, cfg.calibration_batch_size), device=args.device, progress=False)
        return evaluate(student.eval())

    fp = evaluate(teacher.model)
    _log(f"float top-1: {fp}")
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        folder = None
        if args.synthetic:
            folder = args.synthetic if len(seeds) == 1 and seed == 0 else os.path.join(args.synthetic, f"seed{seed}")
        synthetic, synth_s = load_or_synthesize(teacher, config, budget, seed, folder, args.device, progress)
        synth_total += synth_s
        real = real_training_set(teacher, args.ceiling_images, synthetic) if args.ceiling else None
        for w_bits, a_bits in bits_list:
            cfg = config.replace(w_bits=w_bits, a_bits=a_bits, seed=seed)
            start = time.perf_counter()
            images = calibration_images(synthetic, cfg)
            ptq_minmax = ptq(cfg.replace(**MINMAX), images)
            ptq_search = ptq(cfg.replace(**SEARCH), images)
            ptq_s = time.perf_counter() - start
            _log(f"seed {seed} W{w_bits}A{a_bits} PTQ top-1: min-max {ptq_minmax}, clip-searched {ptq_search}")
            ceiling = None
            if real is not None:
                # the same number of steps as SynQ takes on the synthetic set (not the same number of epochs)
                steps = budget.max_steps or math.ceil(len(synthetic) / cfg.train_batch_size) * math.ceil(
                    budget.num_epochs)
                same = dataclasses.replace(budget, eval_every=0, max_steps=steps)
                _, tracker, _ = fine_tune(teacher, cfg, real, same, args.device, progress, evaluate, None)
                ceiling = tracker.history[-1][1]
                _log(f"seed {seed} W{w_bits}A{a_bits} real-data ceiling ({args.ceiling_images} images): {ceiling}")
            for variant, changes in variants.items():
                start_v = time.perf_counter()
                model, tracker, diverged = fine_tune(teacher, cfg.replace(**changes), synthetic, budget, args.device,
                                                     progress, evaluate, args.output_dir)
                final = tracker.history[-1][1]
                seconds = ptq_s + time.perf_counter() - start_v
                for name in names:
                    best, best_step = tracker.best(name)
                    row: dict[str, Any] = {
                        "bits": f"W{w_bits}A{a_bits}", "data": name, "seed": seed, "fp_top1": fp[name],
                        "ptq_minmax_top1": ptq_minmax[name], "ptq_search_top1": ptq_search[name],
                        "synq_top1": final[name], "synq_best_top1": best, "synq_best_step": best_step,
                        "nonfinite": diverged, "seconds": round(seconds, 1)}
                    if ceiling is not None:
                        row["ceiling_top1"] = ceiling[name]
                    if variant is not None:
                        row["variant"] = variant
                    rows.append(row)
                    _log(json.dumps(row))
    total = time.perf_counter() - wall
    _log(f"wall time {total:.0f} s (synthesis {synth_total:.0f} s, evaluation {eval_s:.0f} s, "
         f"threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f})")
    return {"rows": rows, "summary": summarize(rows)}


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and min over seeds of every accuracy, per (bits, data, variant)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["bits"], r["data"], r.get("variant")), []).append(r)
    out = []
    for (bits, data, variant), rs in groups.items():
        entry: dict[str, Any] = {"bits": bits, "data": data, "seeds": [r["seed"] for r in rs],
                                 "any_nonfinite": any(r["nonfinite"] for r in rs)}
        if variant is not None:
            entry["variant"] = variant
        for key in ("ptq_minmax_top1", "ptq_search_top1", "synq_top1", "synq_best_top1", "ceiling_top1"):
            values = [r[key] for r in rs if r.get(key) is not None]
            if values:
                entry[f"{key}_mean"] = round(statistics.fmean(values), 2)
                entry[f"{key}_min"] = min(values)
        out.append(entry)
    return out


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every accuracy benchmark shares: test-set limit, threads, device, progress, JSON output."""
    parser.add_argument("--limit", type=int, default=None, help="evaluate on the first N test images only")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")


def run_and_print(args: argparse.Namespace, run_fn: Any, line: Any) -> int:
    """Run a benchmark with Trainer logs on stderr; print ``{"rows": ...}`` as JSON or ``line(row)`` per row."""
    if args.threads:
        torch.set_num_threads(args.threads)
    with contextlib.redirect_stdout(sys.stderr):  # Trainer logs go to stdout; keep it for the JSON
        result = run_fn(args)
    if args.json:
        print(json.dumps(result, indent=1), flush=True)
    else:
        for r in result["rows"]:
            print(line(r), flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="cpu",
                        help="cpu: <= 30 min on 2 cores; paper: 5,120 images, 1,000 iterations, 100 epochs (GPU); "
                             "authors: the authors' code's schedule and loss balance (GPU)")
    parser.add_argument("--bits", default="W4A4,W3A3", help="comma-separated bit-widths, e.g. W4A4,W3A3")
    parser.add_argument("--teacher", default=str(DEFAULT_TEACHER), help="teacher folder or model id")
    parser.add_argument("--data", default="lossless", help="test files: lossless, jpeg or both (comma-separated)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (synthesis, calibration, fine-tuning)")
    parser.add_argument("--synthetic", default=None,
                        help="folder to load the synthetic set(s) from, or to save them to (seedN/ per seed)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a SynQConfig field (repeatable), e.g. --set lpf_d0=12")
    parser.add_argument("--steps", type=int, default=None, help="override the budget's fine-tuning steps")
    parser.add_argument("--eval-every", type=int, default=None,
                        help="evaluate every N fine-tuning steps for the best-step accuracy (0: final only)")
    parser.add_argument("--ceiling", action="store_true",
                        help="also fine-tune on real training images (train-jpeg-q75.parquet): the real-data ceiling")
    parser.add_argument("--ceiling-images", type=int, default=512, help="real training images for --ceiling")
    parser.add_argument("--ablation", action="store_true",
                        help="SynQ with each component switched off in turn (same synthetic set and steps)")
    parser.add_argument("--variants", default=None,
                        help=f"with --ablation: comma-separated subset of {','.join(ABLATION)} (default: all)")
    parser.add_argument("--output-dir", default=None, help="fine-tuning checkpoints (default: a temporary folder)")
    add_run_arguments(parser)
    return parser


def _line(r: dict[str, Any]) -> str:
    extra = f"  [{r['variant']}]" if "variant" in r else ""
    return (f"{r['bits']} {r['data']:8s} seed {r['seed']}  float {r['fp_top1']:6.2f}  "
            f"PTQ min-max {r['ptq_minmax_top1']:6.2f}  PTQ clip {r['ptq_search_top1']:6.2f}  "
            f"SynQ {r['synq_top1']:6.2f} (best {r['synq_best_top1']})  ({r['seconds']:.0f} s){extra}")


def main(argv: list[str] | None = None) -> int:
    return run_and_print(build_parser().parse_args(argv), run, _line)

if __name__ == "__main__":
    sys.exit(main())
