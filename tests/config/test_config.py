"""SynQConfig: version migration of saved configs and validation of the fine-tuning/range fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from synq_hf.config import CONFIG_VERSION, SynQConfig
from synq_hf.errors import ConfigError


def test_version_1_configs_migrate_to_min_max_ranges() -> None:
    """Version 1 quantized with min-max ranges; loading it must build the same quantizers, not today's default."""
    old = {"quant_method": "synq", "w_bits": 4, "a_bits": 4, "version": 1, "learnable_act_scale": False}
    cfg = SynQConfig.from_dict(old)
    assert (cfg.act_range_init, cfg.weight_range_init, cfg.version) == ("minmax", "minmax", CONFIG_VERSION)
    assert SynQConfig().act_range_init == "search" and SynQConfig().weight_range_init == "search"
    explicit = SynQConfig.from_dict({**old, "act_range_init": "search"})
    assert explicit.act_range_init == "search"  # a value written in the file wins over the migration default
    with pytest.raises(ConfigError, match="version"):
        SynQConfig.from_dict({**old, "version": CONFIG_VERSION + 1})


def test_version_4_configs_keep_calibrating_on_filtered_images() -> None:
    """Before version 5, fine-tuning calibrated every model on the filtered images; ViTs now use the raw ones."""
    old = {"quant_method": "synq", "w_bits": 4, "a_bits": 8, "version": 4}
    assert SynQConfig.from_dict(old).calibrate_filtered is True
    assert SynQConfig.from_dict({**old, "calibrate_filtered": False}).calibrate_filtered is False
    fresh = SynQConfig()
    assert fresh.calibrate_filtered is None
    assert fresh.resolve(family="cnn", input_size=32).calibrate_filtered is True
    assert fresh.resolve(family="cnn", input_size=224).calibrate_filtered is True
    assert fresh.resolve(family="vit", input_size=32).calibrate_filtered is False
    assert fresh.resolve(family="swin", input_size=224).calibrate_filtered is False
    with pytest.raises(ConfigError, match="calibrate_filtered"):
        SynQConfig(calibrate_filtered="no")


def test_version_5_configs_keep_classic_cam_and_the_channel_sum() -> None:
    """Before version 6, CNN Grad-CAM was taken at the pooling input and the BN loss summed over channels at every
    input size; a saved config keeps meaning that, while new configs follow the authors (issue 21)."""
    old = {"quant_method": "synq", "w_bits": 4, "a_bits": 4, "version": 5}
    migrated = SynQConfig.from_dict(old)
    assert (migrated.cam_layer, migrated.synthesis_bn_reduction, migrated.version) == ("pool", "sum", CONFIG_VERSION)
    imagenet = migrated.resolve(family="cnn", input_size=224)
    assert (imagenet.synthesis_ce_beta, imagenet.synthesis_ce_gamma) == (0.1, 0.5)  # what version 5 resolved to
    cifar = migrated.resolve(family="cnn", input_size=32)
    assert (cifar.synthesis_ce_beta, cifar.synthesis_ce_gamma) == (10.0, 2.0)
    assert SynQConfig.from_dict({**old, "cam_layer": "last_conv"}).cam_layer == "last_conv"
    with pytest.raises(ConfigError, match="cam_layer"):
        SynQConfig(cam_layer="stage4")
    with pytest.raises(ConfigError, match="synthesis_bn_reduction"):
        SynQConfig(synthesis_bn_reduction="max")


@pytest.mark.parametrize(("size", "reduction", "beta", "gamma"), [
    (224, None, 0.1, 0.5),  # ImageNet-size: the authors' mean with their beta/gamma
    (32, None, 10.0, 2.0),  # CIFAR: the channel sum with HAST's beta/gamma (chosen by measurement)
    (32, "mean", 0.1, 0.5),  # the mean on CIFAR: the authors' CIFAR scripts' beta/gamma
    (224, "sum", 0.1, 0.5),  # the sum on ImageNet: version 5's defaults
])
def test_ce_beta_gamma_follow_the_bn_reduction(size: int, reduction: str | None, beta: float, gamma: float) -> None:
    from synq_hf.config import PAPER_SETTINGS

    cfg = SynQConfig(synthesis_bn_reduction=reduction).resolve(family="cnn", input_size=size)
    assert (cfg.synthesis_ce_beta, cfg.synthesis_ce_gamma) == (beta, gamma)
    assert cfg.synthesis_bn_reduction == (reduction or ("mean" if size == 224 else "sum"))
    imagenet = PAPER_SETTINGS["imagenet_cnn"]  # the ImageNet recipes record the authors' setting explicitly
    assert (imagenet["synthesis_bn_reduction"], imagenet["synthesis_ce_beta"], imagenet["synthesis_ce_gamma"]) == (
        "mean", 0.1, 0.5)


@pytest.mark.parametrize(("field", "value"), [
    ("kd_weight", -1.0), ("max_grad_norm", -0.5), ("quantizer_lr", 0.0), ("range_search_p", 0.0),
    ("act_range_init", "percentile"), ("weight_range_init", "lsq"), ("augment", "mixup"),
    ("learnable_weight_scale", "yes"),
])
def test_new_fields_are_validated(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        SynQConfig(**{field: value})


def test_defaults_clip_gradients_and_keep_the_papers_loss() -> None:
    cfg = SynQConfig()
    assert cfg.max_grad_norm > 0 and cfg.kd_weight == 1.0 and cfg.kd_temperature == 1.0 and cfg.augment == "none"


def test_loss_presets_are_data_and_validated() -> None:
    from synq_hf.config import LOSS_PRESETS

    authors = SynQConfig().with_loss_preset("authors")
    assert (authors.kd_weight, authors.kd_temperature, authors.augment) == (20.0, 20.0, "crop_flip")
    assert SynQConfig(kd_weight=3.0).with_loss_preset("paper").kd_weight == LOSS_PRESETS["paper"]["kd_weight"]
    with pytest.raises(ConfigError, match="loss preset 'hast'"):
        SynQConfig().with_loss_preset("hast")


# -- the split: model-shaping part, synthesis, fine-tuning ------------------------------------------


def test_synq_config_joins_the_three_parts_with_one_name_and_default_per_field() -> None:
    import dataclasses

    from synq_hf.config import (
        FINETUNE_FIELDS,
        QUANTIZATION_FIELDS,
        SYNTHESIS_FIELDS,
        FinetuneSettings,
        QuantizationSettings,
        SynthesisSettings,
    )

    parts = (*QUANTIZATION_FIELDS, *SYNTHESIS_FIELDS, *FINETUNE_FIELDS)
    assert len(parts) == len(set(parts))  # every field in exactly one part
    assert set(parts) | {"seed", "version"} == {f.name for f in dataclasses.fields(SynQConfig)}
    cfg = SynQConfig(w_bits=3, synthesis_groups_per_forward=2, learning_rate=1e-3)
    assert cfg.part(QuantizationSettings).w_bits == 3
    assert cfg.part(SynthesisSettings).synthesis_groups_per_forward == 2
    assert cfg.part(FinetuneSettings).learning_rate == 1e-3
    assert SynQConfig.from_parts(cfg.quantization_config(), cfg.part(SynthesisSettings),
                                 cfg.part(FinetuneSettings), seed=cfg.seed) == cfg


def test_quantization_config_holds_only_model_shaping_fields() -> None:
    from synq_hf.config import QUANTIZATION_FIELDS, SynQQuantizationConfig

    q = SynQConfig(w_bits=3, a_bits=5, lambda_cam=7.0).quantization_config()
    assert set(q.to_dict()) == {*QUANTIZATION_FIELDS, "version"}
    assert (q.w_bits, q.a_bits, q.quant_method) == (3, 5, "synq")
    # an old checkpoint's full dict reads as its model part; a field no version ever had is refused
    assert SynQQuantizationConfig.from_dict(SynQConfig(w_bits=2).to_dict()).w_bits == 2
    with pytest.raises(ConfigError, match="unknown"):
        SynQQuantizationConfig.from_dict({"w_bits": 2, "no_such_field": 1})
    with pytest.raises(ConfigError, match="w_bits"):
        SynQQuantizationConfig(w_bits=9)


def test_paper_settings_come_from_the_field_defaults() -> None:
    from synq_hf.config import PAPER_SETTINGS, paper_defaults
    from synq_hf.recipe import PAPER_SETTINGS as recipe_settings

    assert recipe_settings is PAPER_SETTINGS
    assert PAPER_SETTINGS["cifar"]["learning_rate"] == paper_defaults("cnn", 32)["learning_rate"]
    assert PAPER_SETTINGS["imagenet_vit"]["synthesis_batch_size"] == paper_defaults("vit", 224)["synthesis_batch_size"]
    assert PAPER_SETTINGS["imagenet_cnn"]["num_images"] == SynQConfig().num_images
    assert PAPER_SETTINGS["imagenet_vit"]["num_images"] == 32


def test_inline_json_and_file_mean_the_same(tmp_path) -> None:
    path = tmp_path / "c.json"
    SynQConfig(w_bits=3).to_json_file(path)
    assert SynQConfig.from_json(str(path)) == SynQConfig.from_json('{"w_bits": 3}') == SynQConfig(w_bits=3)
    with pytest.raises(ConfigError, match="not valid JSON"):
        SynQConfig.from_json("{w_bits: 3}")


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.mark.parametrize("name", ["main_v1", "main_v2"])
def test_folders_saved_by_main_load_with_identical_logits(name: str) -> None:
    """Folders main (bc901ed) saved, schema version 1 (min-max ranges, migrated) and 2 (every field recorded)."""
    import torch
    from safetensors.torch import load_file

    from synq_hf.hub.checkpoint import load_quantized

    expected = load_file(str(FIXTURES / f"{name}_expected.safetensors"))
    loaded = load_quantized(FIXTURES / name)
    with torch.no_grad():
        assert torch.equal(loaded.model(expected["pixel_values"]), expected["logits"])
    if name == "main_v1":
        assert (loaded.synq_config.act_range_init, loaded.synq_config.weight_range_init) == ("minmax", "minmax")
    assert loaded.synq_config.version == CONFIG_VERSION


def test_training_arguments_carry_the_schedule_and_the_losses(tmp_path) -> None:
    import dataclasses

    from transformers import TrainingArguments

    from synq_hf.config import LossSettings, ScheduleSettings
    from synq_hf.training import SynQTrainingArguments, build_training_args

    cfg = SynQConfig(train_batch_size=8, num_epochs=3.0, lambda_cam=7.0, tau=0.6, seed=5).resolve(
        family="cnn", input_size=32)
    args = build_training_args(cfg, tmp_path, max_steps=4, use_cpu=True)
    assert isinstance(args, SynQTrainingArguments) and isinstance(args, TrainingArguments)
    assert (args.per_device_train_batch_size, args.num_train_epochs, args.max_steps, args.seed) == (8, 3.0, 4, 5)
    for f in dataclasses.fields(ScheduleSettings):
        if f.name != "max_steps":
            assert getattr(args, f.metadata["trainer"]) == getattr(cfg, f.name), f.name
    assert all(getattr(args, f.name) == getattr(cfg, f.name) for f in dataclasses.fields(LossSettings))
    with pytest.raises(ConfigError, match="lambda_cam"):
        SynQTrainingArguments(output_dir=str(tmp_path), lambda_cam=-1.0, use_cpu=True)
