"""``synq-hf quantize``: PTQ on real or synthetic images, output folder handling, reload through hub/evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file
from timm.models import save_for_hf
from torch import nn
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

import synq_hf  # noqa: F401  (registers cifar_resnet20 with timm)
from synq_hf.apply import ptq
from synq_hf.cli import main
from synq_hf.cli.quantize import sample_indices
from synq_hf.data import build_eval_transform, collate_images
from synq_hf.errors import ConfigError, DataError
from synq_hf.hub.loading import load_model


def _randomize_bn(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=g) + 0.5
            m.running_var.data = torch.rand(m.num_features, generator=g) + 0.5
    return model


@pytest.fixture(scope="module")
def cifar_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init CIFAR ResNet-20 in timm's folder layout (32x32 inputs: fast)."""
    folder = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(0)
    model = _randomize_bn(timm.create_model("cifar_resnet20", pretrained=False)).eval()
    save_for_hf(model, folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 random 32x32 RGB images with labels, as a parquet file with an Image feature."""
    rng = np.random.default_rng(0)
    pics = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(40)]
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    ds = datasets.Dataset.from_dict({"img": pics, "label": [i % 10 for i in range(40)]}, features=features)
    path = tmp_path_factory.mktemp("data") / "images.parquet"
    ds.to_parquet(str(path))
    return path


def _quantize(model: Path | str, out: Path, *extra: str) -> int:
    return main(["quantize", f"local-dir:{model}" if isinstance(model, Path) else model, "--method", "ptq",
                 "--out", str(out), "--no-progress", *extra])


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name)


def test_ptq_real_data_matches_library_ptq(cifar_model: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "q"
    rc = _quantize(cifar_model, out, "--w-bits", "4", "--a-bits", "8", "--calibration-data", str(images),
                   "--calibration-num-images", "12", "--calibration-skip", "20", "--seed", "3")
    assert rc == 0
    loaded = load_model(str(out))
    assert loaded.is_quantized and loaded.synq_config.w_bits == 4 and loaded.synq_config.a_bits == 8
    settings = json.loads((out / "results.json").read_text())["config"]  # the run's settings, all of them
    assert settings["seed"] == 3 and settings["lpf_d0"] == 8.0  # resolved for a 32x32 CNN
    cal = loaded.extra["calibration"]
    assert loaded.extra["method"] == "ptq" and cal["source"] == "real" and cal["num_images"] == 12
    assert cal["skip"] == 20 and cal["seed"] == 3
    # the same images through the library API give the same quantizer ranges and logits
    ds = datasets.load_dataset("parquet", data_files=str(images), split="train")
    picked = ds.select(sample_indices(len(ds), 12, 20, 3))["img"]
    pixels = collate_images(picked, build_eval_transform(loaded.data_config))
    teacher = timm.create_model(f"local-dir:{cifar_model}", pretrained=True).eval()
    reference = ptq(teacher, loaded.synq_config, pixels, progress=False)
    x = pixels[:4]
    with torch.no_grad():
        assert torch.equal(loaded.model(x), reference(x))
    assert main(["evaluate", str(out), "--data", str(images), "--no-progress"]) == 0
    assert _leftovers(tmp_path) == []


def test_seed_changes_the_calibration_sample(cifar_model: Path, images: Path, tmp_path: Path) -> None:
    outs = {}
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        assert _quantize(cifar_model, tmp_path / name, "--calibration-data", str(images),
                         "--calibration-num-images", "8", "--seed", seed) == 0
        outs[name] = load_file(tmp_path / name / "quantizers.safetensors")
    assert all(torch.equal(outs["a"][k], outs["b"][k]) for k in outs["a"])
    assert any(not torch.equal(outs["a"][k], outs["c"][k]) for k in outs["a"])


def test_output_folder_rules(cifar_model: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "q"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    args = ("--calibration-data", str(images), "--calibration-num-images", "4")
    assert _quantize(cifar_model, out, *args) == 1
    assert "not empty; pass --overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").exists()
    assert _quantize(cifar_model, out, *args, "--overwrite") == 1  # not a synq_hf output: never replaced
    assert "not written by synq_hf" in capsys.readouterr().err and (out / "keep.txt").read_text() == "user data"
    (out / "keep.txt").unlink()
    assert _quantize(cifar_model, out, *args) == 0
    assert _quantize(cifar_model, out, *args, "--overwrite") == 0  # an earlier output is replaced
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "card.json", "config.json", "model.safetensors", "quantizers.safetensors", "results.json"
    ]
    assert _leftovers(tmp_path) == []
    (tmp_path / "file").write_text("x")
    assert _quantize(cifar_model, tmp_path / "file", *args) == 1
    assert "not a folder" in capsys.readouterr().err
    assert _quantize(cifar_model, cifar_model, *args, "--overwrite") == 1
    assert "input model's folder" in capsys.readouterr().err


def test_failure_leaves_no_partial_output(
    cifar_model: Path, images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import synq_hf.hub.checkpoint as serialization

    real_save = serialization.save_quantized

    def broken_save(model: nn.Module, save_dir: Path, **kwargs: object) -> Path:
        real_save(model, save_dir, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(serialization, "save_quantized", broken_save)
    rc = _quantize(cifar_model, tmp_path / "q", "--calibration-data", str(images), "--calibration-num-images", "4")
    assert rc == 1 and "cannot write --out" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_too_few_images_and_bad_options(
    cifar_model: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "q"
    assert _quantize(cifar_model, out, "--calibration-data", str(images), "--calibration-num-images", "30",
                     "--calibration-skip", "20") == 1
    assert "20 after skipping 20" in capsys.readouterr().err
    assert _quantize(cifar_model, out, "--calibration-skip", "3") == 1
    assert "needs --calibration-data" in capsys.readouterr().err
    assert _quantize(cifar_model, out, "--w-bits", "9", "--calibration-data", str(images)) == 1
    assert "--w-bits=9 is not allowed" in capsys.readouterr().err
    assert _quantize(cifar_model, out, "--config", '{"a_bit": 4}', "--calibration-data", str(images)) == 1
    assert "did you mean 'a_bits'" in capsys.readouterr().err
    assert _quantize(cifar_model, out, "--config", str(tmp_path / "missing.json")) == 1
    assert "does not exist" in capsys.readouterr().err
    assert _quantize(cifar_model, out, "--calibration-data", str(tmp_path / "none.parquet")) == 1
    assert not out.exists() and _leftovers(tmp_path) == []
    with pytest.raises(SystemExit):
        main(["quantize", str(cifar_model), "--method", "gptq", "--out", str(out)])  # not a method


def test_config_file_and_flags(cifar_model: Path, images: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "synq.json"
    cfg.write_text(json.dumps({"w_bits": 3, "a_bits": 3, "exclude": ["linear"], "calibration_batch_size": 3}))
    out = tmp_path / "q"
    assert _quantize(cifar_model, out, "--config", str(cfg), "--a-bits", "5", "--calibration-data", str(images),
                     "--calibration-num-images", "7") == 0
    loaded = load_model(str(out))
    assert (loaded.synq_config.w_bits, loaded.synq_config.a_bits) == (3, 5)
    assert loaded.synq_config.exclude == ["linear"] and type(loaded.model.linear) is nn.Linear


def test_already_quantized_input_is_refused(
    cifar_model: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    first = tmp_path / "q1"
    assert _quantize(cifar_model, first, "--calibration-data", str(images), "--calibration-num-images", "4") == 0
    assert _quantize(first, tmp_path / "q2", "--calibration-data", str(images)) == 1
    err = capsys.readouterr().err
    assert "already quantized" in err and "synq_hf.load_model(" in err and "Traceback" not in err


def test_synthetic_calibration_without_data(cifar_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "q"
    cfg = json.dumps({"synthesis_iterations": 2, "synthesis_batch_size": 4, "calibration_batch_size": 4})
    assert _quantize(cifar_model, out, "--config", cfg, "--calibration-num-images", "8") == 0
    loaded = load_model(str(out))
    cal = loaded.extra["calibration"]
    syn = loaded.extra["synthesis"]
    assert cal["source"] == "synthetic" and cal["num_images"] == 8 and syn["iterations"] == 2
    assert syn["num_images"] == 8 and syn["batch_size"] == 4
    with torch.no_grad():
        assert torch.isfinite(loaded.model(torch.randn(2, 3, 32, 32))).all()


def test_transformers_model_keeps_its_processor(images: Path, tmp_path: Path) -> None:
    base = tmp_path / "vit"
    torch.manual_seed(0)
    ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, intermediate_size=64, num_labels=10)).save_pretrained(base)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.3] * 3, image_std=[0.2] * 3).save_pretrained(base)
    out = tmp_path / "q"
    assert _quantize(str(base), out, "--w-bits", "4", "--a-bits", "8", "--calibration-data", str(images),
                     "--calibration-num-images", "6") == 0
    assert json.loads((out / "preprocessor_config.json").read_text()) == json.loads(
        (base / "preprocessor_config.json").read_text())
    loaded = load_model(str(out))
    assert loaded.library == "transformers" and loaded.data_config["mean"] == (0.3, 0.3, 0.3)
    assert main(["evaluate", str(out), "--data", str(images), "--no-progress"]) == 0


@pytest.mark.parametrize(("rows", "n", "skip"), [(10, 10, 0), (40, 12, 20), (5, 1, 4)])
def test_sample_indices(rows: int, n: int, skip: int) -> None:
    idx = sample_indices(rows, n, skip, seed=0)
    assert len(idx) == len(set(idx)) == n and all(skip <= i < rows for i in idx)
    assert idx == sample_indices(rows, n, skip, seed=0)


def test_sample_indices_errors() -> None:
    with pytest.raises(DataError, match="lower --calibration-num-images"):
        sample_indices(10, 11, 0, 0)
    with pytest.raises(ConfigError):
        sample_indices(10, 1, -1, 0)


def test_loss_preset_and_augment_flags_reach_the_config() -> None:
    from synq_hf.cli import build_parser
    from synq_hf.cli.quantize import build_config

    parse = build_parser().parse_args
    cfg = build_config(parse(["quantize", "m", "--out", "o", "--loss-preset", "authors", "--augment", "shift_flip"]))
    assert (cfg.kd_weight, cfg.kd_temperature, cfg.augment) == (20.0, 20.0, "shift_flip")  # the flag wins
    assert build_config(parse(["quantize", "m", "--out", "o"])).augment == "none"
    with pytest.raises(SystemExit):
        parse(["quantize", "m", "--out", "o", "--augment", "mixup"])


def test_help_lists_every_config_field_under_the_same_flag_as_synthesize(capsys) -> None:
    import dataclasses

    from synq_hf.cli import build_parser
    from synq_hf.cli.common import config_flag
    from synq_hf.config import SYNTHESIS_FIELDS, SynQConfig

    with pytest.raises(SystemExit):
        main(["quantize", "--help"])
    text = capsys.readouterr().out
    names = [f.name for f in dataclasses.fields(SynQConfig) if f.name not in ("quant_method", "version")]
    missing = [n for n in names if config_flag(n) not in text]
    assert not missing, missing
    subcommands = build_parser()._subparsers._group_actions[0].choices
    for name in (*SYNTHESIS_FIELDS, "seed"):  # one flag, one destination, on both subcommands
        dests = {sub: {a.dest for a in subcommands[sub]._actions if config_flag(name) in a.option_strings}
                 for sub in ("quantize", "synthesize")}
        assert dests == {"quantize": {name}, "synthesize": {name}}, dests


def test_config_flags_override_the_inline_or_file_config(tmp_path) -> None:
    from synq_hf.cli import build_parser
    from synq_hf.cli.common import config_from_args
    from synq_hf.config import SynQConfig

    path = tmp_path / "c.json"
    SynQConfig(w_bits=3, lambda_cam=9.0).to_json_file(path)
    for config in (str(path), '{"w_bits": 3, "lambda_cam": 9.0}'):
        args = build_parser().parse_args(["quantize", "m", "--out", "o", "--config", config, "--a-bits", "5",
                                          "--no-weight-symmetric", "--exclude", "head*", "fc"])
        cfg = config_from_args(args)
        assert (cfg.w_bits, cfg.a_bits, cfg.lambda_cam, cfg.weight_symmetric, cfg.exclude) == (
            3, 5, 9.0, False, ["head*", "fc"])
