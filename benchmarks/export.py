"""Packed checkpoints and ONNX QDQ export on the shared CIFAR-10 teachers: sizes, top-1, onnxruntime latency.

    python benchmarks/export.py --json export.json            # ResNet-20/56 and the ViT at W8A8 and W4A4
    python benchmarks/export.py --models cifar10-resnet20 --bits 8/8

Each teacher is calibrated by PTQ with the default SynQConfig ranges (searched) on real test images (rows 1017.. of test-jpeg-q75.parquet, never
the evaluated ones); top-1 is on the lossless first 1,017 test images, for the fake-quant model and for
onnxruntime (CPU, default graph optimizations) running the QDQ export, and for onnxruntime with graph
optimizations off (the QDQ graph op by op: no integer kernels). Latency is onnxruntime on one thread,
median of repeated runs, float ONNX (the teacher) against QDQ ONNX. The fused operators are counted in the
graph onnxruntime optimized (``SessionOptions.optimized_model_filepath``).
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from synq_hf import SynQConfig, load_image_dataset, load_model, ptq, save_quantized  # noqa: E402
from synq_hf.data import build_eval_transform, collate_images  # noqa: E402
from synq_hf.export import export_onnx  # noqa: E402
from synq_hf.model_info import model_logits  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
if not SHARED.exists():
    SHARED = Path("/work/shared/data")
MODELS = ("cifar10-resnet20", "cifar10-resnet56", "cifar10-vit-tiny")
BITS = ("8/8", "4/4")
INTEGER_OPS = ("QLinearConv", "QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat", "ConvInteger", "QLinearAdd")


def _images(path: Path, start: int, stop: int, data_config: dict) -> tuple[torch.Tensor, np.ndarray]:
    ds = load_image_dataset(str(path)).select(range(start, stop))
    x = collate_images(list(ds["img"]), build_eval_transform(data_config))
    return x, np.asarray(ds["label"])


def _session(path: Path, optimized: Path | None = None, plain: bool = False):  # noqa: ANN202
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if plain:  # no fusion: onnxruntime runs the QDQ graph op by op, in float between Q/DQ pairs
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if optimized is not None:
        so.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _ort_logits(sess, x: torch.Tensor, batch: int = 128) -> np.ndarray:  # noqa: ANN001
    return np.concatenate([sess.run(None, {"pixel_values": x[i:i + batch].numpy()})[0] for i in range(0, len(x), batch)])


def _latency_ms(sess, x: np.ndarray, repeats: int) -> float:  # noqa: ANN001
    for _ in range(3):
        sess.run(None, {"pixel_values": x})
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, {"pixel_values": x})
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def run_one(name: str, bits: str, work: Path, calib_n: int, repeats: int) -> dict:
    import onnx
    from timm.models._hub import save_for_hf

    w_bits, a_bits = (int(b) for b in bits.split("/"))
    source = SHARED / "teachers" / name
    teacher = load_model(f"local-dir:{source}")
    dc = teacher.data_config
    calib, _ = _images(SHARED / "cifar10" / "test-jpeg-q75.parquet", 1017, 1017 + calib_n, dc)
    test_x, test_y = _images(SHARED / "cifar10" / "test-lossless-first1017.parquet", 0, 1017, dc)
    q = ptq(copy.deepcopy(teacher.model), SynQConfig(w_bits=w_bits, a_bits=a_bits), calib, progress=False)
    tag = f"{name}-w{w_bits}a{a_bits}"
    float_dir, packed_dir = work / f"{name}-float", work / tag
    save_for_hf(teacher.model, str(float_dir), safe_serialization=True)
    save_quantized(q, packed_dir, base_model=str(source), library="timm")
    f_onnx = export_onnx(teacher.model, work / f"{name}-float.onnx", input_size=dc["input_size"], quantized=False)
    q_onnx = export_onnx(q, work / f"{tag}.onnx", input_size=dc["input_size"])
    sf, sq = _session(f_onnx), _session(q_onnx, optimized=work / f"{tag}.opt.onnx")
    fused = collections.Counter(n.op_type for n in onnx.load(str(work / f"{tag}.opt.onnx")).graph.node)
    with torch.no_grad():
        fq = torch.cat([model_logits(q, test_x[i:i + 256]) for i in range(0, len(test_x), 256)]).numpy()
    ort_q = _ort_logits(sq, test_x)
    ort_plain = _ort_logits(_session(q_onnx, plain=True), test_x)
    row = {
        "model": name, "bits": f"W{w_bits}A{a_bits}", "calibration_images": calib_n,
        "bytes": {
            "float_safetensors": (float_dir / "model.safetensors").stat().st_size,
            "float_folder": _bytes(float_dir), "packed_folder": _bytes(packed_dir),
            "onnx_float": f_onnx.stat().st_size, "onnx_qdq": q_onnx.stat().st_size,
        },
        "top1": {
            "fake_quant": round(float((fq.argmax(1) == test_y).mean() * 100), 2),
            "onnxruntime_qdq": round(float((ort_q.argmax(1) == test_y).mean() * 100), 2),
            "prediction_agreement": round(float((fq.argmax(1) == ort_q.argmax(1)).mean() * 100), 2),
            "onnxruntime_qdq_unfused": round(float((ort_plain.argmax(1) == test_y).mean() * 100), 2),
            "unfused_max_abs_logit_diff": float(np.abs(ort_plain - fq).max()),
        },
        "fused_ops": {k: fused[k] for k in (*INTEGER_OPS, "Conv", "FusedConv", "MatMul", "FusedMatMul", "Gemm",
                                            "QuantizeLinear", "DequantizeLinear", "Transpose") if fused[k]},
        "latency_ms": {},
    }
    for batch in (1, 64):
        xb = test_x[:batch].numpy()
        reps = repeats if batch == 64 else repeats * 5
        f_ms, q_ms = _latency_ms(sf, xb, reps), _latency_ms(sq, xb, reps)
        row["latency_ms"][f"batch{batch}"] = {"float": round(f_ms, 3), "qdq": round(q_ms, 3),
                                              "speedup": round(f_ms / q_ms, 3)}
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--bits", nargs="+", default=list(BITS), metavar="W/A")
    p.add_argument("--calibration-images", type=int, default=256)
    p.add_argument("--repeats", type=int, default=10, help="timed runs at batch 64 (x5 at batch 1)")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            for bits in args.bits:
                row = run_one(name, bits, Path(tmp), args.calibration_images, args.repeats)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
    print("| model | bits | float safetensors | packed folder | ONNX float | ONNX QDQ | top-1 fake-quant | top-1 ORT QDQ "
          "| b1 float/QDQ ms | b64 float/QDQ ms (speedup) | integer kernels |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        b, t, lat = r["bytes"], r["top1"], r["latency_ms"]
        ints = ", ".join(f"{k} {v}" for k, v in r["fused_ops"].items() if k in INTEGER_OPS) or "none"
        print(f"| {r['model']} | {r['bits']} | {b['float_safetensors']:,} | {b['packed_folder']:,} | {b['onnx_float']:,} "
              f"| {b['onnx_qdq']:,} | {t['fake_quant']:.2f} | {t['onnxruntime_qdq']:.2f} "
              f"| {lat['batch1']['float']:.2f} / {lat['batch1']['qdq']:.2f} "
              f"| {lat['batch64']['float']:.1f} / {lat['batch64']['qdq']:.1f} ({lat['batch64']['speedup']:.2f}x) | {ints} |")
    if args.json:
        args.json.write_text(json.dumps({"results": rows}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
