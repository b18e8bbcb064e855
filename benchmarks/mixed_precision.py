"""Mixed precision under a budget (issue 26) on the shared CIFAR-10 ResNet-20: one row per command, and the plot.

A row quantizes the teacher on one synthetic set (``--synthetic``, e.g. the lead's ``--budget cpu`` set) with the
``cifar10_accuracy.py`` schedule of ``--budget`` and measures top-1 on the lossless test file:

    python benchmarks/mixed_precision.py --json --synthetic SET --size-budget w3 --a-bits 4   # mixed at W3's size
    python benchmarks/mixed_precision.py --json --synthetic SET --avg-w-bits 2.5 --a-bits 4   # 2.5 bits per weight
    python benchmarks/mixed_precision.py --json --synthetic SET --bits W2A4                   # a uniform row
    python benchmarks/mixed_precision.py --plot ROWS.json ... --png benchmarks/figures/mixed_precision_frontier.png

Mixed rows allocate the bits with ``SynQQuantizer.allocate_bits`` (sensitivity on the first
``sensitivity_num_images`` synthetic images, exact allocation; its wall and CPU time are reported), then run
clip-searched PTQ and SynQ fine-tuning at the chosen bits exactly as ``cifar10_accuracy.py`` does for uniform
bits (same calibration images, steps, evaluation). They also save the fine-tuned model, compare the folder's
stored tensor bytes with the budget arithmetic, reload it (logits must be identical) and export it to ONNX
(top-1 of onnxruntime next to the model's). ``--plot`` draws size against top-1 for every row given (matplotlib:
``pip install 'synq-hf[benchmarks]'``), with the uniform rows of ``cifar10_accuracy.py`` JSON files too.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent


def _bench() -> Any:
    """``cifar10_accuracy.py`` (its budgets, calibration images and fine-tuning), loaded as a module."""
    spec = importlib.util.spec_from_file_location("cifar10_accuracy", HERE / "cifar10_accuracy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _test_set(bench: Any, data_config: dict, limit: int | None) -> tuple[torch.Tensor, np.ndarray]:
    from synq_hf import load_image_dataset
    from synq_hf.data import build_eval_transform, collate_images, detect_columns

    ds = load_image_dataset(f"parquet:{bench.DATA_FILES['lossless']}")
    if limit:
        ds = ds.select(range(limit))
    image_col, label_col = detect_columns(ds)
    x = collate_images(list(ds[image_col]), build_eval_transform(data_config))
    return x, np.asarray(ds[label_col])


def _logits(model: torch.nn.Module, x: torch.Tensor, device: str) -> torch.Tensor:
    from synq_hf.model_info import model_logits

    with torch.no_grad():
        return torch.cat([model_logits(model, x[i:i + 256].to(device)).cpu() for i in range(0, len(x), 256)])


def _top1(logits: np.ndarray | torch.Tensor, labels: np.ndarray) -> float:
    return round(float((np.asarray(logits).argmax(1) == labels).mean() * 100), 2)


def _checks(teacher: Any, model: torch.nn.Module, config: Any, plan: Any, x: torch.Tensor, y: np.ndarray,
            device: str) -> dict[str, Any]:
    """Save, compare stored bytes with the arithmetic, reload (identical logits), export to ONNX (top-1)."""
    import onnxruntime as ort

    from synq_hf import load_quantized, save_quantized
    from synq_hf.export import export_onnx
    from synq_hf.mixed import stored_tensor_bytes

    with tempfile.TemporaryDirectory(prefix="synq-mixed-") as tmp:
        folder = save_quantized(model.cpu().eval(), Path(tmp) / "model", base_model=str(teacher.model_id),
                                library="timm", config=config, extra={"mixed_precision": plan.to_record()})
        stored = stored_tensor_bytes(folder)
        files = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
        reloaded = load_quantized(folder).model
        expected = _logits(model, x, "cpu")
        identical = bool(torch.equal(_logits(reloaded, x, "cpu"), expected))
        path = export_onnx(model, Path(tmp) / "model.onnx", input_size=teacher.data_config["input_size"])
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        onnx_logits = np.concatenate([sess.run(None, {"pixel_values": x[i:i + 256].numpy()})[0]
                                      for i in range(0, len(x), 256)])
    model.to(device)
    return {"stored_tensor_bytes": stored, "arithmetic_bytes": plan.weight_bytes,
            "relative_difference": round(abs(stored - plan.weight_bytes) / plan.weight_bytes, 6),
            "safetensors_file_bytes": files, "reload_identical_logits": identical,
            "model_top1": _top1(expected, y), "onnx_top1": _top1(onnx_logits, y)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import datasets

    from synq_hf import SynQConfig, SynQQuantizer, load_model
    from synq_hf.mixed import SizeModel

    bench = _bench()
    budget = bench.BUDGETS[args.budget]
    if args.steps is not None:
        budget = dataclasses.replace(budget, max_steps=args.steps)
    budget = dataclasses.replace(budget, eval_every=args.eval_every if args.eval_every is not None else budget.eval_every)
    if args.images or args.iterations:
        budget = dataclasses.replace(budget, num_images=args.images or budget.num_images,
                                     iterations=args.iterations or budget.iterations,
                                     synthesis_batch_size=min(budget.synthesis_batch_size, args.images or 10**9))
    base = {"num_images": budget.num_images, "synthesis_iterations": budget.iterations,
            "synthesis_batch_size": budget.synthesis_batch_size, "train_batch_size": budget.train_batch_size,
            "max_steps": budget.max_steps, "num_epochs": budget.num_epochs, **budget.config,
            **bench.parse_overrides(args.set)}
    mixed = args.size_budget is not None or args.avg_w_bits is not None
    if mixed == (args.bits is not None):
        raise SystemExit("give --bits WxAy (a uniform row) or --size-budget/--avg-w-bits (a mixed row)")
    if mixed:
        fields = {"size_budget": args.size_budget, "avg_w_bits": args.avg_w_bits, "a_bits": args.a_bits,
                  "avg_a_bits": args.avg_a_bits}
        base.update({k: v for k, v in fields.items() if v is not None})
        if args.size_budget and args.size_budget.isdigit():
            base["size_budget"] = int(args.size_budget)
    else:
        ((w, a),) = bench.parse_bits(args.bits)
        base.update(w_bits=w, a_bits=a)
    teacher = load_model(args.teacher if ":" in args.teacher else f"local-dir:{args.teacher}")
    wall, cpu = time.perf_counter(), time.process_time()
    quantizer = SynQQuantizer(teacher, SynQConfig(**base), device=args.device)  # refuses a bad budget here
    if args.synthetic and (Path(args.synthetic) / "dataset_info.json").exists():
        synthetic = datasets.load_from_disk(args.synthetic)
    else:  # synthesized with the budget's schedule (and saved to --synthetic when given)
        synthetic, _ = bench.load_or_synthesize(teacher, quantizer.config, budget, quantizer.config.seed,
                                                args.synthetic, args.device, not args.no_progress)
    x, y = _test_set(bench, teacher.data_config, args.limit)
    row: dict[str, Any] = {"data": "lossless", "seed": quantizer.config.seed, "budget": args.budget,
                           "steps": budget.max_steps, "num_test_images": len(y)}
    plan = None
    if mixed:
        plan = quantizer.allocate_bits(synthetic, cache_dir=args.cache_dir, progress=not args.no_progress)
        row.update(kind="mixed", label=f"mixed {args.size_budget or f'{args.avg_w_bits} bits'} A{args.a_bits}",
                   allocation={"seconds": round(plan.seconds, 1), "cpu_seconds": round(plan.cpu_seconds, 1),
                               "num_images": plan.num_images},
                   budget_request={k: v for k, v in fields.items() if v is not None}, plan=plan.to_record())
        size_bytes, avg_bits = plan.weight_bytes, plan.avg_w_bits
        _log(plan.summary())
    else:
        size = SizeModel.of(teacher.model, quantizer.config)
        bits = {n: int(quantizer.config.w_bits) for n in size.numel}
        size_bytes, avg_bits = size.total_bytes(bits), float(quantizer.config.w_bits)
        row.update(kind="uniform", label=args.bits.upper())
    cfg = quantizer.config
    row.update(weight_bytes=size_bytes, avg_w_bits=round(avg_bits, 4),
               a_bits=None if cfg.layer_a_bits else int(cfg.a_bits))

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        return {"lossless": _top1(_logits(model, x, args.device), y)}

    images = bench.calibration_images(synthetic, cfg)
    from synq_hf.apply import calibrate, iter_batches, quantize_model

    student = quantize_model(copy.deepcopy(teacher.model), cfg.replace(**bench.SEARCH)).to(args.device)
    calibrate(student, iter_batches(images, cfg.calibration_batch_size), device=args.device, progress=False)
    row["ptq_search_top1"] = evaluate(student.eval())["lossless"]
    _log(f"{row['label']}: PTQ (searched) {row['ptq_search_top1']}")
    model, tracker, diverged = bench.fine_tune(teacher, cfg, synthetic, budget, args.device, not args.no_progress,
                                               evaluate, None)
    row["synq_top1"] = tracker.history[-1][1]["lossless"]
    row["synq_best_top1"], row["synq_best_step"] = tracker.best("lossless")
    row["nonfinite"] = diverged
    row["seconds"] = round(time.perf_counter() - wall, 1)
    row["cpu_seconds"] = round(time.process_time() - cpu, 1)
    if plan is not None and not args.no_checks:
        row["checks"] = _checks(teacher, model, cfg, plan, x, y, args.device)
    row["threads"] = torch.get_num_threads()
    row["load_average"] = round(os.getloadavg()[0], 1)
    _log(json.dumps({k: v for k, v in row.items() if k != "plan"}))
    return row


# -- the picture --------------------------------------------------------------------------------------------


def _rows_from(path: Path) -> list[dict[str, Any]]:
    """Rows of this script's JSON, or the uniform rows of a ``cifar10_accuracy.py`` JSON (lossless, no variant)."""
    if path.stat().st_size == 0:  # a row still running
        _log(f"skipping {path}: empty")
        return []
    data = json.loads(path.read_text())
    if isinstance(data, dict) and "kind" in data:
        return [data]
    out = []
    for r in data.get("rows", []) if isinstance(data, dict) else []:
        if r.get("data") == "lossless" and "variant" not in r:
            out.append({"kind": "uniform", "label": r["bits"], "ptq_search_top1": r["ptq_search_top1"],
                        "synq_top1": r["synq_top1"], "source": path.name})
    return out


def plot(paths: list[Path], png: Path, teacher: str) -> dict[str, Any]:
    """Size (KB stored) against lossless top-1: uniform PTQ, uniform SynQ, mixed + SynQ; activations noted."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'synq-hf[benchmarks]'") from None
    from synq_hf import SynQConfig, load_model
    from synq_hf.mixed import SizeModel

    rows = [r for p in paths for r in _rows_from(p)]
    size = SizeModel.of(load_model(teacher if ":" in teacher else f"local-dir:{teacher}").model, SynQConfig())
    for r in rows:
        if r.get("weight_bytes") is None:  # a uniform row of cifar10_accuracy.py: its size from its bits
            w = int(r["label"].upper()[1:].split("A")[0])
            r["weight_bytes"] = size.total_bytes({n: w for n in size.numel})
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=130)
    synq = [r["synq_top1"] for r in rows if r.get("synq_top1") is not None]
    low = max(min(synq) - 4, 0) if synq else 0  # a PTQ point far below (W2 PTQ) is drawn at the edge, value written
    styles = {("uniform", "ptq_search_top1"): ("uniform PTQ (searched ranges)", "s", "tab:gray", ":"),
              ("uniform", "synq_top1"): ("uniform SynQ", "o", "tab:blue", "--"),
              ("mixed", "ptq_search_top1"): ("mixed precision PTQ (searched ranges)", "d", "tab:orange", ":"),
              ("mixed", "synq_top1"): ("mixed precision + SynQ", "D", "tab:red", "-")}
    for (kind, key), (label, marker, color, line) in styles.items():
        for a4 in (True, False):
            pts = sorted((r["weight_bytes"] / 1000, r[key], r["label"]) for r in rows
                         if r["kind"] == kind and r.get(key) is not None and _a4(r) == a4)
            if not pts:
                continue
            xs, ys, names = zip(*pts)
            shown = [max(y, low + 0.4) for y in ys]
            ax.plot(xs, shown, marker=marker, color=color, linestyle=line if a4 else "none",
                    fillstyle="full" if a4 else "none", label=label + ("" if a4 else " (A3)"))
            for px, py, name in pts:
                if py < low:
                    ax.annotate(f"{py:.1f} (off scale)", (px, low + 0.4), textcoords="offset points", xytext=(4, 4),
                                fontsize=7, color=color)
                if key == "synq_top1":
                    ax.annotate(f"{name.replace('mixed ', '')}: {py:.2f}", (px, py), textcoords="offset points",
                                xytext=(-30, 7) if kind == "mixed" else (4, -10), fontsize=7, color=color)
    ax.set_xlabel("stored size (KB: packed weight codes + scales, biases, BatchNorm, ranges)")
    ax.set_ylabel("top-1 % (CIFAR-10 lossless 1,017 test images)")
    ax.set_title("ResNet-20, zero-shot: size vs accuracy (activations 4-bit unless marked A3)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_ylim(low, 93)
    sizes = [r["weight_bytes"] / 1000 for r in rows]
    ax.set_xlim(min(sizes) * 0.92, max(sizes) * 1.06)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(png)
    return {"png": str(png), "points": [{k: r.get(k) for k in ("kind", "label", "weight_bytes", "ptq_search_top1",
                                                               "synq_top1")} for r in rows]}


def _a4(row: dict[str, Any]) -> bool:
    return row.get("a_bits", 4) in (4, None) and not row["label"].upper().endswith("A3")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--synthetic", help="a saved synthetic set (datasets.load_from_disk), e.g. the lead's cpu set; "
                   "a folder without one gets the set synthesized with the budget's schedule")
    p.add_argument("--images", type=int, help="override the budget's synthetic image count")
    p.add_argument("--iterations", type=int, help="override the budget's synthesis iterations")
    p.add_argument("--budget", default="cpu", help="cifar10_accuracy.py budget (schedule): cpu, guard, smoke, ...")
    p.add_argument("--bits", help="a uniform row, e.g. W2A4")
    p.add_argument("--size-budget", help="a mixed row: size budget, e.g. w3, w4, 0.12MB or bytes")
    p.add_argument("--avg-w-bits", type=float, help="a mixed row: average bits per weight")
    p.add_argument("--a-bits", type=int, default=4, help="activation bits of a mixed row (default 4)")
    p.add_argument("--avg-a-bits", type=float, help="a mixed row: also mix activations (candidates 4, 8)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a SynQConfig field")
    p.add_argument("--steps", type=int, help="override the budget's fine-tuning steps")
    p.add_argument("--eval-every", type=int, help="evaluate every N steps for the best step (0: final only)")
    p.add_argument("--limit", type=int, help="evaluate on the first N lossless test images only")
    p.add_argument("--cache-dir", help="keep the sensitivity table here (resumes an interrupted allocation)")
    p.add_argument("--no-checks", action="store_true", help="skip the save / reload / ONNX checks of a mixed row")
    p.add_argument("--teacher", default=str(HERE.parent.parent / "shared" / "data" / "teachers" / "cifar10-resnet20"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the row as JSON on stdout")
    p.add_argument("--plot", nargs="+", type=Path, metavar="JSON", help="draw the frontier from these row files")
    p.add_argument("--png", type=Path, default=HERE / "figures" / "mixed_precision_frontier.png")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with contextlib.redirect_stdout(sys.stderr):
        result = plot(args.plot, args.png, args.teacher) if args.plot else run(args)
    if args.json or args.plot:
        print(json.dumps(result, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
