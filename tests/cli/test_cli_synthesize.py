"""``synq-hf synthesize``: end to end on a tiny local timm model, and its refusals."""

import datasets
import pytest
import timm
import torch
from timm.models._hub import save_for_hf

from synq_hf.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-resnet")
    model = timm.create_model("test_resnet", num_classes=4)
    save_for_hf(model, str(folder), model_config={"num_classes": 4}, safe_serialization=True,
                data_config={"input_size": (3, 32, 32), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)})
    return folder


def _run(model_dir, out, *extra):
    return main(["synthesize", f"local-dir:{model_dir}", "--out", str(out), "--num-images", "4",
                 "--synthesis-batch-size", "2", "--synthesis-iterations", "2", "--device", "cpu", "--no-progress",
                 *extra])


def test_writes_a_dataset_folder(model_dir, tmp_path, capsys):
    out = tmp_path / "synthetic"
    assert _run(model_dir, out, "--seed", "7") == 0
    ds = datasets.load_from_disk(str(out))
    assert len(ds) == 4 and ds.features["pixel_values"].shape == (3, 32, 32)
    assert "wrote 4 synthetic images" in capsys.readouterr().out
    assert _run(model_dir, out, "--seed", "8") == 1  # exists and is not empty
    assert "--overwrite" in capsys.readouterr().err
    assert _run(model_dir, out, "--seed", "8", "--overwrite") == 0
    assert not torch.equal(datasets.load_from_disk(str(out)).with_format("torch")[:]["pixel_values"],
                           ds.with_format("torch")[:]["pixel_values"])


def test_progress_bar_shows_losses_and_images(model_dir, tmp_path, capsys):
    out = tmp_path / "with-bar"
    assert main(["synthesize", f"local-dir:{model_dir}", "--out", str(out), "--num-images", "2",
                 "--batch-size", "2", "--iterations", "2", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "synthesizing" in err and "bn=" in err and "images=" in err and "it=" in err


def test_refuses_to_delete_a_folder_that_is_not_a_dataset(model_dir, tmp_path, capsys):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert _run(model_dir, out, "--overwrite") == 1
    assert "refusing to replace it" in capsys.readouterr().err and (out / "notes.txt").exists()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--num-images", "3"], "not a multiple of synthesis_batch_size=2"),
        (["--num-images", "0"], "--num-images=0 is not allowed; it must be an integer >= 1"),
        (["--synthesis-iterations", "-1"], "--synthesis-iterations=-1 is not allowed; it must be an integer >= 0"),
        (["--config", '{"num_images": 0}'], "num_images=0 is not allowed"),
    ],
)
def test_bad_options(model_dir, tmp_path, capsys, args, match):
    assert _run(model_dir, tmp_path / "x", *args) == 1
    assert match in capsys.readouterr().err


def test_old_flags_still_work_with_a_deprecation_line(model_dir, tmp_path, capsys):
    out = tmp_path / "old-flags"
    assert main(["synthesize", f"local-dir:{model_dir}", "--out", str(out), "--num-images", "2", "--batch-size", "2",
                 "--iterations", "1", "--groups-per-forward", "1", "--calibration-centres", "--device", "cpu",
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    for old, new in (("--batch-size", "--synthesis-batch-size"), ("--iterations", "--synthesis-iterations"),
                     ("--groups-per-forward", "--synthesis-groups-per-forward"),
                     ("--calibration-centres", "--synthesis-calibration-centres")):
        assert f"{old} is deprecated and will be removed in 1.0; use {new}" in err
    from synq_hf.synthesis import synthesis_metadata

    cfg = synthesis_metadata(datasets.load_from_disk(str(out)))["config"]
    assert (cfg["synthesis_batch_size"], cfg["synthesis_iterations"], cfg["synthesis_calibration_centres"]) == (
        2, 1, True)
