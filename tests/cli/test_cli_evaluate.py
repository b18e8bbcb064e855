"""``synq-hf evaluate``: help text, JSON output and readable errors."""

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from timm.models import save_for_hf

import synq_hf
from synq_hf.cli import main


@pytest.fixture
def model_and_data(tmp_path: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    model = synq_hf.models.cifar_resnet20()
    model.eval()
    folder = tmp_path / "model"
    save_for_hf(model, str(folder), safe_serialization=True)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(20)]
    ds = datasets.Dataset.from_dict(
        {"img": images, "label": rng.integers(0, 10, 20).tolist()},
        features=datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)}),
    )
    ds.to_parquet(str(tmp_path / "data.parquet"))
    return folder, tmp_path / "data.parquet"


def test_help_has_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "synq-hf evaluate local-dir:" in out and "--json" in out and "--trust-remote-code" in out


def test_json_output(
    model_and_data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, data = model_and_data
    out_json = tmp_path / "out" / "result.json"
    missing = main(["evaluate", f"local-dir:{folder}", "--data", str(data), "--json", str(out_json), "--no-progress"])
    assert missing == 1 and "does not exist; create it first" in capsys.readouterr().err  # never created silently
    out_json.parent.mkdir()
    code = main(
        [
            "evaluate",
            f"local-dir:{folder}",
            "--data",
            str(data),
            "--batch-size",
            "8",
            "--limit",
            "15",
            "--json",
            str(out_json),
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    result = json.loads(out_json.read_text())
    assert set(result) == {"model", "data", "num_samples", "top1", "top5"}
    assert (
        result["model"] == f"local-dir:{folder}"
        and result["data"] == str(data)
        and result["num_samples"] == 15
    )
    loaded = synq_hf.load_model(str(folder))
    direct = synq_hf.evaluate_model(loaded, synq_hf.load_image_dataset(str(data)), limit=15, progress=False)
    assert result["top1"] == round(direct["top1"], 2) and result["top5"] == round(direct["top5"], 2)
    line = capsys.readouterr().out
    assert f"top-1 {direct['top1']:.2f}%" in line and "15 images" in line


@pytest.mark.parametrize(
    "argv_tail,message",
    [
        (["resnet5000", "--data", "DATA"], "Did you mean"),
        (["MODEL", "--data", "/no/such/dir/data"], "does not exist"),
        (["MODEL", "--data", "DATA", "--label-column", "nope"], "no label column 'nope'"),
        (["MODEL", "--data", "DATA", "--batch-size", "0"], "--batch-size must be positive"),
    ],
)
def test_errors_are_one_line(
    model_and_data: tuple[Path, Path], capsys: pytest.CaptureFixture[str], argv_tail: list[str], message: str
) -> None:
    folder, data = model_and_data
    argv = ["evaluate"] + [
        str(folder) if a == "MODEL" else str(data) if a == "DATA" else a for a in argv_tail
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # earlier lines may be datasets' progress bars
    assert last.startswith("synq-hf evaluate: error:") and message in last and "Traceback" not in err
