"""save_quantized / load_quantized: safetensors-only folders that reload to identical logits, and clear errors."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import ViTConfig, ViTForImageClassification

from synq_hf import SynQConfig
from synq_hf.apply import act_quantizers, ptq, quantize_model
from synq_hf.errors import CheckpointError, ConfigError, SynQError
from synq_hf.hub.checkpoint import (
    FORMAT_VERSION,
    QUANTIZERS_FILE,
    WEIGHTS_FILE,
    is_synq_folder,
    load_quantized,
    save_quantized,
)
from synq_hf.model_info import model_logits

HF_TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64, num_labels=10)
DATA_CONFIG = dict(input_size=(3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear",
                   crop_pct=1.0)


@dataclass(frozen=True)
class Case:
    id: str
    library: str
    build: Callable[[], nn.Module]
    size: int
    config: SynQConfig


def _hf_vit() -> nn.Module:
    torch.manual_seed(0)
    return ViTForImageClassification(ViTConfig(**HF_TINY)).eval()


def _timm(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(0)
        return timm.create_model(name, pretrained=False, num_classes=10).eval()

    return build


CASES = [
    Case("timm-test_resnet", "timm", _timm("test_resnet"), 32, SynQConfig(w_bits=4, a_bits=4)),
    Case("timm-test_vit", "timm", _timm("test_vit"), 160, SynQConfig(w_bits=4, a_bits=8)),
    Case("hf-vit-tiny", "transformers", _hf_vit, 32, SynQConfig(w_bits=4, a_bits=8, learnable_act_scale=True)),
]


def _save_case(case: Case, folder: Path) -> tuple[nn.Module, torch.Tensor]:
    model = case.build()
    x = torch.randn(3, 3, case.size, case.size, generator=torch.Generator().manual_seed(1))
    q = ptq(model, case.config, x, progress=False)
    extra = {"note": "test", "calibration": {"num_images": 3}}
    if case.library == "transformers":
        save_quantized(q, folder, base_model=case.id, library="transformers", extra=extra, data_config=DATA_CONFIG)
    else:
        save_quantized(q, folder, base_model=case.id, library="timm", extra=extra)
    return q, x


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_save_load_gives_identical_logits(case: Case, tmp_path: Path) -> None:
    q, x = _save_case(case, tmp_path)
    loaded = load_quantized(tmp_path)
    with torch.no_grad():
        expected, got = model_logits(q, x), model_logits(loaded.model, x)
    assert torch.equal(expected, got)
    assert loaded.is_quantized and loaded.library == case.library and loaded.base_model == case.id
    assert loaded.synq_config == q.synq_config
    assert loaded.extra == {"note": "test", "calibration": {"num_images": 3}}
    assert loaded.num_classes == 10 and not loaded.model.training
    assert loaded.family == ("cnn" if "resnet" in case.id else "vit")
    # only safetensors and JSON: nothing that unpickles
    names = sorted(p.name for p in tmp_path.iterdir())
    assert all(n.endswith((".safetensors", ".json")) for n in names), names
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["synq"]["base_model"] == case.id and data["synq"]["format_version"] == FORMAT_VERSION
    assert is_synq_folder(tmp_path)


def test_timm_layout_packs_weights_and_plain_timm_refuses(tmp_path: Path) -> None:
    case = CASES[0]
    q, x = _save_case(case, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", WEIGHTS_FILE, QUANTIZERS_FILE]
    data = json.loads((tmp_path / "config.json").read_text())
    assert {"architecture", "num_classes", "pretrained_cfg", "synq"} <= set(data)
    assert data["architecture"] == "synq_hf_quantized" and data["num_classes"] == 10
    assert data["synq"]["architecture"] == "test_resnet"
    assert SynQConfig.from_dict(data["synq"]["config"]) == q.synq_config
    assert data["synq"]["library"] == "timm"
    weights, quantizers = load_file(tmp_path / WEIGHTS_FILE), load_file(tmp_path / QUANTIZERS_FILE)
    assert not any("quantizer" in k for k in weights)
    assert any(k.endswith(".weight_codes") for k in weights)  # packed integer codes, not float weights
    assert quantizers and all(".input_quantizer." in k or ".output_quantizer." in k for k in quantizers)
    assert len(quantizers) == 3 * len(act_quantizers(q))  # min_val, max_val, calibrated
    # no silent float model: the strict timm loader meets the guard architecture and says how to load it
    with pytest.raises(CheckpointError, match=r"synq_hf\.load_model"):
        timm.create_model(f"local-dir:{tmp_path}", pretrained=True)


def test_timm_config_writer_gets_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """timm before 1.0.31 calls ``config_path.open()``: a str path failed to save on those versions."""
    import timm.models._hub as timm_hub

    real = timm_hub.save_config_for_hf

    def old_timm(model: nn.Module, config_path: Path, *args: object, **kwargs: object) -> None:
        config_path.open("a").close()  # what timm 1.0.29 does first; AttributeError on a str
        real(model, config_path, *args, **kwargs)

    monkeypatch.setattr(timm_hub, "save_config_for_hf", old_timm)
    _save_case(CASES[0], tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["synq"]["library"] == "timm"


def test_transformers_layout(tmp_path: Path) -> None:
    case = CASES[2]
    q, _ = _save_case(case, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", WEIGHTS_FILE, "preprocessor_config.json"]
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["model_type"] == "vit" and len(data["id2label"]) == 10
    qcfg = data["quantization_config"]
    assert qcfg["quant_method"] == "synq" and SynQConfig.from_dict(qcfg) == q.synq_config
    assert data["synq"]["library"] == "transformers" and "config" not in data["synq"]
    tensors = load_file(tmp_path / WEIGHTS_FILE)
    assert any(k.endswith("output_quantizer.scale") for k in tensors)  # learnable scales are saved too
    # every tensor is there, quantized weights as packed codes (their weight quantizers keep no state)
    packed = {k.removesuffix("_codes") for k in tensors if k.endswith(".weight_codes")}
    expected = {k for k in q.state_dict() if k not in packed and ".weight_quantizer." not in k}
    assert packed and set(tensors) - {k for k in tensors if k.endswith(("_codes", "_scale", "_zero_point"))} == expected
    proc = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert proc["image_mean"] == [0.5] * 3 and proc["size"] == {"height": 32, "width": 32}


def test_processor_config_is_copied_verbatim(tmp_path: Path) -> None:
    model = _hf_vit()
    q = ptq(model, SynQConfig(w_bits=8, a_bits=8), torch.randn(2, 3, 32, 32), progress=False)
    processor = {"image_processor_type": "ViTImageProcessor", "do_normalize": True, "image_mean": [0.4, 0.4, 0.4],
                 "image_std": [0.2, 0.2, 0.2], "resample": 3, "size": {"height": 32, "width": 32}}
    save_quantized(q, tmp_path, base_model="tiny", library="transformers", processor_config=processor)
    assert json.loads((tmp_path / "preprocessor_config.json").read_text()) == processor
    loaded = load_quantized(tmp_path)
    assert loaded.data_config["mean"] == (0.4, 0.4, 0.4) and loaded.data_config["interpolation"] == "bicubic"


def test_hub_load_model_delegates(tmp_path: Path) -> None:
    from synq_hf.hub.loading import load_model

    q, x = _save_case(CASES[0], tmp_path)
    loaded = load_model(str(tmp_path))
    assert loaded.is_quantized
    with torch.no_grad():
        assert torch.equal(loaded.model(x), q(x))


def test_config_records_only_what_shapes_the_model_and_must_match_quantizers(tmp_path: Path) -> None:
    from synq_hf.config import QUANTIZATION_FIELDS

    model = _timm("test_resnet")()
    q = ptq(model, SynQConfig(w_bits=4, a_bits=4), torch.randn(2, 3, 32, 32), progress=False)
    save_quantized(q, tmp_path / "ok", base_model="m", library="timm",
                   config=SynQConfig(w_bits=4, a_bits=4, lambda_cam=200.0, synthesis_kde_points=3))
    recorded = json.loads((tmp_path / "ok" / "config.json").read_text())["synq"]["config"]
    assert set(recorded) == {*QUANTIZATION_FIELDS, "version"}  # no synthesis or fine-tuning settings
    loaded = load_quantized(tmp_path / "ok").synq_config
    assert (loaded.w_bits, loaded.lambda_cam, loaded.synthesis_kde_points) == (4, 50.0, 10)  # run settings: defaults
    with pytest.raises(ConfigError, match="w_bits=8"):
        save_quantized(q, tmp_path / "bad", base_model="m", library="timm", config=SynQConfig(w_bits=8, a_bits=4))


# -------------------------------------------------------------------------------------------------- errors


def test_refuses_uncalibrated_or_float_models(tmp_path: Path) -> None:
    model = _timm("test_resnet")()
    with pytest.raises(SynQError, match="not quantized"):
        save_quantized(model, tmp_path / "f", base_model="m", library="timm")
    quantize_model(model, SynQConfig())
    with pytest.raises(SynQError, match="uncalibrated"):
        save_quantized(model, tmp_path / "u", base_model="m", library="timm")
    assert not (tmp_path / "u").exists() and not (tmp_path / "f").exists()


def test_bad_arguments(tmp_path: Path) -> None:
    q = ptq(_hf_vit(), SynQConfig(w_bits=8, a_bits=8), torch.randn(2, 3, 32, 32), progress=False)
    with pytest.raises(ConfigError, match="library"):
        save_quantized(q, tmp_path, base_model="m", library="keras")
    with pytest.raises(ConfigError, match="processor_config"):
        save_quantized(q, tmp_path, base_model="m", library="transformers")
    with pytest.raises(ConfigError, match="not a timm model"):
        save_quantized(q, tmp_path, base_model="m", library="timm")
    with pytest.raises(ConfigError, match="JSON"):
        save_quantized(q, tmp_path, base_model="m", library="transformers", data_config=DATA_CONFIG,
                       extra={"x": object()})


@pytest.fixture(scope="module")
def saved_resnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("resnet")
    _save_case(CASES[0], folder)
    return folder


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("name", ["config.json", WEIGHTS_FILE, QUANTIZERS_FILE])
def test_missing_files(saved_resnet: Path, tmp_path: Path, name: str) -> None:
    folder = _copy(saved_resnet, tmp_path / "m")
    (folder / name).unlink()
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        load_quantized(folder)


@pytest.mark.parametrize("name", [WEIGHTS_FILE, QUANTIZERS_FILE])
def test_truncated_safetensors(saved_resnet: Path, tmp_path: Path, name: str) -> None:
    folder = _copy(saved_resnet, tmp_path / "t")
    raw = (folder / name).read_bytes()
    (folder / name).write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_quantized(folder)
    (folder / name).write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_quantized(folder)


def test_tensors_from_another_model(saved_resnet: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    model = _timm("test_resnet")()
    q = ptq(model, SynQConfig(w_bits=4, a_bits=4, exclude=["layer1.*"]), torch.randn(2, 3, 32, 32), progress=False)
    save_quantized(q, other, base_model="m", library="timm")
    folder = _copy(saved_resnet, tmp_path / "x")
    shutil.copy(other / QUANTIZERS_FILE, folder / QUANTIZERS_FILE)  # fewer quantizers than the config builds
    with pytest.raises(CheckpointError, match="missing.*another model"):
        load_quantized(folder)
    folder2 = _copy(other, tmp_path / "y")
    shutil.copy(saved_resnet / QUANTIZERS_FILE, folder2 / QUANTIZERS_FILE)
    with pytest.raises(CheckpointError, match="unexpected"):
        load_quantized(folder2)
    vit_weights = {k: torch.zeros(1) for k in ("cls_token", "pos_embed")}
    from safetensors.torch import save_file

    save_file(vit_weights, str(folder2 / WEIGHTS_FILE))
    with pytest.raises(CheckpointError, match="missing"):
        load_quantized(folder2)


def test_wrong_shapes(saved_resnet: Path, tmp_path: Path) -> None:
    folder = _copy(saved_resnet, tmp_path / "s")
    data = json.loads((folder / "config.json").read_text())
    data["num_classes"] = data["model_args"]["num_classes"] = 7  # config no longer matches the tensors
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="wrong shape.*fc"):
        load_quantized(folder)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d["synq"].update(format_version=99), "format_version 99 is not supported"),
        (lambda d: d["synq"]["config"].update(version=99), "config version 99 is not supported"),
        (lambda d: d["synq"]["config"].update(w_bits=1), "w_bits=1"),
        (lambda d: d["synq"].update(library="keras"), "library 'keras'"),
        (lambda d: d.pop("synq"), "not a synq_hf-quantized model"),
    ],
)
def test_bad_config(saved_resnet: Path, tmp_path: Path, edit: Callable[[dict], object], match: str) -> None:
    folder = _copy(saved_resnet, tmp_path / "c")
    data = json.loads((folder / "config.json").read_text())
    edit(data)
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=match):
        load_quantized(folder)


def test_unreadable_config_and_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a folder"):
        load_quantized(tmp_path / "nope")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_quantized(tmp_path)
    assert not is_synq_folder(tmp_path)


def test_transformers_from_pretrained_reloads_identically(tmp_path: Path) -> None:
    """The transformers layout is what ``quant_method="synq"`` (registered on ``import synq_hf``) reloads."""
    from transformers import AutoModelForImageClassification

    q, x = _save_case(CASES[2], tmp_path)
    model = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(model(x).logits, q(x).logits)
