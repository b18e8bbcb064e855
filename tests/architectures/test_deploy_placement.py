"""deploy_placement='int8': the opt-in 8-bit quantizers an integer runtime needs (issue 12).

Off by default (the authors' placement is untouched), placed where the ReLU-ResNet spec says, calibrated (with
the biases snapped to the int32 grid), saved and reloaded exactly, refused by specs that do not offer it, and
exported so that onnxruntime runs every conv as QLinearConv (a structural check of the optimized graph, not a
timing) and computes what the fake-quant model computes.
"""

from __future__ import annotations

import collections
import copy
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from _synq_tiny import tiny_cifar_resnet, trained_batchnorm
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

from synq_hf import SynQConfig
from synq_hf.apply import ptq, quantize_model
from synq_hf.architectures.relu_resnet import DEPLOY_BITS
from synq_hf.errors import UnsupportedModelError
from synq_hf.hub.checkpoint import load_quantized, save_quantized
from synq_hf.model_info import model_logits
from synq_hf.quant import coverage_report
from synq_hf.quant.layers import OutputQuantized

INT8 = SynQConfig(w_bits=4, a_bits=4, deploy_placement="int8")


def _cifar() -> nn.Module:
    return tiny_cifar_resnet()


def _timm_resnet() -> nn.Module:
    """A small timm ResNet: stem max-pool, conv+BN downsample shortcuts, ``fc`` classifier."""
    torch.manual_seed(0)
    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10, channels=(8, 16, 16, 32)).eval()


def _images(n: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _unsnapped(q: nn.Module, float_model: nn.Module) -> nn.Module:
    """``q`` with the float model's biases back: the calibrated model as it was before the int32-grid snapping."""
    raw = copy.deepcopy(q)
    biases = {n: p for n, p in float_model.named_parameters() if n.endswith("bias")}
    with torch.no_grad():
        for n, p in raw.named_parameters():
            if n in biases:
                p.copy_(biases[n])
    return raw


def _output_quantized(model: nn.Module) -> dict[str, int]:
    return {n: int(m.output_quantizer.bits) for n, m in model.named_modules() if isinstance(m, OutputQuantized)}


def test_off_by_default_and_old_configs_load_as_off() -> None:
    assert SynQConfig().deploy_placement == "off"
    old = {"quant_method": "synq", "w_bits": 4, "a_bits": 4, "version": 3}
    assert SynQConfig.from_dict(old).deploy_placement == "off"
    plain = quantize_model(_cifar(), SynQConfig(w_bits=4, a_bits=4))
    relus = [n for n, m in _cifar().named_modules() if isinstance(m, nn.ReLU)]
    assert list(_output_quantized(plain)) == relus
    assert coverage_report(plain)["deploy_placement"] == "off"


@pytest.mark.parametrize("build", [_cifar, _timm_resnet], ids=["cifar_resnet", "timm_resnet"])
def test_int8_places_8_bit_quantizers_on_the_residual_stream(build) -> None:  # noqa: ANN001
    model = build()
    relus = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    q = quantize_model(model, INT8, example_input=_images(1))
    outputs = _output_quantized(q)
    assert all(outputs.pop(r) == 4 for r in relus)  # the authors' a_bits quantizers are still there
    blocks = [n for n, m in q.named_modules() if type(m).__name__ == "BasicBlock"]
    shortcuts = [f"{b}.{a}" for b in blocks for a in ("shortcut", "downsample")
                 if isinstance(getattr(q.get_submodule(b), a, None), nn.Module)
                 and not isinstance(q.get_submodule(f"{b}.{a}"), nn.Identity)]
    pools = [n for n, m in q.named_modules() if isinstance(m, nn.MaxPool2d)]
    assert shortcuts and (pools or build is _cifar)
    assert outputs == {name: DEPLOY_BITS for name in [f"{b}.bn2" for b in blocks] + shortcuts + pools}
    report = coverage_report(q)
    assert report["deploy_placement"] == "int8" and not report["gaps"]
    layers = {e["name"]: e for e in report["layers"]}
    first, last = layers[next(iter(layers))], layers[next(reversed(layers))]
    assert first["input_bits"] == DEPLOY_BITS and first["input_from"] == "input_quantizer"  # the image
    assert last["input_bits"] == DEPLOY_BITS and last["input_from"] == "input_quantizer"  # the pooled features
    assert all(e["input_bits"] is not None for e in report["layers"])


def test_other_architectures_refuse_it_in_one_line() -> None:
    model = timm.create_model("test_resnet", num_classes=10)
    with pytest.raises(UnsupportedModelError, match=r"deploy_placement='int8' is available for relu_resnet only"):
        quantize_model(model, INT8)
    assert not any(isinstance(m, OutputQuantized) for m in model.modules())  # refused before any edit


def test_calibrated_saved_and_reloaded_exactly(tmp_path: Path) -> None:
    x = _images()
    torch.manual_seed(0)
    teacher = trained_batchnorm(timm.create_model("cifar_resnet20", num_classes=10).eval())
    q = ptq(teacher, INT8, x, progress=False)
    assert all(m._is_calibrated for m in q.modules() if hasattr(m, "_is_calibrated"))
    moved = [n for n, p in q.named_parameters() if n.endswith("bias") and not torch.equal(p, teacher.get_parameter(n))]
    assert moved  # calibration snapped the biases to the int32 grid: the saved model is the snapped one
    save_quantized(q, tmp_path / "q", base_model="cifar_resnet20", library="timm")
    loaded = load_quantized(tmp_path / "q").model
    assert loaded.synq_config.deploy_placement == "int8"
    assert _output_quantized(loaded) == _output_quantized(q)
    with torch.no_grad():
        assert torch.equal(model_logits(q, x), model_logits(loaded, x))


def _ort_logits(path: Path, x: torch.Tensor, *, fused: bool, saved: Path | None = None) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    if not fused:  # the QDQ graph op by op, float between Q/DQ: the model's arithmetic in another float order
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if saved is not None:
        so.optimized_model_filepath = str(saved)
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"pixel_values": x.numpy()})[0]


def _deviation(q: nn.Module, path: Path, x: torch.Tensor) -> tuple[float, float, float]:
    """(share of same predictions, mean |logit difference| of fused and of unfused onnxruntime to ``q``)."""
    with torch.no_grad():
        expected = model_logits(q, x).numpy()
    fused, unfused = _ort_logits(path, x, fused=True), _ort_logits(path, x, fused=False)
    same = float((fused.argmax(1) == expected.argmax(1)).mean())
    return same, float(np.abs(fused - expected).mean()), float(np.abs(unfused - expected).mean())


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("build", [_cifar, _timm_resnet], ids=["cifar_resnet", "timm_resnet"])
def test_onnxruntime_runs_every_conv_in_integer_exactly(build, bits: int, tmp_path: Path, one_thread: None) -> None:  # noqa: ANN001
    """Every conv runs as QLinearConv, and the fused integer graph computes the fake-quant model.

    Tolerance: onnxruntime's unfused run of the same QDQ graph differs from torch only in float32 rounding order,
    which at 8 bits already flips the odd code near a rounding tie; the fused kernels must stay within 3x that
    noise floor (mean |logit difference| over 256 generated images) and predict the same class on every image.
    Negative control: the same model with its biases as they were before snapping (the int32 rounding of the
    fused kernels then moves codes) is more than 10x above it (20x to 10^5x here).
    """
    onnx = pytest.importorskip("onnx")
    from synq_hf.export import export_onnx

    model = trained_batchnorm(build())
    q = ptq(copy.deepcopy(model), SynQConfig(w_bits=bits, a_bits=bits, deploy_placement="int8"), _images(),
            progress=False)
    x = _images(256, seed=2)
    path = export_onnx(q, tmp_path / "m.onnx", input_size=(3, 32, 32))
    _ort_logits(path, x[:2], fused=True, saved=tmp_path / "opt.onnx")
    ops = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)
    convs = sum(isinstance(m, nn.Conv2d) for m in q.modules())
    blocks = sum(type(m).__name__ == "BasicBlock" for m in q.modules())
    assert ops["QLinearConv"] == convs and not ops["Conv"] and not ops["FusedConv"], ops
    assert ops["QLinearAdd"] == blocks, ops
    same, fused, floor = _deviation(q, path, x)
    assert same == 1.0
    assert fused <= 3 * floor + 1e-6, (fused, floor)
    raw = _unsnapped(q, model)
    raw_path = export_onnx(raw, tmp_path / "raw.onnx", input_size=(3, 32, 32))
    _, raw_fused, raw_floor = _deviation(raw, raw_path, x)
    assert raw_fused > 10 * (raw_floor + 1e-6), (raw_fused, raw_floor)


def test_cli_flag_comes_from_the_field() -> None:
    import argparse

    from synq_hf.cli.common import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    assert config_from_args(parser.parse_args(["--deploy-placement", "int8"])).deploy_placement == "int8"
    assert config_from_args(parser.parse_args([])).deploy_placement == "off"
    with pytest.raises(SystemExit):
        parser.parse_args(["--deploy-placement", "int4"])
