"""synq_hf.quant.integer_bias: biases on the int32 grid of integer kernels (the deploy_placement='int8' convert step).

The snapped biases are the ones the ONNX export writes (one folding arithmetic), on onnxruntime's grid
``Round(b / (x_scale * w_scale))``; layers whose input is not a quantizer output are skipped and named; the step
runs at the end of calibration and of fine-tuning for ``deploy_placement="int8"`` only, and the default placement
is untouched. The end-to-end onnxruntime comparison is in ``test_deploy_placement.py``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from _synq_tiny import tiny_cifar_resnet, trained_batchnorm
from torch import nn

from synq_hf import SynQConfig
from synq_hf import apply as quantize_module
from synq_hf.apply import deploy_convert, ptq, quantize_model
from synq_hf.errors import SynQError
from synq_hf.quant import snap_biases_to_int32_grid


def _model() -> nn.Module:
    """A tiny CIFAR ResNet whose BatchNorms look trained (beta = mean = 0 would fold to a zero bias, on any grid)."""
    return trained_batchnorm(tiny_cifar_resnet())


def _images(n: int = 16) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _onnx_grid_residuals(path: Path) -> list[tuple[float, float]]:
    """Per Conv/Gemm reading a DequantizeLinear input and weight: max over channels of |b - k u| and of
    |b - k u| / u, with u = x_scale * w_scale and k = Round(b / u) in float32, as onnxruntime quantizes a bias."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    values.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant"})
    producer = {o: n for n in graph.node for o in n.output}
    residuals = []
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3:
            continue
        x_dq, w_dq = producer.get(node.input[0]), producer.get(node.input[1])
        if x_dq is None or w_dq is None or not x_dq.op_type == w_dq.op_type == "DequantizeLinear":
            continue
        unit = np.abs(np.float32(values[x_dq.input[1]]) * values[w_dq.input[1]].astype(np.float32))
        bias = values[node.input[2]].astype(np.float32)
        k = np.round(bias / unit)
        error = np.abs(bias.astype(np.float64) - k * unit.astype(np.float64))
        residuals.append((float(error.max()), float((error / unit).max())))
    return residuals


@pytest.mark.parametrize("bits", [8, 4])
def test_the_exported_biases_are_on_onnxruntimes_grid(bits: int, tmp_path: Path, one_thread: None) -> None:
    pytest.importorskip("onnx")
    from synq_hf.export import export_onnx

    model = _model()
    config = SynQConfig(w_bits=bits, a_bits=bits, deploy_placement="int8")
    q = ptq(copy.deepcopy(model), config, _images(), progress=False)
    residuals = _onnx_grid_residuals(export_onnx(q, tmp_path / "q.onnx", input_size=(3, 32, 32)))
    convs = sum(isinstance(m, nn.Conv2d) for m in q.modules())
    assert len(residuals) == convs + 1  # every conv (its folded BatchNorm) and the classifier
    # k * u itself is not a float32 number: the exported bias is the nearest one the folding of a float32 beta
    # reaches, a few float32 ulps of O(1) values (2^-23 ~ 1.2e-7) from it; the grid unit is far coarser
    assert max(abs_error for abs_error, _ in residuals) <= 2**-21, residuals
    # without the snapping the folded biases fall anywhere between grid points (negative control)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(quantize_module, "snap_biases_to_int32_grid", lambda model, example=None: {})
        raw = ptq(copy.deepcopy(model), config, _images(), progress=False)
    raw_residuals = _onnx_grid_residuals(export_onnx(raw, tmp_path / "raw.onnx", input_size=(3, 32, 32)))
    assert max(units for _, units in raw_residuals) > 0.2 and max(abs_error for abs_error, _ in raw_residuals) > 1e-5


def test_report_names_what_it_skipped_and_a_second_pass_changes_nothing() -> None:
    q = ptq(_model(), SynQConfig(w_bits=4, a_bits=4, deploy_placement="int8"), _images(), progress=False)
    state = {k: v.clone() for k, v in q.state_dict().items()}
    report = snap_biases_to_int32_grid(q, _images(1))
    layers = [n for n, m in q.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert report == {name: "snapped" for name in layers}
    assert all(torch.equal(v, state[k]) for k, v in q.state_dict().items())  # calibration already snapped them
    # the paper's placement: the first conv reads the float image, the classifier the float pooled features
    off = ptq(_model(), SynQConfig(w_bits=4, a_bits=4), _images(), progress=False)
    report = snap_biases_to_int32_grid(off, _images(1))
    assert report.pop("conv1") == report.pop("linear") == "its input is not the output of an activation quantizer"
    assert set(report.values()) == {"snapped"}


def test_max_pooling_keeps_the_producer_and_a_layer_run_twice_is_skipped() -> None:
    from timm.models.resnet import BasicBlock, ResNet

    torch.manual_seed(0)
    timm_resnet = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10, channels=(8, 16, 16, 32)).eval()
    q = ptq(timm_resnet, SynQConfig(w_bits=4, a_bits=4), _images(), progress=False)  # no quantizer after maxpool
    report = snap_biases_to_int32_grid(q, _images(1))
    assert report["layer1.0.conv1"] == "snapped"  # act1 -> maxpool -> conv: the scale of act1's quantizer

    class Twice(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x) + self.inner(x.flip(-1))

    report = snap_biases_to_int32_grid(Twice(q), _images(1))
    assert set(report.values()) == {"it runs 2 times in one forward"}


def test_errors_are_one_line() -> None:
    with pytest.raises(SynQError, match="no quantized conv/linear layers"):
        snap_biases_to_int32_grid(_model(), _images(1))
    q = quantize_model(_model(), SynQConfig(w_bits=4, a_bits=4, deploy_placement="int8"))
    with pytest.raises(SynQError, match="calibrate"):
        snap_biases_to_int32_grid(q, _images(1))


def test_the_default_placement_is_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(model: nn.Module, example: torch.Tensor | None = None) -> dict[str, str]:
        raise AssertionError("snapped a deploy_placement='off' model")

    monkeypatch.setattr(quantize_module, "snap_biases_to_int32_grid", refuse)
    teacher = _model()
    q = ptq(teacher, SynQConfig(w_bits=4, a_bits=4), _images(), progress=False)
    assert deploy_convert(q) is None
    for name, p in teacher.named_parameters():
        assert torch.equal(p, q.get_parameter(name)), name


def test_fine_tuning_ends_with_the_snapping(tmp_path: Path, one_thread: None) -> None:
    from _synq_tiny import synthetic_dataset

    from synq_hf.training import finetune

    config = SynQConfig(w_bits=4, a_bits=4, deploy_placement="int8", lpf_d0=0.0, train_batch_size=4,
                        calibration_num_images=8, calibration_batch_size=4, learning_rate=0.01)
    teacher = _model()
    student = quantize_model(copy.deepcopy(teacher), config)
    trained = finetune(teacher, student, synthetic_dataset(8), config, output_dir=tmp_path, max_steps=2,
                       training_args={"use_cpu": True, "report_to": []}, progress=False, save_final=False)
    moved = [n for n, p in trained.named_parameters() if n.endswith("bias") and not torch.equal(p, teacher.get_parameter(n))]
    assert moved
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    assert set(snap_biases_to_int32_grid(trained, _images(1)).values()) == {"snapped"}
    assert all(torch.equal(v, state[k]) for k, v in trained.state_dict().items())  # already on the grid
