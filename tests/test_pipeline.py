"""The pipeline's structure (issue 23): one config resolution and one architecture-spec match per run."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

import synq_hf
from synq_hf import SynQConfig, SynQQuantizer
from synq_hf.architectures import find_spec, get_spec
from synq_hf.config import RESOLVED_FIELDS, paper_defaults
from synq_hf.pipeline import LoadedModel, match_spec, require_resolved, resolve_config

TINY = dict(num_images=8, synthesis_iterations=2, calibration_num_images=8, calibration_batch_size=8,
            train_batch_size=4, max_steps=2, lpf_d0=0.0)


def _tiny_vit() -> LoadedModel:
    """A tiny random transformers ViT as a hand-built ``LoadedModel`` (no spec: the pipeline matches it)."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                intermediate_size=64, image_size=32, patch_size=8,
                                                num_labels=10)).eval()
    data_config = {"input_size": (3, 32, 32), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
                   "interpolation": "bilinear", "crop_pct": 1.0}
    return LoadedModel(model=model, model_id="tiny-vit", library="transformers", family="vit",
                       data_config=data_config, num_classes=10)


@pytest.fixture
def resolve_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every ``SynQConfig.resolve`` call (its family) from here on."""
    calls: list[str] = []
    original = SynQConfig.resolve

    def counting(self: SynQConfig, *, family: str, input_size: int) -> SynQConfig:
        calls.append(family)
        return original(self, family=family, input_size=input_size)

    monkeypatch.setattr(SynQConfig, "resolve", counting)
    return calls


@pytest.fixture
def spec_matches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every walk of the architecture registry (``find_spec``, which ``get_spec`` calls too), in every module."""
    calls: list[str] = []
    original = find_spec

    def counting(model: torch.nn.Module) -> object:
        calls.append(type(model).__name__)
        return original(model)

    for name, module in list(sys.modules.items()):
        if name.startswith("synq_hf") and getattr(module, "find_spec", None) is original:
            monkeypatch.setattr(module, "find_spec", counting)
    return calls


def test_the_main_path_resolves_the_config_once(tiny_cnn_dir: Path, resolve_calls: list[str]) -> None:
    q = SynQQuantizer.from_pretrained(f"local-dir:{tiny_cnn_dir}", SynQConfig(**TINY), device="cpu")
    q.synthesize(progress=False)
    q.quantize(progress=False)
    assert resolve_calls == ["cnn"]
    # the synthesis batch default is part of resolution: min(num_images, the family's 256)
    assert q.config.synthesis_batch_size == 8 and q.config.is_resolved()


def test_the_main_path_matches_the_spec_once(tiny_cnn_dir: Path, spec_matches: list[str], tmp_path: Path) -> None:
    q = SynQQuantizer.from_pretrained(f"local-dir:{tiny_cnn_dir}", SynQConfig(**TINY), device="cpu")
    assert q.teacher.spec is q.spec and q.spec.family == "cnn"  # the loaded model carries its spec
    q.synthesize(progress=False)
    q.quantize(progress=False)
    assert len(spec_matches) == 1, spec_matches  # when the teacher was loaded, never again
    q.save_pretrained(tmp_path / "out")
    assert synq_hf.load_model(str(tmp_path / "out")).spec is q.spec  # a quantized folder's LoadedModel too


def test_a_hand_built_vit_is_matched_and_resolved_once(resolve_calls: list[str], spec_matches: list[str]) -> None:
    teacher = _tiny_vit()
    cfg = SynQConfig(**{**TINY, "num_images": 4, "calibration_num_images": 4, "calibration_batch_size": 4},
                     w_bits=4, a_bits=8)
    q = SynQQuantizer(teacher, cfg, device="cpu")
    q.synthesize(progress=False)
    q.quantize(max_steps=1, progress=False)
    assert resolve_calls == ["vit"]
    assert spec_matches == ["ViTForImageClassification"]
    assert q.config.synthesis_batch_size == 4 and q.config.weight_symmetric is True


def test_a_new_image_count_re_derives_the_batch_the_user_left_unset(tiny_cnn_dir: Path) -> None:
    q = SynQQuantizer.from_pretrained(f"local-dir:{tiny_cnn_dir}", SynQConfig(**TINY), device="cpu")
    assert q.config.synthesis_batch_size == 8
    q.synthesize(num_images=4, progress=False)
    assert (q.config.num_images, q.config.synthesis_batch_size) == (4, 4)
    given = SynQQuantizer.from_pretrained(f"local-dir:{tiny_cnn_dir}",
                                          SynQConfig(**{**TINY, "synthesis_batch_size": 2}), device="cpu")
    given.synthesize(num_images=4, progress=False)
    assert given.config.synthesis_batch_size == 2  # a batch the user gave is kept


def test_resolution_owns_the_batch_default_and_weight_symmetry() -> None:
    assert SynQConfig(num_images=8).resolve(family="cnn", input_size=32).synthesis_batch_size == 8
    assert SynQConfig().resolve(family="cnn", input_size=32).synthesis_batch_size == 256
    assert SynQConfig(num_images=64).resolve(family="vit", input_size=224).synthesis_batch_size == 32
    assert SynQConfig(num_images=8, synthesis_batch_size=4).resolve(family="cnn", input_size=32).synthesis_batch_size == 4
    assert set(RESOLVED_FIELDS) == set(paper_defaults("vit", 32))
    for family, symmetric in (("cnn", False), ("vit", True), ("swin", True)):
        assert SynQConfig().resolve(family=family, input_size=224).weight_symmetric is symmetric


def test_resolve_config_never_resolves_twice(resolve_calls: list[str]) -> None:
    resolved = resolve_config(None, family="cnn", input_size=32)
    assert resolve_calls == ["cnn"] and resolved.is_resolved() and not SynQConfig().is_resolved()
    assert resolve_config(resolved, family="vit", input_size=224) is resolved
    assert resolve_calls == ["cnn"]
    require_resolved(resolved, "x")
    with pytest.raises(synq_hf.SynQError, match="x needs a resolved config") as info:
        require_resolved(SynQConfig(), "x")
    assert "\n" not in str(info.value)


def test_quantize_model_reads_the_resolved_weight_symmetry() -> None:
    from synq_hf.apply import SYNQ_CONFIG_ATTR, quantize_model

    vit = _tiny_vit().model
    spec = get_spec(vit)
    assert match_spec(vit, spec) is spec
    unresolved = quantize_model(copy.deepcopy(vit), SynQConfig(a_bits=8), spec=spec)
    assert getattr(unresolved, SYNQ_CONFIG_ATTR).weight_symmetric is True  # the family default of resolution
    resolved = SynQConfig(a_bits=8).resolve(family="vit", input_size=32).replace(weight_symmetric=False)
    student = quantize_model(copy.deepcopy(vit), resolved, spec=spec)
    assert getattr(student, SYNQ_CONFIG_ATTR).weight_symmetric is False  # the resolved value, not a second rule


def test_public_entry_points_still_take_an_unresolved_config(tmp_path: Path) -> None:
    from _synq_tiny import cnn_pair, synthetic_dataset

    from synq_hf.training import finetune

    teacher, student, cfg = cnn_pair()
    assert not cfg.is_resolved()
    model = finetune(teacher, student, synthetic_dataset(8), cfg, output_dir=tmp_path, max_steps=1, progress=False,
                     save_final=False, training_args={"use_cpu": True, "tau": 0.9})
    assert model is not None


def test_one_validation_loop_for_the_config_the_training_arguments_and_the_flags(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    import synq_hf.config as config_module
    from synq_hf.cli.common import config_from_args
    from synq_hf.training import SynQTrainingArguments

    messages = []
    for build in (lambda: SynQConfig(tau=2.0),
                  lambda: SynQTrainingArguments(output_dir=str(tmp_path), tau=2.0, use_cpu=True),
                  lambda: config_from_args(argparse.Namespace(tau=2.0))):
        with pytest.raises(synq_hf.ConfigError) as info:
            build()
        messages.append(str(info.value))
    assert messages[0] == messages[1] == messages[2].replace("--tau", "tau", 1) == (
        "tau=2.0 is not allowed; it must be a number in [0.0, 1.0]")
    checked: list[str] = []
    original = config_module.check_field
    monkeypatch.setattr(config_module, "check_field", lambda f, value, name=None: (checked.append(f.name),
                                                                                  original(f, value, name))[1])
    SynQConfig()
    assert "tau" in checked and "w_bits" in checked  # SynQConfig.validate goes through check_field
