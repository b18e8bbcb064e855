"""Output folders never destroy anything: every refusal of ``check_output``/``write_output`` and the CLI's."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import timm
import torch
from timm.models import save_for_hf

import synq_hf  # noqa: F401  (registers cifar_resnet20)
from synq_hf.cli import main
from synq_hf.hub.outputs import OutputError, check_output, is_synq_output, public_name, write_output


def _fake_output(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"architecture": "x", "synq": {"base_model": "x"}}))
    (folder / "model.safetensors").write_bytes(b"weights")
    return folder


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(0)
    save_for_hf(timm.create_model("cifar_resnet20", pretrained=False).eval(), folder, safe_serialization=True)
    return folder


def test_current_directory_and_its_parents_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "project" / "sub"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    for out, why in ((".", "is the current directory"), ("..", "is a parent of the current directory"),
                     (str(tmp_path), "is a parent of the current directory"), ("/", "parent of the current")):
        for overwrite in (False, True):
            with pytest.raises(OutputError, match=why):
                check_output(out, overwrite=overwrite)


def test_home_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = _fake_output(tmp_path / "home")  # even a home that looks like an output
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(OutputError, match="is your home directory"):
        check_output(home, overwrite=True)


def test_files_and_foreign_folders_are_never_replaced(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        check_output(tmp_path / "file", overwrite=True)
    mine = _fake_output(tmp_path / "mine")
    with pytest.raises(OutputError, match="not empty; pass --overwrite"):
        check_output(mine)
    assert check_output(mine, overwrite=True) == mine and is_synq_output(mine)
    (mine / "notes.txt").write_text("the user's")
    with pytest.raises(OutputError, match=r"holds files synq_hf did not write \(notes.txt\)"):
        check_output(mine, overwrite=True)
    (mine / "notes.txt").unlink()
    (mine / "runs").mkdir()
    with pytest.raises(OutputError, match=r"runs/"):
        check_output(mine, overwrite=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text("{}")  # a config.json that is not ours
    with pytest.raises(OutputError, match="was not written by synq_hf"):
        check_output(other, overwrite=True)


def test_read_only_location_is_refused_before_work() -> None:
    if not Path("/sys").is_dir():
        pytest.skip("needs Linux /sys (read-only even for root)")
    with pytest.raises(OutputError, match="cannot write --out /sys/synq-out"):
        check_output("/sys/synq-out")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_folder_is_refused(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="cannot write --out"):
            check_output(ro / "model")
    finally:
        ro.chmod(0o755)


def test_write_output_is_atomic_and_keeps_the_old_output_on_failure(tmp_path: Path) -> None:
    out = _fake_output(tmp_path / "out")

    def broken(tmp: Path) -> None:
        (tmp / "config.json").write_text("{}")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_output(out, broken, overwrite=True)
    assert (out / "model.safetensors").read_bytes() == b"weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary sibling left

    def good(tmp: Path) -> None:
        _fake_output(tmp)
        (tmp / "results.json").write_text("{}")

    write_output(out, good, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "results.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_outputs_are_group_readable(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        out = write_output(tmp_path / "o", _fake_output)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "config.json").stat().st_mode) == 0o644


def test_quantize_out_dot_overwrite_leaves_the_users_files_alone(
    teacher: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("my thesis")
    monkeypatch.chdir(project)
    rc = main(["quantize", f"local-dir:{teacher}", "--method", "ptq", "--out", ".", "--overwrite", "--no-progress"])
    assert rc == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out . is the current directory" in err
    assert sorted(p.name for p in project.iterdir()) == ["notes.txt"]
    assert (project / "notes.txt").read_text() == "my thesis"


def test_public_name_never_keeps_a_path() -> None:
    assert public_name("timm/resnet18.a1_in1k") == "timm/resnet18.a1_in1k"
    assert public_name("local-dir:../shared/teachers/cifar10-resnet20") == "cifar10-resnet20"
    assert public_name("/abs/path/teacher/") == "teacher"
    assert public_name("parquet:../data/test.parquet") == "test.parquet"


def test_write_file_is_whole_or_not_at_all(tmp_path) -> None:
    from synq_hf.hub.outputs import write_file

    target = tmp_path / "f.bin"
    write_file(target, lambda tmp: tmp.write_bytes(b"old"))

    def fail(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_file(target, fail)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]
