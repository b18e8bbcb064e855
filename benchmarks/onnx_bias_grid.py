"""Why onnxruntime's fused W4A4 graph disagrees with the fake-quant model: float noise, or QLinearConv's int32 bias?

    python benchmarks/onnx_bias_grid.py                       # ResNet-20 W4A4, paper placement, JPEG set
    python benchmarks/onnx_bias_grid.py --bits 8 --placement int8
    python benchmarks/onnx_bias_grid.py --bits 8 --placement int8 --codes 64   # per-quantizer code mismatches

On the JPEG test images less the calibration rows (as ``benchmarks/export.py``) it compares the predicted classes of
the fake-quant model with: itself on the input times (1 + 2^-23) (float noise), onnxruntime unfused (float ops
between Q/DQ), onnxruntime fused (integer kernels); then rounds every Conv bias of the export to the grid
QLinearConv stores it on (int32 in units of x_scale * w_scale) and compares unfused with fused again.

This found the cause of the fused/unfused disagreement (the paper placement's biases are off the grid), which
``deploy_placement="int8"`` now removes in the model itself: its calibration ends with
``synq_hf.quant.snap_biases_to_int32_grid``, so with ``--placement int8`` the export's biases are already on the
grid and the last line rounds nothing away.

``--codes N`` instead compares, on the first N of those images, the integer codes of every activation quantizer of
the fake-quant model with the outputs of the matching QuantizeLinear nodes (or of their low-bit Clip) in onnxruntime's fused
graph (made graph outputs): the share of codes that differ, layer by layer, shows where the two first part and how that spreads, and
how close to a rounding tie the differing values were.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import export as bench  # noqa: E402

from synq_hf import SynQConfig, ptq  # noqa: E402
from synq_hf.export import export_onnx  # noqa: E402


def grid_biases(src: Path, out: Path) -> int:
    """Copy ``src`` with every DQ-input, DQ-weight Conv's bias rounded to multiples of x_scale * w_scale."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    values = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    values.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in g.node if n.op_type == "Constant"})
    producer = {o: n for n in g.node for o in n.output}
    changed = 0
    for n in g.node:
        if n.op_type != "Conv" or len(n.input) < 3:
            continue
        x_dq, w_dq = producer.get(n.input[0]), producer.get(n.input[1])
        if not (x_dq is not None and w_dq is not None and x_dq.op_type == w_dq.op_type == "DequantizeLinear"):
            continue
        unit = float(values[x_dq.input[1]]) * values[w_dq.input[1]].astype(np.float64)
        bias = values[n.input[2]].astype(np.float64)
        g.initializer.append(numpy_helper.from_array((np.round(bias / unit) * unit).astype(np.float32),
                                                     n.input[2] + "_grid"))
        n.input[2] = n.input[2] + "_grid"
        changed += 1
    onnx.save(model, str(out))
    return changed


def code_mismatches(
    q: torch.nn.Module, path: Path, x: torch.Tensor, work: Path
) -> list[tuple[str, float, int, float | None]]:
    """(quantizer, % of its codes that differ, largest difference, largest distance of ``x / scale`` from a rounding
    tie among the differing codes) of the fake-quant model against onnxruntime fused, quantizers in the order the
    forward runs them (the export emits one QuantizeLinear each, in the same order)."""
    import onnx

    from synq_hf.model_info import model_logits
    from synq_hf.quant import ActQuantizer

    codes: list[tuple[str, np.ndarray, np.ndarray]] = []

    def record(name: str):  # noqa: ANN202
        def hook(module: ActQuantizer, args: tuple, out: torch.Tensor) -> None:
            scale, zero_point = module.qparams()
            steps = (args[0].float() / scale).numpy()  # the value QuantizeLinear rounds
            codes.append((name, (torch.round(out.float() / scale) + zero_point).to(torch.int32).numpy(), steps))
        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in q.named_modules() if isinstance(m, ActQuantizer)]
    with torch.no_grad():
        model_logits(q, x)
    for h in handles:
        h.remove()
    model = onnx.load(str(path))
    clip_of = {n.input[0]: n.output[0] for n in model.graph.node if n.op_type == "Clip"}  # low-bit: Q -> Clip -> DQ
    outputs = [clip_of.get(n.output[0], n.output[0]) for n in model.graph.node if n.op_type == "QuantizeLinear"]
    if len(outputs) != len(codes):
        raise SystemExit(f"{len(outputs)} QuantizeLinear nodes but {len(codes)} quantizer calls")
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(o) for o in outputs)
    onnx.save(model, str(work / "codes.onnx"))
    got = bench._session(work / "codes.onnx").run(outputs, {"pixel_values": x.numpy()})
    rows = []
    for (name, expected, steps), actual in zip(codes, got):
        diff = np.abs(expected - actual.astype(np.int32))
        tie = np.abs(steps - np.floor(steps) - 0.5)[diff > 0]
        rows.append((name, float((diff > 0).mean() * 100), int(diff.max()), float(tie.max()) if tie.size else None))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cifar10-resnet20", choices=bench.MODELS)
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--placement", default="off", choices=("off", "int8"))
    p.add_argument("--codes", type=int, metavar="N", help="compare every quantizer's codes on N images instead")
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        t = bench.Teacher(args.model, Path(tmp), 256, jpeg=True)
        config = SynQConfig(w_bits=args.bits, a_bits=args.bits, deploy_placement=args.placement)
        q = ptq(copy.deepcopy(t.loaded.model), config, t.calib, progress=False)
        x, y = t.jpeg
        if args.codes:
            path = export_onnx(q, Path(tmp) / "q.onnx", input_size=t.loaded.data_config["input_size"])
            print(f"{args.model} W{args.bits}A{args.bits} {args.placement}, first {args.codes} JPEG images: codes of "
                  "fake-quant vs onnxruntime fused")
            for name, share, largest, tie in code_mismatches(q, path, x[:args.codes], Path(tmp)):
                near = f"; x / scale at most {tie:.1e} from a rounding tie there" if tie is not None else ""
                print(f"  {name:40s} {share:8.4f} % differ, by up to {largest}{near}")
            return 0
        fq = bench._fake_quant_logits(q, x)
        fq_eps = bench._fake_quant_logits(q, x * (1 + 2**-23))
        path = export_onnx(q, Path(tmp) / "q.onnx", input_size=t.loaded.data_config["input_size"])
        fused = bench._ort_logits(bench._session(path), x)
        plain = bench._ort_logits(bench._session(path, plain=True), x)
        print(f"{args.model} W{args.bits}A{args.bits} {args.placement}, {len(y)} JPEG images; same prediction (%):")
        print(f"  fake-quant vs fake-quant(x * (1 + 2^-23)): {bench._agree(fq, fq_eps):.2f}")
        print(f"  fake-quant vs onnxruntime unfused:         {bench._agree(fq, plain):.2f}")
        print(f"  fake-quant vs onnxruntime fused:           {bench._agree(fq, fused):.2f}")
        print(f"  onnxruntime unfused vs fused:              {bench._agree(plain, fused):.2f}")
        grid = Path(tmp) / "grid.onnx"
        n = grid_biases(path, grid)
        fused_g = bench._ort_logits(bench._session(grid), x)
        plain_g = bench._ort_logits(bench._session(grid, plain=True), x)
        print(f"  unfused vs fused, {n} conv biases on the int32 grid: {bench._agree(plain_g, fused_g):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
