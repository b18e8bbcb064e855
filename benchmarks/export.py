"""Packed checkpoints and ONNX QDQ export on the shared CIFAR-10 teachers: sizes, top-1, onnxruntime latency.

    python benchmarks/export.py --json export.json            # ResNet-20/56 and the ViT at W8A8 and W4A4
    python benchmarks/export.py --models cifar10-resnet20 --bits 8/8 --placements int8 --no-jpeg

Each teacher is calibrated by PTQ with the default SynQConfig ranges (searched) on real test images (rows
1017..1017+N of test-jpeg-q75.parquet, never the evaluated ones), once per ``deploy_placement``: ``off`` (the
paper's placement) and ``int8`` (the extra 8-bit quantizers for integer runtimes, and biases snapped to the int32
grid of onnxruntime's integer kernels; ReLU ResNets only);
``int8-symw`` is ``int8`` with symmetric weights (``weight_symmetric=True``; weights over 4 bits only): int8 weight
codes with zero point 0, the layout of onnxruntime's fast u8s8 conv kernels. Top-1 is on
the lossless first 1,017 test images, for the fake-quant model, for onnxruntime (CPU, default graph optimizations)
running the QDQ export, and for onnxruntime with graph optimizations off (the QDQ graph op by op: no integer
kernels); and on the 10,000 JPEG test images less the calibration rows (a lower-variance comparison), with the
per-image agreement of the predicted classes and the largest (and, on JPEG, mean) |logit difference| of
onnxruntime (fused) to the fake-quant model. Latency is onnxruntime on one thread, median of repeated runs,
float ONNX (the teacher) and QDQ ONNX timed alternately. Every op type of the graph onnxruntime optimized
(``SessionOptions.optimized_model_filepath``) is counted.
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
PLACEMENTS = ("off", "int8", "int8-symw")
INTEGER_OPS = ("QLinearConv", "QLinearAdd", "QLinearGlobalAveragePool", "QGemm", "QLinearMatMul", "MatMulInteger",
               "MatMulIntegerToFloat", "ConvInteger")
FLOAT_OPS = ("Conv", "FusedConv", "Gemm", "MatMul", "FusedMatMul", "Add", "Transpose", "QuantizeLinear",
             "DequantizeLinear")


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


def _paired_latency_ms(a, b, x: np.ndarray, repeats: int) -> tuple[float, float]:  # noqa: ANN001
    """Median ms of sessions ``a`` and ``b`` on ``x``, timed alternately (a shared machine's load hits both alike)."""
    for _ in range(3):
        a.run(None, {"pixel_values": x})
        b.run(None, {"pixel_values": x})
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for sess, out in ((a, times[0]), (b, times[1])):
            t0 = time.perf_counter()
            sess.run(None, {"pixel_values": x})
            out.append(time.perf_counter() - t0)
    return float(np.median(times[0]) * 1000), float(np.median(times[1]) * 1000)


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


class Teacher:
    """One shared teacher with its float export, calibration images and evaluation sets (shared by its rows)."""

    def __init__(self, name: str, work: Path, calib_n: int, jpeg: bool) -> None:
        from timm.models._hub import save_for_hf

        self.name, self.source = name, SHARED / "teachers" / name
        self.loaded = load_model(f"local-dir:{self.source}")
        dc = self.loaded.data_config
        jpeg_path = SHARED / "cifar10" / "test-jpeg-q75.parquet"
        self.calib, _ = _images(jpeg_path, 1017, 1017 + calib_n, dc)
        self.test_x, self.test_y = _images(SHARED / "cifar10" / "test-lossless-first1017.parquet", 0, 1017, dc)
        self.jpeg: tuple[torch.Tensor, np.ndarray] | None = None
        if jpeg:  # every JPEG test image except the calibration rows
            head_x, head_y = _images(jpeg_path, 0, 1017, dc)
            tail_x, tail_y = _images(jpeg_path, 1017 + calib_n, 10_000, dc)
            self.jpeg = torch.cat([head_x, tail_x]), np.concatenate([head_y, tail_y])
        self.float_dir = work / f"{name}-float"
        save_for_hf(self.loaded.model, str(self.float_dir), safe_serialization=True)
        self.onnx = export_onnx(self.loaded.model, work / f"{name}-float.onnx", input_size=dc["input_size"],
                                quantized=False)
        self.session = _session(self.onnx)


def _fake_quant_logits(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([model_logits(model, x[i:i + 256]) for i in range(0, len(x), 256)]).numpy()


def _top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return round(float((logits.argmax(1) == labels).mean() * 100), 2)


def _agree(a: np.ndarray, b: np.ndarray) -> float:
    return round(float((a.argmax(1) == b.argmax(1)).mean() * 100), 2)


def run_one(t: Teacher, bits: str, placement: str, work: Path, repeats: int) -> dict:
    import onnx

    w_bits, a_bits = (int(b) for b in bits.split("/"))
    dc = t.loaded.data_config
    config = SynQConfig(w_bits=w_bits, a_bits=a_bits, deploy_placement=placement.removesuffix("-symw"),
                        weight_symmetric=True if placement.endswith("-symw") else None)
    q = ptq(copy.deepcopy(t.loaded.model), config, t.calib, progress=False)
    tag = f"{t.name}-w{w_bits}a{a_bits}-{placement}"
    packed_dir = work / tag
    save_quantized(q, packed_dir, base_model=str(t.source), library="timm")
    q_onnx = export_onnx(q, work / f"{tag}.onnx", input_size=dc["input_size"])
    sq = _session(q_onnx, optimized=work / f"{tag}.opt.onnx")
    plain = _session(q_onnx, plain=True)
    ops = collections.Counter(n.op_type for n in onnx.load(str(work / f"{tag}.opt.onnx")).graph.node)
    fq = _fake_quant_logits(q, t.test_x)
    ort_q, ort_plain = _ort_logits(sq, t.test_x), _ort_logits(plain, t.test_x)
    row = {
        "model": t.name, "bits": f"W{w_bits}A{a_bits}", "deploy_placement": placement,
        "calibration_images": len(t.calib),
        "bytes": {
            "float_safetensors": (t.float_dir / "model.safetensors").stat().st_size,
            "float_folder": _bytes(t.float_dir), "packed_folder": _bytes(packed_dir),
            "onnx_float": t.onnx.stat().st_size, "onnx_qdq": q_onnx.stat().st_size,
        },
        "top1": {
            "fake_quant": _top1(fq, t.test_y),
            "onnxruntime_qdq": _top1(ort_q, t.test_y),
            "prediction_agreement": _agree(fq, ort_q),
            "max_abs_logit_diff": float(np.abs(ort_q - fq).max()),
            "onnxruntime_qdq_unfused": _top1(ort_plain, t.test_y),
            "unfused_max_abs_logit_diff": float(np.abs(ort_plain - fq).max()),
        },
        "optimized_graph_ops": dict(sorted(ops.items())),
        "fused_ops": {k: ops[k] for k in (*INTEGER_OPS, *FLOAT_OPS) if ops[k]},
        "latency_ms": {},
    }
    if t.jpeg is not None:
        jx, jy = t.jpeg
        jfq, jort = _fake_quant_logits(q, jx), _ort_logits(sq, jx)
        row["top1_jpeg"] = {
            "images": len(jy), "excluded_rows": f"1017-{1017 + len(t.calib) - 1} (calibration)",
            "fake_quant": _top1(jfq, jy), "onnxruntime_qdq": _top1(jort, jy),
            "prediction_agreement": _agree(jfq, jort),
            "max_abs_logit_diff": float(np.abs(jort - jfq).max()),
            "mean_abs_logit_diff": float(np.abs(jort - jfq).mean()),
        }
    for batch in (1, 64):
        xb = t.test_x[:batch].numpy()
        reps = repeats if batch == 64 else repeats * 5
        f_ms, q_ms = _paired_latency_ms(t.session, sq, xb, reps)
        row["latency_ms"][f"batch{batch}"] = {"float": round(f_ms, 3), "qdq": round(q_ms, 3),
                                              "speedup": round(f_ms / q_ms, 3)}
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--bits", nargs="+", default=list(BITS), metavar="W/A")
    p.add_argument("--placements", nargs="+", default=list(PLACEMENTS), choices=PLACEMENTS,
                   help="deploy_placement values to measure (int8: ReLU ResNets only; int8-symw: int8 with "
                        "symmetric weights, weights over 4 bits only)")
    p.add_argument("--calibration-images", type=int, default=256)
    p.add_argument("--repeats", type=int, default=10, help="timed runs at batch 64 (x5 at batch 1)")
    p.add_argument("--no-jpeg", dest="jpeg", action="store_false",
                   help="skip the top-1 comparison on the JPEG test set (10,000 images less the calibration rows)")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            teacher = Teacher(name, Path(tmp), args.calibration_images, args.jpeg)
            placements = [pl for pl in args.placements if pl == "off" or "vit" not in name]
            for placement in placements:
                for bits in args.bits:
                    if placement.endswith("-symw") and int(bits.split("/")[0]) <= 4:
                        continue  # <= 4-bit asymmetric codes are already exported as int8 with zero point 0
                    row = run_one(teacher, bits, placement, Path(tmp), args.repeats)
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr)
    print("| model | bits | placement | float safetensors | packed folder | ONNX float | ONNX QDQ | top-1 fake-quant "
          "| top-1 ORT QDQ | b1 float/QDQ ms (speedup) | b64 float/QDQ ms (speedup) | optimized graph |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        b, t, lat = r["bytes"], r["top1"], r["latency_ms"]
        ops = ", ".join(f"{k} {v}" for k, v in r["fused_ops"].items()) or "none"
        print(f"| {r['model']} | {r['bits']} | {r['deploy_placement']} | {b['float_safetensors']:,} "
              f"| {b['packed_folder']:,} | {b['onnx_float']:,} | {b['onnx_qdq']:,} | {t['fake_quant']:.2f} "
              f"| {t['onnxruntime_qdq']:.2f} "
              f"| {lat['batch1']['float']:.2f} / {lat['batch1']['qdq']:.2f} ({lat['batch1']['speedup']:.2f}x) "
              f"| {lat['batch64']['float']:.1f} / {lat['batch64']['qdq']:.1f} ({lat['batch64']['speedup']:.2f}x) "
              f"| {ops} |")
    if any("top1_jpeg" in r for r in rows):
        print("\n| model | bits | placement | JPEG images | top-1 fake-quant | top-1 ORT QDQ | same prediction (%) "
              "| max / mean abs logit diff |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            j = r.get("top1_jpeg")
            if j:
                print(f"| {r['model']} | {r['bits']} | {r['deploy_placement']} | {j['images']:,} | {j['fake_quant']:.2f} "
                      f"| {j['onnxruntime_qdq']:.2f} | {j['prediction_agreement']:.2f} "
                      f"| {j['max_abs_logit_diff']:.2g} / {j['mean_abs_logit_diff']:.2g} |")
    if args.json:
        args.json.write_text(json.dumps({"results": rows}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
