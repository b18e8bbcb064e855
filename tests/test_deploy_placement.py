"""deploy_placement='int8': the opt-in 8-bit quantizers an integer runtime needs (issue 12).

Off by default (the authors' placement is untouched), placed where the ReLU-ResNet spec says, calibrated,
saved and reloaded exactly, refused by specs that do not offer it, and exported so that onnxruntime runs every
conv as QLinearConv (a structural check of the optimized graph, not a timing).
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

from synq_hf import SynQConfig
from synq_hf.architectures.relu_resnet import DEPLOY_BITS
from synq_hf.errors import UnsupportedModelError
from synq_hf.model_info import model_logits
from synq_hf.models.cifar_resnet import CifarResNet
from synq_hf.quant import coverage_report, ptq, quantize_model
from synq_hf.quant.layers import OutputQuantized
from synq_hf.serialization import load_quantized, save_quantized

INT8 = SynQConfig(w_bits=4, a_bits=4, deploy_placement="int8")


def _cifar() -> nn.Module:
    torch.manual_seed(0)
    return CifarResNet(depth=8, num_classes=10).eval()  # one block per stage, two padded shortcuts


def _timm_resnet() -> nn.Module:
    """A small timm ResNet: stem max-pool, conv+BN downsample shortcuts, ``fc`` classifier."""
    torch.manual_seed(0)
    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10, channels=(8, 16, 16, 32)).eval()


def _images(n: int = 16) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


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
    q = ptq(timm.create_model("cifar_resnet20", num_classes=10).eval(), INT8, x, progress=False)
    assert all(m._is_calibrated for m in q.modules() if hasattr(m, "_is_calibrated"))
    save_quantized(q, tmp_path / "q", base_model="cifar_resnet20", library="timm")
    loaded = load_quantized(tmp_path / "q").model
    assert loaded.synq_config.deploy_placement == "int8"
    assert _output_quantized(loaded) == _output_quantized(q)
    with torch.no_grad():
        assert torch.equal(model_logits(q, x), model_logits(loaded, x))


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("build", [_cifar, _timm_resnet], ids=["cifar_resnet", "timm_resnet"])
def test_onnxruntime_runs_every_conv_in_integer(build, bits: int, tmp_path: Path, one_thread: None) -> None:  # noqa: ANN001
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from synq_hf.export import export_onnx

    x = _images()
    q = ptq(build(), SynQConfig(w_bits=bits, a_bits=bits, deploy_placement="int8"), x, progress=False)
    path = export_onnx(q, tmp_path / "m.onnx", input_size=(3, 32, 32))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"pixel_values": x.numpy()})[0]
    ops = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)
    convs = sum(isinstance(m, nn.Conv2d) for m in q.modules())
    blocks = sum(type(m).__name__ == "BasicBlock" for m in q.modules())
    assert ops["QLinearConv"] == convs and not ops["Conv"] and not ops["FusedConv"], ops
    assert ops["QLinearAdd"] == blocks, ops
    with torch.no_grad():
        expected = model_logits(q, x).numpy()
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.75
    np.testing.assert_allclose(got, expected, atol=0.1 * np.abs(expected).max(), rtol=0)


def test_cli_flag_comes_from_the_field() -> None:
    import argparse

    from synq_hf.cli.common import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    assert config_from_args(parser.parse_args(["--deploy-placement", "int8"])).deploy_placement == "int8"
    assert config_from_args(parser.parse_args([])).deploy_placement == "off"
    with pytest.raises(SystemExit):
        parser.parse_args(["--deploy-placement", "int4"])
