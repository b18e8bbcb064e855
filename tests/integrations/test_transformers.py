"""transformers integration: ``quant_method="synq"`` through ``from_pretrained`` / ``save_pretrained``."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from _synq_tiny import synthetic_dataset
from transformers import AutoModelForImageClassification, ViTConfig, ViTForImageClassification

import synq_hf  # noqa: F401  (registers quant_method="synq")
from synq_hf import SynQConfig
from synq_hf.apply import act_quantizers, calibrate, is_quantized
from synq_hf.integrations.transformers import SynQHfQuantizer, register
from synq_hf.quant import QuantLinear


@pytest.fixture(scope="module")
def float_vit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
        patch_size=8, num_labels=10,
    )).eval()
    folder = tmp_path_factory.mktemp("vit")
    model.save_pretrained(folder)
    return folder


def test_registration_is_idempotent_and_maps_to_our_classes() -> None:
    from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING

    register()
    register()
    assert AUTO_QUANTIZATION_CONFIG_MAPPING["synq"] is SynQConfig
    assert AUTO_QUANTIZER_MAPPING["synq"] is SynQHfQuantizer


def test_float_checkpoint_with_quantization_config_is_ready_for_training(float_vit_dir: Path, tmp_path: Path) -> None:
    model = AutoModelForImageClassification.from_pretrained(
        float_vit_dir, quantization_config=SynQConfig(w_bits=4, a_bits=8)
    )
    assert is_quantized(model) and isinstance(model.classifier, QuantLinear)
    quantizers = act_quantizers(model)
    # quantizer buffers are absent from a float checkpoint: reset, never left as uninitialized memory
    assert quantizers and not any(bool(q.calibrated) for q in quantizers)
    assert all(float(q.min_val) == 0.0 and float(q.max_val) == 0.0 for q in quantizers)
    assert model.hf_quantizer.is_qat_trainable and model.hf_quantizer.is_trainable

    # SynQTrainer accepts it directly: it calibrates on synthetic data, then fine-tunes
    from synq_hf.training import finetune

    teacher = AutoModelForImageClassification.from_pretrained(float_vit_dir).eval()
    before = copy.deepcopy(model.state_dict())
    student = finetune(teacher, model, synthetic_dataset(8), SynQConfig(w_bits=4, a_bits=8, lpf_d0=0.0,
                       train_batch_size=4, calibration_num_images=8, calibration_batch_size=4),
                       output_dir=tmp_path, max_steps=1, progress=False, save_final=False)
    assert all(bool(q.calibrated) for q in act_quantizers(student))
    assert not torch.equal(before["classifier.weight"], student.state_dict()["classifier.weight"])


def test_save_pretrained_and_plain_reload_give_identical_logits(float_vit_dir: Path, tmp_path: Path) -> None:
    model = AutoModelForImageClassification.from_pretrained(
        float_vit_dir, quantization_config=SynQConfig(w_bits=4, a_bits=8)
    ).eval()
    calibrate(model, [torch.randn(8, 3, 32, 32)], progress=False)
    model.save_pretrained(tmp_path / "q")
    saved = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert saved["quant_method"] == "synq" and saved["w_bits"] == 4 and saved["a_bits"] == 8
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "q").eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(reloaded(x).logits, model(x).logits)
