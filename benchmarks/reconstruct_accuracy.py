"""Top-1 of zero-shot block reconstruction (Genie/BRECQ/QDrop setting), with and without SynQ on top.

Per bit-width and layer rule (``uniform``: every layer at the bit-width, the paper's; ``genie``: first and last
layer at 8 bits), on one synthetic set (``--synthetic DIR``: loaded, or synthesized and saved there):

* ``ptq_search_top1``: PTQ with the searched ranges, calibrated on the images reconstruction starts from;
* ``recon_top1``: reconstruction (``method="reconstruct"``) on the raw synthetic images;
* ``recon_synq_both_top1`` (variant ``recon_synq_both``, a CNN's default): reconstruction + SynQ on each image raw
  and low-pass filtered, with SynQ's output terms; ``recon_synq`` the same on the filtered images only,
  ``recon_synq_raw`` on the raw ones only (a ViT's default), ``recon_lpf`` plain reconstruction on the filtered ones;
* ``ceiling_top1`` (``--ceiling``): the same reconstruction on N real *training* images (``train-jpeg-q75.parquet``,
  never used by the zero-shot path).

Each row also holds the wall seconds of calibration + reconstruction and the per-unit seconds.

    python benchmarks/reconstruct_accuracy.py --json --synthetic /work/cache/syn/r20-cpu-seed0      # cpu budget
    python benchmarks/reconstruct_accuracy.py --json --bits W3A3 --rules uniform --variants recon --budget guard
    python benchmarks/reconstruct_accuracy.py --json --teacher ../shared/data/teachers/cifar10-vit-tiny \\
        --budget vit-cpu --bits W4A4 --synthetic SETS/seed0
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cifar10_accuracy as base  # noqa: E402
import torch  # noqa: E402

from synq_hf import SynQConfig, SynQQuantizer, evaluate_model, load_image_dataset, load_model  # noqa: E402
from synq_hf.apply import ptq  # noqa: E402
from synq_hf.config import reconstruction_image_copies  # noqa: E402
from synq_hf.lowpass import low_pass_filter  # noqa: E402
from synq_hf.reconstruction import reconstruct_model  # noqa: E402
from synq_hf.reconstruction.api import reconstruction_images  # noqa: E402


@dataclass(frozen=True)
class Budget:
    """Synthetic set and reconstruction schedule of one budget."""

    num_images: int
    iterations: int  # synthesis iterations
    synthesis_batch_size: int
    config: dict[str, Any] = field(default_factory=dict)
    eval_limit: int | None = None


SHORT_SCHEDULE_LRS = {"reconstruct_lr": 1e-2, "reconstruct_lr_weight_scale": 1e-3, "reconstruct_lr_act_scale": 4e-4}
"""Ten times Genie's learning rates (tuned for 20,000 steps per unit), for the 1,000-step budgets below."""

BUDGETS: dict[str, Budget] = {
    # <= 30 min on 2 cores with synthesis (the shared 512 x 200 set): 1,000 steps per unit, batch 32
    "cpu": Budget(512, 200, 256, {"reconstruct_iterations": 1000, "reconstruct_batch_size": 32,
                                  "reconstruct_num_images": 512, "reconstruct_synq_steps": 300, **SHORT_SCHEDULE_LRS}),
    # the CI guard (tests/integration/test_reconstruct_benchmark.py): a few CPU minutes
    "guard": Budget(256, 100, 256, {"reconstruct_iterations": 150, "reconstruct_batch_size": 32,
                                    "reconstruct_num_images": 256, "calibration_num_images": 256}, eval_limit=512),
    # the shared ViT: PSAQ-ViT's 32 images x 1,000 iterations (BENCHMARKS.md ViT), 1,000 steps per unit
    "vit-cpu": Budget(32, 1000, 32, {"reconstruct_iterations": 1000, "reconstruct_batch_size": 32,
                                     "reconstruct_num_images": 32, "reconstruct_synq_steps": 100,
                                     "lpf_d0": 8.0, "tau": 0.7, **SHORT_SCHEDULE_LRS}),
    # the same with PSAQ-ViT's 32 images x 4 (the issue's upper end, 128): the 32-image fit overfits its images
    "vit-cpu-128": Budget(128, 1000, 32, {"reconstruct_iterations": 1000, "reconstruct_batch_size": 32,
                                          "reconstruct_num_images": 128, "reconstruct_synq_steps": 100,
                                          "lpf_d0": 8.0, "tau": 0.7, **SHORT_SCHEDULE_LRS}),
    # seconds: the row format only
    "smoke": Budget(16, 2, 16, {"reconstruct_iterations": 2, "reconstruct_batch_size": 8, "reconstruct_num_images": 16,
                                "calibration_num_images": 16, "calibration_batch_size": 8,
                                "reconstruct_synq_steps": 2}, eval_limit=64),
}
VARIANTS = {
    "recon": {"reconstruct_synq": False},
    "recon_synq": {"reconstruct_synq": True, "reconstruct_synq_images": "filtered"},
    # ablations of SynQ on top: only its filter (plain reconstruction on the filtered images), only its terms
    # (reconstruct_synq on the raw images)
    "recon_lpf": {"reconstruct_synq": False},
    "recon_synq_raw": {"reconstruct_synq": True, "lpf_d0": 0.0},
    # SynQ on top with each image twice, raw and filtered
    "recon_synq_both": {"reconstruct_synq": True, "reconstruct_synq_images": "both"},
}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark described by ``args``; return ``{"rows": [...]}``."""
    budget = BUDGETS[args.budget]
    limit = args.limit if args.limit is not None else budget.eval_limit
    names = [d.strip() for d in args.data.split(",") if d.strip()]
    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        if v not in VARIANTS:
            raise SystemExit(f"--variants are {sorted(VARIANTS)}, got {v!r}")
    teacher = load_model(args.teacher if ":" in args.teacher else f"local-dir:{args.teacher}")
    config = SynQConfig(num_images=budget.num_images, synthesis_iterations=budget.iterations,
                        synthesis_batch_size=budget.synthesis_batch_size, method="reconstruct",
                        **{**budget.config, **base.parse_overrides(args.set)})
    config = SynQQuantizer(teacher, config, device=args.device).config  # resolved for this teacher
    test_sets = {n: load_image_dataset(f"parquet:{base.DATA_FILES[n]}") for n in names}
    wall = time.perf_counter()

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        return {n: round(evaluate_model(model.eval(), d, teacher.data_config, device=args.device, limit=limit,
                                        progress=False)["top1"], 2) for n, d in test_sets.items()}

    fp = evaluate(teacher.model)
    base._log(f"float top-1: {fp}")
    budget_for_synthesis = base.Budget(num_images=budget.num_images, iterations=budget.iterations,
                                       synthesis_batch_size=budget.synthesis_batch_size, train_batch_size=1,
                                       max_steps=1)
    synthetic, synth_s = base.load_or_synthesize(teacher, config, budget_for_synthesis, args.seed, args.synthetic,
                                                 args.device, not args.no_progress)
    raw = synthetic.with_format("torch")[:]
    sets = {} if args.ceiling_only else {"synthetic": (raw["pixel_values"].float().to(args.device),
                                                        raw["label"].to(args.device))}
    if args.ceiling or args.ceiling_only:
        real = base.real_training_set(teacher, args.ceiling_images, synthetic).with_format("torch")[:]
        sets["real"] = (real["pixel_values"].float().to(args.device), real["label"].to(args.device))
    rows: list[dict[str, Any]] = []
    for w_bits, a_bits in base.parse_bits(args.bits):
        for rule in rules:
            for variant in variants:
                for source, (images, labels) in sets.items():
                    if source == "real" and variant != "recon":
                        continue  # the ceiling is plain reconstruction on real images
                    n = len(images) if source == "real" else config.reconstruct_num_images
                    cfg = config.replace(w_bits=w_bits, a_bits=a_bits, layer_rule=rule, seed=args.seed,
                                         reconstruct_num_images=n, calibration_num_images=min(
                                             n, config.calibration_num_images), **VARIANTS[variant])
                    start = time.perf_counter()
                    raw_images = images
                    if variant == "recon_lpf":
                        images = low_pass_filter(images, config.lpf_d0)
                    starts_from = reconstruction_images(images, cfg)  # "both": the raw ones, as calibration
                    starts_from = starts_from[: len(starts_from) // reconstruction_image_copies(cfg)[1]]
                    ptq_model = ptq(teacher.model, cfg, starts_from, progress=False, device=args.device)
                    ptq_top1 = evaluate(ptq_model)
                    del ptq_model
                    work = os.path.join(args.work_dir, f"W{w_bits}A{a_bits}-{rule}-{variant}-{source}") \
                        if args.work_dir else None
                    model, report = reconstruct_model(teacher.model, images, cfg, labels=labels, work_dir=work,
                                                      progress=not args.no_progress)
                    seconds = time.perf_counter() - start
                    top1 = evaluate(model)
                    fit = synthetic_fit(teacher.model, model, raw_images[: n], args.device)  # always the raw ones
                    exported = None
                    if args.export and source == "synthetic":
                        exported = export_check(teacher, model, Path(args.export) / f"W{w_bits}A{a_bits}-{rule}-"
                                                f"{variant}", limit)
                        base._log(json.dumps(exported))
                    for name in names:
                        row = {"bits": f"W{w_bits}A{a_bits}", "rule": rule, "variant": variant,
                               "images": source, "num_images": n, "data": name, "seed": args.seed,
                               "fp_top1": fp[name], "ptq_search_top1": ptq_top1[name],
                               ("ceiling_top1" if source == "real" else f"{variant}_top1"): top1[name],
                               "iterations_per_unit": cfg.reconstruct_iterations,
                               "batch_size": cfg.reconstruct_batch_size, "seconds": round(seconds, 1),
                               "unit_seconds": {u["unit"]: u["seconds"] for u in report.units},
                               "unit_cpu_seconds": {u["unit"]: u.get("cpu_seconds") for u in report.units},
                               "unit_losses": {u["unit"]: u.get("final_losses") for u in report.units},
                               "reconstruct_cpu_seconds": round(sum(u.get("cpu_seconds", 0) for u in report.units), 1),
                               "undecided_rounding": max(u.get("undecided_rounding", 0.0) for u in report.units),
                               **fit}
                        if exported is not None:
                            row["export"] = exported
                        rows.append(row)
                        base._log(json.dumps(row))
    total = time.perf_counter() - wall
    base._log(f"wall time {total:.0f} s (synthesis {synth_s:.0f} s, threads {torch.get_num_threads()}, "
              f"load average {os.getloadavg()[0]:.1f})")
    return {"rows": rows, "synthesis_seconds": round(synth_s, 1), "wall_seconds": round(total, 1),
            "config": {k: v for k, v in config.to_dict().items() if k.startswith(("reconstruct", "lambda", "tau",
                                                                                    "lpf", "kd_"))}}


@torch.no_grad()
def synthetic_fit(teacher: torch.nn.Module, model: torch.nn.Module, images: torch.Tensor, device: str
                  ) -> dict[str, float]:
    """How well the quantized model matches the float one on the (raw) images it was made from: mean KL and
    top-1 agreement. A zero-shot criterion (no test data) to compare settings by."""
    from synq_hf.model_info import model_logits

    t = torch.cat([model_logits(teacher.eval(), images[i:i + 128].to(device)) for i in range(0, len(images), 128)])
    s = torch.cat([model_logits(model.eval(), images[i:i + 128].to(device)) for i in range(0, len(images), 128)])
    kl = torch.nn.functional.kl_div(s.log_softmax(-1), t.log_softmax(-1), reduction="batchmean", log_target=True)
    return {"fit_kl": round(float(kl), 5), "fit_agreement": round(float((s.argmax(-1) == t.argmax(-1)).float().mean()), 4)}


def export_check(teacher: Any, model: torch.nn.Module, folder: Path, limit: int | None) -> dict[str, Any]:
    """Save the reconstructed model (packed), reload it, export it to ONNX: sizes, reload and onnxruntime agreement
    on the lossless test images."""
    import numpy as np
    from timm.models import save_for_hf

    from synq_hf import save_quantized
    from synq_hf.data import build_eval_transform, collate_images
    from synq_hf.export import export_onnx
    from synq_hf.model_info import model_logits

    folder.mkdir(parents=True, exist_ok=True)
    save_for_hf(teacher.model, str(folder / "float"), safe_serialization=True)
    save_quantized(model, folder / "packed", base_model=str(base.DEFAULT_TEACHER), library="timm")
    reloaded = load_model(str(folder / "packed")).model.eval()
    data = load_image_dataset(f"parquet:{base.DATA_FILES['lossless']}")
    data = data.select(range(min(limit or len(data), len(data))))
    x = collate_images(list(data["img"]), build_eval_transform(teacher.data_config))
    labels = np.asarray(data["label"])
    with torch.no_grad():
        fq = torch.cat([model_logits(model.eval(), x[i:i + 256]) for i in range(0, len(x), 256)])
        again = torch.cat([model_logits(reloaded, x[i:i + 256]) for i in range(0, len(x), 256)])
    onnx_path = export_onnx(model, folder / "model.onnx", input_size=teacher.data_config["input_size"])
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    ort_logits = np.concatenate([sess.run(None, {"pixel_values": x[i:i + 128].numpy()})[0]
                                 for i in range(0, len(x), 128)])

    def size(path: Path) -> int:
        return sum(p.stat().st_size for p in path.iterdir() if p.is_file())

    fq_np = fq.numpy()
    return {
        "reload_identical_logits": bool(torch.equal(fq, again)),
        "bytes": {"float_safetensors": (folder / "float" / "model.safetensors").stat().st_size,
                  "packed_folder": size(folder / "packed"), "onnx_qdq": onnx_path.stat().st_size},
        "packed_over_float": round(size(folder / "packed") / (folder / "float" / "model.safetensors").stat().st_size,
                                   4),
        "top1_fake_quant": round(float((fq_np.argmax(1) == labels).mean() * 100), 2),
        "top1_onnxruntime": round(float((ort_logits.argmax(1) == labels).mean() * 100), 2),
        "prediction_agreement": round(float((fq_np.argmax(1) == ort_logits.argmax(1)).mean() * 100), 2),
        "max_abs_logit_diff": float(np.abs(ort_logits - fq_np).max()),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    parser.add_argument("--bits", default="W4A4,W3A3,W2A4", help="comma-separated bit-widths, e.g. W4A4,W3A3")
    parser.add_argument("--rules", default="uniform,genie", help="layer rules: uniform, genie (comma-separated)")
    parser.add_argument("--variants", default="recon,recon_synq_both", help=f"comma-separated subset of {sorted(VARIANTS)}")
    parser.add_argument("--teacher", default=str(base.DEFAULT_TEACHER), help="teacher folder or model id")
    parser.add_argument("--data", default="lossless", help="test files: lossless, jpeg or both (comma-separated)")
    parser.add_argument("--seed", type=int, default=0, help="seed of synthesis and reconstruction")
    parser.add_argument("--synthetic", default=None, help="synthetic set folder to load, or to save a new one to")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a SynQConfig field")
    parser.add_argument("--ceiling", action="store_true", help="also reconstruct on real training images")
    parser.add_argument("--ceiling-only", action="store_true", help="only the real-data ceiling rows")
    parser.add_argument("--ceiling-images", type=int, default=1024, help="real training images for --ceiling")
    parser.add_argument("--work-dir", default=None, help="keep per-unit checkpoints here (resumable)")
    parser.add_argument("--export", default=None, metavar="DIR",
                        help="save each reconstructed model (packed) there, reload it and export it to ONNX: sizes, "
                        "identical logits, onnxruntime top-1 (use --set deploy_placement=int8 for integer kernels)")
    base.add_run_arguments(parser)
    return parser


def _line(r: dict) -> str:
    value = r.get("ceiling_top1", r.get(f"{r['variant']}_top1"))
    return (f"{r['bits']} {r['rule']:7s} {r['variant']:10s} {r['images']:9s} {r['data']:8s} "
            f"float {r['fp_top1']:6.2f}  PTQ {r['ptq_search_top1']:6.2f}  -> {value:6.2f}  ({r['seconds']:.0f} s)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.no_progress:  # one line per finished unit instead of the progress bars
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
        logging.getLogger("synq_hf.reconstruction").setLevel(logging.INFO)
    return base.run_and_print(args, run, _line)

if __name__ == "__main__":
    sys.exit(main())
