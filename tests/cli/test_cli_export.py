"""``synq-hf export`` follows the CLI's output rules: checked before the work, no silent replacement of other
files or creation of folders, one-line errors, written whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from synq_hf import SynQConfig
from synq_hf.apply import ptq
from synq_hf.cli import main
from synq_hf.hub.checkpoint import save_quantized

pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quantized random CIFAR ResNet-20 saved as a synq folder."""
    import timm

    import synq_hf  # noqa: F401  (registers cifar_resnet20)

    torch.manual_seed(0)
    x = torch.randn(8, 3, 32, 32)
    q = ptq(timm.create_model("cifar_resnet20").eval(), SynQConfig(w_bits=4, a_bits=4), x, progress=False)
    out = tmp_path_factory.mktemp("export") / "q"
    save_quantized(q, out, base_model="cifar_resnet20", library="timm")
    return out


def _export(folder: Path, out: Path, *extra: str) -> int:
    return main(["export", str(folder), "--format", "onnx", "--out", str(out), *extra])


def _one_line_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("synq-hf export: error: ")]
    assert len(lines) == 1 and "Traceback" not in err and "Error(" not in err, err
    return lines[0]


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_an_existing_file_is_replaced_only_with_overwrite_and_only_if_it_is_an_export(
        folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    assert _export(folder, notes) == 1
    assert "exists; pass --overwrite" in _one_line_error(capsys) and notes.read_text() == "my notes"
    assert _export(folder, notes, "--overwrite") == 1  # not an ONNX export of synq-hf: never replaced
    assert "is not an ONNX export written by synq_hf" in _one_line_error(capsys) and notes.read_text() == "my notes"

    model = tmp_path / "m.onnx"
    assert _export(folder, model) == 0 and "wrote" in capsys.readouterr().out
    assert _export(folder, model) == 1 and "pass --overwrite" in _one_line_error(capsys)
    before = model.stat().st_mtime_ns
    assert _export(folder, model, "--overwrite") == 0  # an earlier export is replaced
    assert model.stat().st_mtime_ns != before
    assert _leftovers(tmp_path) == []


def test_missing_folders_are_not_created(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "a" / "b" / "m.onnx"
    assert _export(folder, out) == 1
    assert f"the folder {out.parent} does not exist; create it first" in _one_line_error(capsys)
    assert not (tmp_path / "a").exists()
    assert _export(folder, tmp_path) == 1 and "is a folder" in _one_line_error(capsys)


def test_an_unwritable_folder_is_one_line_before_any_work(folder: Path, capsys: pytest.CaptureFixture) -> None:
    import tempfile

    try:  # Linux's /sys refuses new files, even to root
        os.close(tempfile.mkstemp(dir="/sys")[0])
    except OSError:
        pass
    else:
        pytest.skip("no folder here refuses new files")
    assert _export(folder, Path("/sys/m.onnx")) == 1
    err = _one_line_error(capsys)
    assert "cannot write --out /sys/m.onnx" in err and "ermission denied" in err


def test_a_failure_while_writing_is_one_line_and_leaves_no_file(
        folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(torch.onnx, "export", refuse)  # fails after the temporary file exists
    out = tmp_path / "m.onnx"
    assert _export(folder, out) == 1
    err = _one_line_error(capsys)
    assert f"cannot write --out {out}: Permission denied" in err
    assert not out.exists() and _leftovers(tmp_path) == []
