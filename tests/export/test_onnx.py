"""ONNX QDQ export: onnx.checker, dynamic batch, exact low-bit emulation, integer kernels, CLI, missing extra."""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from synq_hf import SynQConfig
from synq_hf.apply import ptq
from synq_hf.cli import main
from synq_hf.errors import SynQError
from synq_hf.export import export_onnx
from synq_hf.hub.checkpoint import save_quantized
from synq_hf.model_info import model_logits

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def _session(path: Path, optimize: bool, saved: Path | None = None):  # noqa: ANN202
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if saved is not None:
        so.optimized_model_filepath = str(saved)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _timm_q(name: str, size: int, config: SynQConfig) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10).eval()
    if hasattr(model, "cls_token"):
        # timm initializes the class token at std 1e-6: the first LayerNorm then magnifies its residual stream's
        # quantization noise so much that a 1e-7 relative input change moves this random model's logits by 15 %
        # (any two float runtimes disagree on it). A trained ViT's class token is O(1); so is this one.
        with torch.no_grad():
            model.cls_token.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(2))
    x = torch.randn(8, 3, size, size, generator=torch.Generator().manual_seed(1))
    return ptq(model, config, x, progress=False), x


def _hf_q(config: SynQConfig) -> tuple[torch.nn.Module, torch.Tensor]:
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                                num_attention_heads=2, intermediate_size=64, num_labels=10)).eval()
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return ptq(model, config, x, progress=False), x


CASES = {
    "resnet-w8a8": lambda: _timm_q("test_resnet", 32, SynQConfig(w_bits=8, a_bits=8)),
    "resnet-w4a4": lambda: _timm_q("test_resnet", 32, SynQConfig(w_bits=4, a_bits=4)),
    "resnet-w3a3": lambda: _timm_q("test_resnet", 32, SynQConfig(w_bits=3, a_bits=3)),
    "timm-vit-w8a8": lambda: _timm_q("test_vit", 160, SynQConfig(w_bits=8, a_bits=8)),
    "timm-vit-w8a8-minmax": lambda: _timm_q("test_vit", 160, SynQConfig(w_bits=8, a_bits=8, act_range_init="minmax",
                                                                        weight_range_init="minmax")),
    "timm-vit-w4a4": lambda: _timm_q("test_vit", 160, SynQConfig(w_bits=4, a_bits=4)),
    "hf-vit-w8a8": lambda: _hf_q(SynQConfig(w_bits=8, a_bits=8)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_qdq_graph_reproduces_the_fake_quant_model(case: str, tmp_path: Path, one_thread: None) -> None:
    q, x = CASES[case]()
    path = export_onnx(q, tmp_path / "m.onnx", input_size=tuple(x.shape[1:]))
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # the temporary sibling is gone
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "BatchNormalization" not in ops
    assert ("Clip" in ops) == ("w8a8" not in case)  # low-bit codes are clipped on the 8-bit container
    with torch.no_grad():
        expected = model_logits(q, x).numpy()
    # the plain graph computes the fake-quant model up to float rounding (measured: at most 3e-7 of the largest
    # logit in every case, BENCHMARKS.md "Method fidelity"), at any batch size
    plain = _session(path, optimize=False)
    for n in (1, 8):
        got = plain.run(None, {"pixel_values": x[:n].numpy()})[0]
        assert got.shape == (n, 10)
        np.testing.assert_allclose(got, expected[:n], atol=1e-4 * np.abs(expected).max(), rtol=0)
    # onnxruntime's fused integer kernels run it: measured identical to the plain graph here; another CPU's integer
    # kernels may requantize an activation one step apart, so allow 1% of the largest logit and one class of 8
    fused = _session(path, optimize=True, saved=tmp_path / "opt.onnx")
    got = fused.run(None, {"pixel_values": x.numpy()})[0]
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 7 / 8
    np.testing.assert_allclose(got, expected, atol=1e-2 * np.abs(expected).max(), rtol=0)
    fused_ops = {n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node}
    integer = {"QLinearConv", "QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat", "ConvInteger"}
    assert fused_ops & integer, fused_ops


def test_activation_rounding_is_onnx_quantize_linear(tmp_path: Path) -> None:
    """Ties x / scale = k + 1/2 (common for products of quantized values) round like QuantizeLinear, half to even."""
    from onnx import TensorProto, helper

    from synq_hf.quant import ActQuantizer

    q = ActQuantizer(8)
    q.observe(torch.tensor([-0.1251, 0.1078]))  # scale 0.00091322, zero point 137 (a searched score range)
    scale, zero_point = (np.float32(v) for v in q.qparams())
    zero_point = int(zero_point)
    k = np.arange(-zero_point, 255 - zero_point, dtype=np.float32) + np.float32(0.5)
    x = np.concatenate([k * scale, np.random.default_rng(0).normal(0, 0.05, 4096).astype(np.float32)])
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
        "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [float(scale)]), helper.make_tensor("z", TensorProto.UINT8, [], [zero_point])],
    )
    (tmp_path / "qdq.onnx").write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    expected = _session(tmp_path / "qdq.onnx", optimize=False).run(None, {"x": x})[0]
    with torch.no_grad():
        got = q(torch.from_numpy(x)).numpy()
    # torch's own fused kernel multiplies by 1 / scale and lands on the other side of some of these ties
    fused = torch.fake_quantize_per_tensor_affine(torch.from_numpy(x), float(scale), zero_point, 0, 255).numpy()
    assert not np.array_equal(fused, expected)
    np.testing.assert_array_equal(got, expected)


def test_low_bit_activations_are_exact_on_the_container(tmp_path: Path, one_thread: None) -> None:
    q, x = CASES["resnet-w4a4"]()
    path = export_onnx(q, tmp_path / "m.onnx", input_size=(3, 32, 32))
    with torch.no_grad():
        expected = model_logits(q, x).numpy()
    got = _session(path, optimize=False).run(None, {"pixel_values": x.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_float_export_has_no_quantizers(tmp_path: Path, one_thread: None) -> None:
    q, x = CASES["resnet-w8a8"]()
    path = export_onnx(q, tmp_path / "f.onnx", input_size=(3, 32, 32), quantized=False)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert not ops & {"QuantizeLinear", "DequantizeLinear"}


def test_missing_onnx_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    q, _ = CASES["resnet-w4a4"]()
    with pytest.raises(SynQError, match=r"pip install 'synq-hf\[export\]'"):
        export_onnx(q, tmp_path / "m.onnx", input_size=(3, 32, 32))
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "synq-hf[export]" in err
    assert not (tmp_path / "m.onnx").exists()


def test_cli_exports_a_saved_folder(tmp_path: Path, capsys, one_thread: None) -> None:  # noqa: ANN001
    q, x = _timm_q("test_resnet", 160, SynQConfig(w_bits=4, a_bits=4))  # the size its pretrained_cfg names
    x = x[:2]
    save_quantized(q, tmp_path / "q", base_model="test_resnet", library="timm")
    out = tmp_path / "onnx" / "q.onnx"
    out.parent.mkdir()  # export never creates missing folders (tests/cli/test_cli_export.py)
    assert main(["export", str(tmp_path / "q"), "--format", "onnx", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    with torch.no_grad():
        expected = model_logits(q, x).numpy()
    got = _session(out, optimize=False).run(None, {"pixel_values": x.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_cli_refuses_a_float_model(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    folder = tmp_path / "float"
    from timm.models._hub import save_for_hf

    save_for_hf(timm.create_model("test_resnet", pretrained=False, num_classes=10), str(folder))
    assert main(["export", str(folder), "--out", str(tmp_path / "m.onnx")]) == 1
    assert "float model" in capsys.readouterr().err


def _cifar_resnet_q(config: SynQConfig) -> tuple[torch.nn.Module, torch.Tensor]:
    from _synq_tiny import tiny_cifar_resnet

    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return ptq(tiny_cifar_resnet(), config, x, progress=False), x


@pytest.mark.parametrize(("case", "warned"), [("off", True), ("int8", False), ("vit", False), ("bn-cnn", False)])
def test_export_warns_once_when_the_deploy_placement_was_not_used(case: str, warned: bool, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture,
                                                                  one_thread: None) -> None:
    """A ReLU ResNet quantized with the paper's placement exports with one warning naming deploy_placement='int8';
    a deploy-placed ResNet and families that offer no deploy placement (ViT, other CNNs) export silently."""
    build = {
        "off": lambda: _cifar_resnet_q(SynQConfig(w_bits=4, a_bits=4)),
        "int8": lambda: _cifar_resnet_q(SynQConfig(w_bits=4, a_bits=4, deploy_placement="int8")),
        "vit": CASES["hf-vit-w8a8"],
        "bn-cnn": CASES["resnet-w4a4"],
    }
    q, _ = build[case]()
    with caplog.at_level("WARNING", logger="synq_hf.export.onnx"):
        export_onnx(q, tmp_path / "m.onnx", input_size=(3, 32, 32))
    messages = [r.getMessage() for r in caplog.records if r.name == "synq_hf.export.onnx"]
    assert len(messages) == int(warned), messages
    assert all("deploy_placement='int8'" in m and "\n" not in m for m in messages)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("placement", ["off", "int8"])
def test_batchnorm_is_folded_on_the_export_copy(placement: str, tmp_path: Path, one_thread: None) -> None:
    """Each BatchNorm after a quantized conv is folded into that conv of the export copy before torch.onnx.export
    (some gammas negative; with deploy_placement='int8' some BatchNorms carry an output quantizer): the graph has
    no BatchNormalization, one QuantizeLinear per activation quantizer, and the model passed in is not modified."""
    from _synq_tiny import tiny_cifar_resnet, trained_batchnorm

    from synq_hf.apply import act_quantizers

    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    q = ptq(trained_batchnorm(tiny_cifar_resnet()), SynQConfig(w_bits=4, a_bits=4, deploy_placement=placement), x,
            progress=False)
    state, types = _state(q), {n: type(m) for n, m in q.named_modules()}
    path = export_onnx(q, tmp_path / "m.onnx", input_size=(3, 32, 32))
    assert state.keys() == q.state_dict().keys()
    assert all(torch.equal(v, q.state_dict()[k]) for k, v in state.items())
    assert {n: type(m) for n, m in q.named_modules()} == types  # its BatchNorms and quantizers are still there
    ops = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    assert not ops["BatchNormalization"] and not ops["Identity"], ops
    assert ops["Conv"] == sum(isinstance(m, torch.nn.Conv2d) for m in q.modules())
    assert ops["QuantizeLinear"] == len(act_quantizers(q)), ops
    with torch.no_grad():
        expected = model_logits(q, x).numpy()
    got = _session(path, optimize=False).run(None, {"pixel_values": x.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max(), rtol=0)


class _UnfoldableBatchNorms(torch.nn.Module):
    """Two BatchNorms no conv can absorb: one reads a conv output that the residual Add reads too, one an Add."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8)
        self.conv2, self.bn2 = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8)
        self.bn3 = torch.nn.BatchNorm2d(8)
        self.relu, self.fc = torch.nn.ReLU(), torch.nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        y = self.conv2(x)
        x = self.relu(self.bn2(y) + y)
        x = self.relu(self.bn3(x + x))
        return self.fc(x.mean((2, 3)))


def test_a_batchnorm_that_cannot_be_folded_stays(tmp_path: Path, one_thread: None) -> None:
    from _synq_tiny import trained_batchnorm

    torch.manual_seed(0)
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    q = ptq(trained_batchnorm(_UnfoldableBatchNorms().eval()), SynQConfig(w_bits=4, a_bits=4), x, progress=False)
    state = _state(q)
    path = export_onnx(q, tmp_path / "m.onnx", input_size=(3, 32, 32))
    assert all(torch.equal(v, q.state_dict()[k]) for k, v in state.items())
    graph = onnx.load(str(path)).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    kept = [producer.get(n.input[0]) for n in graph.node if n.op_type == "BatchNormalization"]
    assert kept == ["Conv", "Add"]  # bn2 (its conv's output is read twice) and bn3; bn1 is folded
    with torch.no_grad():
        expected = model_logits(q, x).numpy()
    got = _session(path, optimize=False).run(None, {"pixel_values": x.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max(), rtol=0)
