"""``synq-hf quantize`` (zero-shot SynQ, the default method) and ``synq-hf demo``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from timm.models import save_for_hf

from synq_hf.cli import main


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import timm

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("teacher")
    save_for_hf(timm.create_model("cifar_resnet20", num_classes=10).eval(), str(folder), safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def eval_parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import datasets
    import numpy as np

    rng = np.random.default_rng(1)
    ds = datasets.Dataset.from_dict(
        {"img": [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(12)],
         "label": rng.integers(0, 10, 12).tolist()},
        features=datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)}),
    )
    path = tmp_path_factory.mktemp("data") / "eval.parquet"
    ds.to_parquet(str(path))
    return path


TINY = ["--num-images", "8", "--synthesis-iterations", "2", "--max-steps", "2", "--no-progress",
        "--config", json.dumps({"synthesis_batch_size": 8, "calibration_num_images": 8, "calibration_batch_size": 8,
                                "train_batch_size": 4})]


def test_synq_is_the_default_and_writes_results(teacher_dir: Path, eval_parquet: Path, tmp_path: Path) -> None:
    out = tmp_path / "q"
    rc = main(["quantize", f"local-dir:{teacher_dir}", "--out", str(out), "--w-bits", "3", "--a-bits", "3",
               "--eval-data", str(eval_parquet), *TINY])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    for key in ("fp_top1", "ptq_top1", "synq_top1", "w_bits", "a_bits", "synthesis_s", "finetune_s"):
        assert results[key] is not None, key
    assert (results["w_bits"], results["a_bits"], results["method"]) == (3, 3, "synq")
    assert results["eval_data"] == "eval.parquet"  # never a local path
    config = json.loads((out / "config.json").read_text())["synq"]["config"]  # only what shapes the model
    assert "num_images" not in config and config["w_bits"] == json.loads((out / "results.json").read_text())["w_bits"]
    settings = json.loads((out / "results.json").read_text())["config"]  # the run's settings
    assert (settings["num_images"], settings["synthesis_iterations"], settings["max_steps"]) == (8, 2, 2)
    assert main(["evaluate", str(out), "--data", str(eval_parquet), "--no-progress"]) == 0


def test_reuses_a_synthetic_folder(teacher_dir: Path, tmp_path: Path) -> None:
    syn = tmp_path / "syn"
    assert main(["synthesize", f"local-dir:{teacher_dir}", "--out", str(syn), "--num-images", "8",
                 "--synthesis-batch-size", "8", "--synthesis-iterations", "2"]) == 0
    out = tmp_path / "q"
    assert main(["quantize", f"local-dir:{teacher_dir}", "--out", str(out), "--synthetic", str(syn), *TINY]) == 0
    assert json.loads((out / "results.json").read_text())["synthesis_s"] is None  # nothing was synthesized


def test_bad_input_is_one_clear_line(teacher_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cases = [
        (["--calibration-data", "x.parquet"], "for --method ptq"),
        (["--synthetic", str(tmp_path / "missing")], "--synthetic"),
        (["--w-bits", "9"], "--w-bits=9 is not allowed"),
    ]
    for extra, message in cases:
        out = tmp_path / "never"
        assert main(["quantize", f"local-dir:{teacher_dir}", "--out", str(out), *extra, *TINY]) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
        assert not out.exists()


@pytest.mark.slow
@pytest.mark.guard
def test_demo_beats_ptq_offline(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--no-progress", "--json", str(tmp_path / "demo.json")]) == 0
    record = json.loads((tmp_path / "demo.json").read_text())
    assert record["fp_top1"] >= 95.0
    assert record["synq_top1"] > record["ptq_top1"]
    assert (out / "README.md").exists() and (out / "results.json").exists()


def test_gelu_depthwise_convmixer_from_a_local_folder_w4a4(eval_parquet: Path, tmp_path: Path) -> None:
    """A GELU/depthwise CNN (small CIFAR ConvMixer, random weights) runs `synq-hf quantize` W4A4 end to end."""
    import timm
    from torch import nn

    torch.manual_seed(0)
    folder = tmp_path / "convmixer"
    model = timm.create_model("convmixer_cifar", num_classes=10, dim=32, depth=2, kernel_size=3).eval()
    assert any(isinstance(m, nn.GELU) for m in model.modules())
    save_for_hf(model, str(folder), model_args={"dim": 32, "depth": 2, "kernel_size": 3}, safe_serialization=True)
    out = tmp_path / "q"
    rc = main(["quantize", f"local-dir:{folder}", "--w-bits", "4", "--a-bits", "4", "--out", str(out),
               "--eval-data", str(eval_parquet), *TINY])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    coverage = results["coverage"]
    layers = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    assert coverage["architecture"] == "bn_cnn" and coverage["placement"] == "layer_inputs"
    assert coverage["weight_bits"] == [4] and coverage["input_bits"] == [4] and coverage["gaps"] == 0
    assert coverage["quantized_layers"] == f"{layers}/{layers}"
    assert coverage["quantized_inputs"] == f"{layers - 1}/{layers}"  # all but the stem, which reads the image
    assert coverage["activation_quantizers"] == layers - 1
    assert set(coverage["float_by_rule"]) == {"model_input"}
    card = (out / "README.md").read_text()
    assert f"{layers}/{layers} conv/linear layers quantized, {layers - 1}/{layers} of their inputs" in card
    assert "W4A4 (4-bit weights" in card and "float by rule: model_input" in card
