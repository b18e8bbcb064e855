"""SynQConfig: version migration of saved configs and validation of the fine-tuning/range fields."""

from __future__ import annotations

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
