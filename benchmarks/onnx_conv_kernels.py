"""onnxruntime CPU conv kernels at ResNet-20 sizes, batch 64, one thread: float Conv, ConvInteger, QLinearConv.

    python benchmarks/onnx_conv_kernels.py

Shows which integer path can beat float on this CPU: a conv whose output is not re-quantized (the second
conv of a ReLU-ResNet block feeds the float residual Add) can only run as ConvInteger (int32 out), the others
as QLinearConv. Median of 20 runs per kernel, 3x3 convs with C in = C out, stride 1.
"""

from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def _session(model):  # noqa: ANN001, ANN202
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _median_ms(sess, feeds: dict, runs: int = 20) -> float:  # noqa: ANN001
    for _ in range(3):
        sess.run(None, feeds)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def _model(node, x_type: int, y_type: int, shape: list, inits: list):  # noqa: ANN001, ANN202
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", x_type, shape)],
                              [helper.make_tensor_value_info("y", y_type, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def main() -> None:
    rng = np.random.default_rng(0)
    print("| C x H x W | float Conv ms | ConvInteger u8 x u8 ms | ConvInteger u8 x s8 ms | QLinearConv u8 x s8 ms |")
    print("|---|---|---|---|---|")
    for c, h in ((16, 32), (32, 16), (64, 8)):
        shape = [None, c, h, h]
        pads = {"pads": [1, 1, 1, 1]}
        w = rng.standard_normal((c, c, 3, 3)).astype(np.float32)
        x = np.abs(rng.standard_normal((64, c, h, h))).astype(np.float32)
        xq = rng.integers(0, 256, (64, c, h, h)).astype(np.uint8)
        row = [_median_ms(_session(_model(helper.make_node("Conv", ["x", "w"], ["y"], **pads), TensorProto.FLOAT,
                                          TensorProto.FLOAT, shape, [numpy_helper.from_array(w, "w")])), {"x": x})]
        for codes in (rng.integers(0, 256, w.shape).astype(np.uint8), rng.integers(-127, 128, w.shape).astype(np.int8)):
            node = helper.make_node("ConvInteger", ["x", "w"], ["y"], **pads)
            model = _model(node, TensorProto.UINT8, TensorProto.INT32, shape, [numpy_helper.from_array(codes, "w")])
            row.append(_median_ms(_session(model), {"x": xq}))
        scalars = [helper.make_tensor(n, t, [], [v]) for n, t, v in (
            ("xs", TensorProto.FLOAT, 0.1), ("xz", TensorProto.UINT8, 0), ("ws", TensorProto.FLOAT, 0.01),
            ("wz", TensorProto.INT8, 0), ("ys", TensorProto.FLOAT, 1.0), ("yz", TensorProto.UINT8, 0))]
        node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], **pads)
        codes = numpy_helper.from_array(rng.integers(-127, 128, w.shape).astype(np.int8), "w")
        row.append(_median_ms(_session(_model(node, TensorProto.UINT8, TensorProto.UINT8, shape, [codes, *scalars])),
                              {"x": xq}))
        print(f"| {c} x {h} x {h} | " + " | ".join(f"{v:.2f}" for v in row) + " |")


if __name__ == "__main__":
    main()
