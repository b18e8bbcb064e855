"""Quantized layer classes: registered per module type, so a whole quantized model pickles and ``torch.save``s."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _synq_tiny import cnn_pair, hf_vit_pair
from torch import nn

from synq_hf.apply import calibrate, iter_batches
from synq_hf.model_info import model_logits
from synq_hf.quant.layers import (
    OutputQuantized,
    OutputQuantizedQuantLinear,
    OutputQuantizedReLU,
    QuantLinear,
    output_quantized_class,
    register_output_quantized,
)

REPO = Path(__file__).resolve().parents[2]
IMAGES = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _calibrated(pair) -> nn.Module:  # noqa: ANN001
    _, student, _ = pair
    return calibrate(student, iter_batches(IMAGES, 4), progress=False).eval()


@pytest.fixture(scope="module")
def students() -> dict[str, nn.Module]:
    return {"cnn": _calibrated(cnn_pair()), "vit": _calibrated(hf_vit_pair())}


@torch.no_grad()
def _logits(model: nn.Module) -> torch.Tensor:
    return model_logits(model, IMAGES)


def test_output_quantized_classes_are_registered_per_type_and_importable() -> None:
    assert output_quantized_class(nn.ReLU) is OutputQuantizedReLU
    assert output_quantized_class(QuantLinear) is OutputQuantizedQuantLinear
    assert OutputQuantizedReLU.base_class is nn.ReLU

    class Custom(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    built = output_quantized_class(Custom)  # a type without a class of its own gets one, once
    assert issubclass(built, OutputQuantized) and issubclass(built, Custom) and output_quantized_class(Custom) is built
    with pytest.raises(ValueError, match="already has"):
        register_output_quantized(nn.ReLU)(type("Again", (OutputQuantized, nn.ReLU), {}))
    with pytest.raises(TypeError, match="must subclass"):
        register_output_quantized(nn.GELU)(type("Wrong", (OutputQuantized, nn.ReLU), {}))


@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_quantized_model_pickles_and_torch_saves_with_identical_logits(students, kind: str) -> None:  # noqa: ANN001
    model = students[kind]
    expected = _logits(model)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    for reloaded in (pickle.loads(pickle.dumps(model)), torch.load(buffer, weights_only=False)):
        assert [type(m) for m in reloaded.modules()] == [type(m) for m in model.modules()]
        assert torch.equal(_logits(reloaded), expected)


def test_torch_saved_model_loads_in_a_fresh_process(students, tmp_path: Path) -> None:  # noqa: ANN001
    """A new process has built no class yet: loading rebuilds them from the module types."""
    path = tmp_path / "models.pt"
    torch.save({"models": students, "images": IMAGES, "logits": {k: _logits(m) for k, m in students.items()}}, path)
    code = (
        "import sys, torch\n"
        "from synq_hf.model_info import model_logits\n"
        f"saved = torch.load({str(path)!r}, weights_only=False)\n"
        "for kind, model in saved['models'].items():\n"
        "    with torch.no_grad():\n"
        "        assert torch.equal(model_logits(model, saved['images']), saved['logits'][kind]), kind\n"
        "print('same logits')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0 and "same logits" in done.stdout, done.stderr[-2000:]
