"""The CLI's promises: true cards, no local path written, resumable runs, one line per failure, quiet stdout."""

from __future__ import annotations

import io
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import timm
import torch
from huggingface_hub import ModelCard
from PIL import Image
from timm.models import save_for_hf

import synq_hf  # noqa: F401  (registers cifar_resnet20)
from synq_hf.cli import main
from synq_hf.hub.loading import load_model

REPO = Path(__file__).resolve().parents[2]
TINY = json.dumps({"train_batch_size": 4, "calibration_num_images": 8, "calibration_batch_size": 4})
SYNQ_ARGS = ("--num-images", "16", "--synthesis-iterations", "3", "--synthesis-batch-size", "8",
             "--config", TINY, "--no-progress")
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(0)
    save_for_hf(timm.create_model("cifar_resnet20", pretrained=False).eval(), folder, safe_serialization=True)
    return folder


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    pics = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(24)]
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    path = tmp_path_factory.mktemp("data") / "images.parquet"
    datasets.Dataset.from_dict({"img": pics, "label": [i % 10 for i in range(24)]}, features=features).to_parquet(
        str(path))
    return path


def _no_local_path(folder: Path, *forbidden: str) -> None:
    """No file of ``folder`` holds an absolute local path or a ``../`` path."""
    for f in folder.rglob("*"):
        if f.is_file():
            text = f.read_bytes().decode("utf-8", errors="replace")
            for needle in (*forbidden, "../", "/tmp/", "site-packages", str(Path.home()) + "/"):
                assert needle not in text, (f.name, needle)


# -- cards and metadata are true -----------------------------------------------------------------------


def test_ptq_with_real_data_card_makes_no_zero_shot_claim(
    teacher: Path, images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    relative = os.path.relpath(teacher, cwd)  # a ../ path, as users type it
    assert relative.startswith("..")
    out = tmp_path / "q"
    assert main(["quantize", f"local-dir:{relative}", "--method", "ptq", "--w-bits", "8", "--a-bits", "8",
                 "--calibration-data", os.path.relpath(images, cwd), "--calibration-num-images", "12",
                 "--calibration-skip", "4", "--eval-data", str(images), "--out", str(out), "--no-progress"]) == 0
    card = ModelCard.load(out / "README.md")
    text = card.content.split("## Citation")[0].lower()  # the SynQ paper's title may say zero-shot
    for claim in ("zero-shot", "no real data", "without any real", "synthetic images generated", "fine-tuned with"):
        assert claim not in text, claim
    assert "12 real images from `images.parquet`" in card.text and "first 4 rows skipped" in card.text
    assert "nothing was fine-tuned" in card.text
    assert card.data.model_name == f"{teacher.name}-ptq-w8a8" and "zero-shot-quantization" not in card.data.tags
    assert {r.metric_type for r in card.data.eval_results} == {"accuracy", "top_5_accuracy"}  # its own only
    assert 'load_model("q")' in card.text
    config = json.loads((out / "config.json").read_text())
    assert config["synq"]["base_model"] == teacher.name and config["synq"]["base_model_local"] is True
    assert config["synq"]["extra"]["calibration"] == {
        "source": "real", "data": "images.parquet", "split": None, "image_column": "img", "num_images": 12,
        "skip": 4, "sampling": "seeded random sample without replacement", "seed": 0}
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == "ptq" and results["calibration"]["num_images"] == 12
    assert all(round(results[k], 2) == results[k] for k in ("fp_top1", "ptq_top1", "ptq_top5"))
    assert "synthesis" not in results and results["synq_top1"] is None
    _no_local_path(out, str(tmp_path), str(teacher))


def test_ptq_on_synthetic_images_card_says_so(teacher: Path, tmp_path: Path) -> None:
    out = tmp_path / "q"
    cfg = json.dumps({"synthesis_iterations": 2, "calibration_batch_size": 4})
    assert main(["quantize", f"local-dir:{teacher}", "--method", "ptq", "--config", cfg,
                 "--calibration-num-images", "8", "--out", str(out), "--no-progress"]) == 0
    card = ModelCard.load(out / "README.md")
    assert "calibrated on 8 low-pass filtered synthetic images (no real data)" in card.text
    assert "8 images were generated" in card.text and "optimized for 2 iterations" in card.text
    assert "nothing was fine-tuned" in card.text and "SynQ zero-shot" not in card.text
    assert not (tmp_path / "q.synq-work").exists()  # the work folder goes after success
    _no_local_path(out, str(tmp_path), str(teacher))


# -- resumable: a SIGTERM'd quantize resumes to the same logits ----------------------------------------


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "synq_hf.cli", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1"}


def test_sigtermed_quantize_resumes_to_the_same_logits(teacher: Path, tmp_path: Path) -> None:
    steps = ("--max-steps", "200")
    work = tmp_path / "work"
    proc = subprocess.Popen(_cli("quantize", f"local-dir:{teacher}", "--out", str(tmp_path / "a"), *SYNQ_ARGS,
                                 *steps, "--work-dir", str(work)), cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Signal once the trainer has logged its first loss (step 50): fine-tuning is running, however loaded the
    # machine is (a fixed sleep raced the setup before training on a busy machine).
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    deadline = time.time() + 300
    while not any("'loss'" in line for line in list(lines)) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    reader.join(timeout=30)
    out, err = proc.stdout.read(), "".join(lines)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert out == "" and not (tmp_path / "a").exists()
    assert "stopped by signal 15" in err and "Resume with:" in err
    command = err.strip().splitlines()[-1].strip()
    argv = shlex.split(command)
    assert argv[0] == "synq-hf" and argv[-1] == "--resume"
    assert Path(argv[argv.index("--work-dir") + 1]).is_dir()
    checkpoints = sorted((work / "finetune").glob("checkpoint-*"))
    assert checkpoints and int(checkpoints[-1].name.split("-")[1]) < 200  # it really stopped early
    assert len(list((work / "synthetic-groups").glob("group-*.safetensors"))) == 2

    resumed = subprocess.run(_cli(*argv[1:]), cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming fine-tuning from" in resumed.stderr and not work.exists()
    whole = subprocess.run(_cli("quantize", f"local-dir:{teacher}", "--out", str(tmp_path / "b"), *SYNQ_ARGS,
                                *steps), cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
    assert whole.stdout.splitlines()[0].startswith("saved SYNQ W4A4")  # stdout: results only
    a, b = load_model(str(tmp_path / "a")), load_model(str(tmp_path / "b"))
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(a.model(x), b.model(x))
    card = ModelCard.load(tmp_path / "a" / "README.md").text
    assert "for 200 steps" in card and "16 images were generated" in card and "optimized for 3 iterations" in card
    assert json.loads((tmp_path / "a" / "results.json").read_text())["training"]["steps"] == 200
    _no_local_path(tmp_path / "a", str(tmp_path), str(teacher))


def test_work_dir_rules(teacher: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    work = tmp_path / "w"
    args = ["quantize", f"local-dir:{teacher}", "--out", str(tmp_path / "q"), *SYNQ_ARGS, "--work-dir", str(work)]
    assert main([*args, "--resume"]) == 1
    assert "holds no interrupted run" in capsys.readouterr().err
    work.mkdir()
    (work / "run.json").write_text(json.dumps({"command": "quantize"}))
    assert main(args) == 1
    assert "holds an interrupted run: pass --resume" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 1
    assert "used different settings" in capsys.readouterr().err and (work / "run.json").exists()


# -- one clear line per failure ------------------------------------------------------------------------


@NO_CUDA
@pytest.mark.parametrize("command", ["evaluate", "quantize", "synthesize"])
def test_device_cuda_without_cuda(command: str, teacher: Path, images: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture) -> None:
    extra = ["--data", str(images)] if command == "evaluate" else ["--out", str(tmp_path / "o")]
    assert main([command, f"local-dir:{teacher}", *extra, "--device", "cuda", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err == f"synq-hf {command}: error: --device cuda: CUDA is not available on this machine; use --device cpu\n"
    assert not (tmp_path / "o").exists()


def test_device_default_is_accelerates() -> None:
    from synq_hf.cli.common import resolve_device
    from synq_hf.distributed import partial_state

    assert resolve_device(None) == partial_state().device  # cuda if available, else cpu (one process)
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_broken_image_in_an_imagefolder_names_the_file(teacher: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(2):
            (tmp_path / "data" / cls / f"{i}.png").write_bytes(_png(rng.integers(0, 256, (32, 32, 3), np.uint8)))
    (tmp_path / "data" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    assert main(["evaluate", f"local-dir:{teacher}", "--data", str(tmp_path / "data"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "broken.png" in err and "cannot read image" in err, err


def test_plain_pyarrow_parquet_with_an_image_struct_loads(teacher: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(0)
    structs = [{"bytes": _png(rng.integers(0, 256, (48, 64), np.uint8)), "path": f"{i}.png"} for i in range(6)]
    table = pa.table({"picture": pa.array(structs), "label": pa.array([i % 10 for i in range(6)], pa.int64())})
    assert table.schema.metadata is None  # no datasets metadata: a plain struct column
    path = tmp_path / "plain.parquet"
    pq.write_table(table, path)
    assert main(["evaluate", f"local-dir:{teacher}", "--data", str(path), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("\n") == 1 and "top-1" in captured.out  # stdout: the result only
    # grayscale 64x48 for a 32x32 RGB model: one warning, not one per image
    warned = [r for r in caplog.records if "mode L (converted to RGB) and size 64x48 (resized to 32x32)" in r.message]
    assert len(warned) == 1 and warned[0].levelname == "WARNING"


def test_parquet_without_an_image_says_what_was_expected(teacher: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"x": [1, 2], "label": [0, 1]}), path)
    assert main(["evaluate", f"local-dir:{teacher}", "--data", str(path), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot find an image column" in err and "--image-column" in err


def test_read_only_output_is_refused_before_any_work(capsys: pytest.CaptureFixture) -> None:
    if not Path("/sys").is_dir():
        pytest.skip("needs Linux /sys")
    for command in ("quantize", "synthesize"):
        start = time.perf_counter()
        assert main([command, "no-such-model-is-ever-loaded", "--out", "/sys/synq-out", "--device", "cpu"]) == 1
        assert time.perf_counter() - start < 5
        err = capsys.readouterr().err
        assert err.startswith(f"synq-hf {command}: error: cannot write --out /sys/synq-out") and "model" not in err


# -- smaller defaults ----------------------------------------------------------------------------------


def test_synthesis_batch_defaults_to_the_image_count(teacher: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "s"
    assert main(["synthesize", f"local-dir:{teacher}", "--out", str(out), "--num-images", "6", "--iterations", "1",
                 "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith("wrote 6 synthetic images")
    meta = json.loads(json.loads((out / "dataset_info.json").read_text())["description"])
    assert meta["config"]["synthesis_batch_size"] == 6 and meta["teacher"] == teacher.name
    _no_local_path(out, str(tmp_path), str(teacher))


@pytest.mark.parametrize("command", ["demo", "evaluate", "export", "push"])
def test_one_process_subcommands_refuse_a_multi_process_launch(command: str, tmp_path: Path, monkeypatch,
                                                              capsys) -> None:
    """Under accelerate launch / torchrun these run in one process: one line, nothing written (quantize and
    synthesize run under a launcher: tests/cli/test_cli_launch.py)."""
    from synq_hf.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    out = tmp_path / "out"
    argv = {"demo": ["demo", "--out", str(out)],
            "evaluate": ["evaluate", str(tmp_path), "--data", str(tmp_path)],
            "export": ["export", str(tmp_path), "--out", str(out / "m.onnx")],
            "push": ["push", "user/repo", str(tmp_path)]}[command]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "process 1 of 2" in err[0] and "recipes/" in err[0]
    assert not out.exists()
