"""``synq-hf`` under ``accelerate launch``/``torchrun``: the main process alone writes, errors are one line everywhere.

The two-process runs (torchrun, gloo on CPU) go through tests/_cli_worker.py, which runs ``python -m synq_hf.cli``
and records what each process held and wrote.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import synq_hf.cli.common as common
from synq_hf.cli import main
from synq_hf.distributed import Processes, ProcessFailedError, launched

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--num-images", "8", "--synthesis-batch-size", "4", "--synthesis-iterations", "2",
        "--calibration-num-images", "4", "--calibration-batch-size", "4", "--max-steps", "2", "--no-progress",
        "--device", "cpu"]
"""A SynQ run of seconds: 8 images in 2 synthesis groups (one per process), 2 fine-tuning steps."""


class OtherProcess(Processes):
    """Process ``rank`` of 2, alone in this test: the other process's side of each collective is given."""

    def __init__(self, rank: int, error: str | None = None, main: object = None) -> None:
        super().__init__(rank, 2)
        self.error, self.main = error, main

    def gather(self, obj: object) -> list:
        """This process's object beside the other's (``error``: the only thing gathered here), in rank order."""
        return [obj, self.error] if self.rank == 0 else [self.error, obj]

    def from_main(self, obj: object) -> object:
        """The main process's object: this one's on the main process, else ``main``."""
        return obj if self.is_main else self.main


# -- Processes.together ----------------------------------------------------------------------------


def test_together_alone_raises_the_block_s_own_exception() -> None:
    with pytest.raises(KeyError), Processes().together():
        raise KeyError("x")


def test_together_raises_on_every_process_when_one_failed() -> None:
    with OtherProcess(0).together():  # nobody failed
        pass
    with pytest.raises(ProcessFailedError, match=r"^process 1 of 2: no such file$"), \
            OtherProcess(0, "no such file").together():
        pass  # this process did fine, the other failed: this one stops too, with the other's line
    with pytest.raises(ProcessFailedError, match=r"^process 1 of 2: TypeError: bad$") as info, \
            OtherProcess(1).together():
        raise TypeError("bad")
    assert isinstance(info.value.__context__, TypeError)  # --debug shows the original traceback


def test_launched_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launched() == (0, 1)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    assert launched() == (3, 4)


# -- run_session: the main process checks --out and holds the work folder ----------------------------


def _session_args(tmp_path: Path) -> argparse.Namespace:
    return argparse.Namespace(out=tmp_path / "missing" / "out", overwrite=False, work_dir=None, resume=False,
                              argv=["quantize", "m", "--out", "x"])


def test_run_session_on_another_process_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    main_work = tmp_path / "main.synq-work"
    monkeypatch.setattr(common, "processes", lambda: OtherProcess(1, main=main_work))
    args = _session_args(tmp_path)  # --out in a missing folder: only the main process checks it
    before = sorted(tmp_path.rglob("*"))
    with common.run_session(args, {"command": "quantize"}, ("synthetic-groups",)) as procs:
        assert not procs.is_main and args.work_path == main_work and args.procs is procs
    assert sorted(tmp_path.rglob("*")) == before
    assert getattr(args, "resume_command", None) is None  # the resume hint is the main process's to print


def test_run_session_on_the_main_process_checks_and_locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "processes", lambda: OtherProcess(0))
    args = _session_args(tmp_path)
    with pytest.raises(ProcessFailedError, match=r"^process 0 of 2: --out .*does not exist"):
        with common.run_session(args, {"command": "quantize"}, ("synthetic-groups",)):
            pass
    args.out = tmp_path / "out"
    with common.run_session(args, {"command": "quantize"}, ("synthetic-groups",)) as procs:
        assert procs.is_main and (args.work_path / common.LOCK_FILE).is_file()
    assert not args.work_path.exists()  # removed after success, by the main process


def test_run_session_stops_the_main_process_when_another_failed(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "processes", lambda: OtherProcess(0, "cannot read the model"))
    args = _session_args(tmp_path)
    args.out = tmp_path / "out"
    with pytest.raises(ProcessFailedError, match=r"^process 1 of 2: cannot read the model$"):
        with common.run_session(args, {"command": "quantize"}, ("synthetic-groups",)):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the work folder it opened is gone again


# -- the command line under a launcher: refusals and errors, before any collective ----------------------


@pytest.fixture
def rank1(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process is process 1 of 2 of a launch (no process group: nothing may reach a collective)."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")


def test_reconstruct_refuses_a_launch_in_one_line(rank1: None, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    for method in (["--method", "reconstruct"], ["--config", '{"method": "reconstruct"}']):
        assert main(["quantize", "local-dir:/nonexistent", "--out", str(out), *method]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("synq-hf quantize: error: `synq-hf quantize --method "
                                                   "reconstruct` (block reconstruction) runs in one process")
        assert "process 1 of 2" in err[0]
    assert not out.exists() and not torch.distributed.is_initialized()


def test_an_unexpected_error_under_a_launch_is_one_line(rank1: None, tmp_path: Path, capsys,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import synq_hf.cli.quantize as cli_quantize

    def broken(spec: str | None) -> torch.device:
        raise RuntimeError("boom")

    monkeypatch.setattr(cli_quantize, "resolve_device", broken)
    argv = ["quantize", "local-dir:/nonexistent", "--out", str(tmp_path / "out")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err == "synq-hf quantize: error: process 1 of 2: RuntimeError: boom\n"
    assert main([*argv, "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("synq-hf quantize: error: process 1 of 2: RuntimeError: boom\n")
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(RuntimeError, match="boom"):  # one process: a bug keeps its traceback
        main(argv)


def test_an_interrupted_other_process_leaves_the_report_to_the_main_one(rank1: None, tmp_path: Path, capsys,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import synq_hf.cli.quantize as cli_quantize

    def interrupted(spec: str | None) -> torch.device:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_quantize, "resolve_device", interrupted)
    assert main(["quantize", "local-dir:/nonexistent", "--out", str(tmp_path / "out")]) == 130
    assert capsys.readouterr().err == "synq-hf quantize: interrupted\n"  # not "nothing was written": not its to say


def test_debug_prints_the_traceback_of_a_one_line_error(tmp_path: Path, capsys) -> None:
    argv = ["quantize", "local-dir:/nonexistent", "--out", str(tmp_path / "out"), "--calibration-skip", "3"]
    assert main(argv) == 1
    assert capsys.readouterr().err == "synq-hf quantize: error: --calibration-skip needs --calibration-data\n"
    assert main(["--debug", *argv]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("error: --calibration-skip needs --calibration-data\n")


# -- two processes against one: the same folder, written once ---------------------------------------


def _torchrun() -> str:
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    return torchrun


def _worker(launcher: list[str], argv: list[str], dump: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    dump.mkdir()
    environ = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "PYTHONPATH": str(ROOT), "SYNQ_TEST_DUMP": str(dump), "CUDA_VISIBLE_DEVICES": "", **env}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        environ.pop(key, None)
    return subprocess.run([*launcher, str(ROOT / "tests" / "_cli_worker.py"), *argv], capture_output=True,
                          text=True, timeout=300, env=environ, cwd=cwd)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> str:
    from synq_hf.recipe import build_smoke_teacher

    return build_smoke_teacher("cnn", tmp_path_factory.mktemp("teacher") / "t")


def test_two_processes_write_the_one_process_folder_once(teacher: str, tmp_path: Path) -> None:
    torchrun = _torchrun()
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
    two = _worker([torchrun, "--nproc_per_node", "2", "--standalone"],
                  ["quantize", teacher, "--out", str(tmp_path / "two" / "out"), *TINY, "--train-batch-size", "2"],
                  tmp_path / "dump-two", tmp_path)
    assert two.returncode == 0, (two.stdout + two.stderr)[-4000:]
    # one process, with the same global batch (2 per process x 2 processes)
    one = _worker([sys.executable], ["quantize", teacher, "--out", str(tmp_path / "one" / "out"), *TINY,
                                     "--train-batch-size", "4"], tmp_path / "dump-one", tmp_path)
    assert one.returncode == 0, (one.stdout + one.stderr)[-4000:]

    # the main process alone checked --out, held the work folder and saved; the other process wrote nothing
    calls = [json.loads((tmp_path / "dump-two" / f"rank{r}-calls.json").read_text()) for r in (0, 1)]
    assert calls == [["check_output", "open_work_dir", "save_pretrained"], []]
    assert two.stdout.count("saved SYNQ W4A4") == 1
    folders = {n: tmp_path / n for n in ("one", "two")}
    assert sorted(p.name for p in folders["two"].iterdir()) == sorted(p.name for p in folders["one"].iterdir()) \
        == ["out"]  # the work folder is gone, nothing else was left beside --out
    assert sorted(p.name for p in (folders["two"] / "out").iterdir()) == \
        sorted(p.name for p in (folders["one"] / "out").iterdir())

    # every process held the whole synthetic set, bit for bit the one process's
    reference = torch.load(tmp_path / "dump-one" / "rank0-synthetic.pt")
    for r in (0, 1):
        shard = torch.load(tmp_path / "dump-two" / f"rank{r}-synthetic.pt")
        assert torch.equal(shard["pixels"], reference["pixels"]) and torch.equal(shard["labels"], reference["labels"])

    # the processes hold the same trained student (DDP), the one saved; it is the one process's up to float order
    students = [torch.load(tmp_path / "dump-two" / f"rank{r}-student.pt") for r in (0, 1)]
    alone = torch.load(tmp_path / "dump-one" / "rank0-student.pt")
    assert students[0].keys() == students[1].keys() == alone.keys()
    assert all(torch.equal(students[0][k], students[1][k]) for k in alone)
    assert max((students[0][k].double() - alone[k].double()).abs().max().item() for k in alone) < 1e-8

    for name in ("model.safetensors", "quantizers.safetensors"):  # and so are the saved (quantized) weights
        saved = [load_file(folders[n] / "out" / name) for n in ("one", "two")]
        assert saved[0].keys() == saved[1].keys()
        assert max((saved[0][k].double() - saved[1][k].double()).abs().max().item() for k in saved[0]) < 1e-8
    records = [json.loads((folders[n] / "out" / "results.json").read_text()) for n in ("one", "two")]
    for record in records:
        for part in (record, record["synthesis"], record["training"]):
            for key in [k for k in part if k.endswith("_s")]:
                part.pop(key)  # wall times
    # the same record but the batch per process: 4 in one process, 2 in each of two (the same global batch)
    assert [r["config"].pop("train_batch_size") for r in records] == [4, 2]
    assert records[0] == records[1] and records[1]["training"]["batch_size"] == 4


def test_a_process_failing_a_check_stops_every_process_in_one_line(teacher: str, tmp_path: Path) -> None:
    run = _worker([_torchrun(), "--nproc_per_node", "2", "--standalone"],
                  ["quantize", teacher, "--out", str(tmp_path / "out"), *TINY], tmp_path / "dump", tmp_path,
                  SYNQ_TEST_FAIL_RANK="1")
    assert run.returncode != 0
    line = "synq-hf quantize: error: process 1 of 2: injected failure on process 1"
    errors = [s for s in run.stderr.splitlines() if s.startswith("synq-hf ")]
    # both processes print the same line; no traceback through synq_hf (torchrun's own report follows it)
    assert errors == [line, line] and f"{ROOT / 'synq_hf'}" not in run.stderr, run.stderr[-4000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dump"]  # no --out, no work folder


def test_two_processes_synthesize_the_one_process_dataset(teacher: str, tmp_path: Path) -> None:
    import datasets
    import numpy as np

    argv = ["synthesize", teacher, "--num-images", "8", "--synthesis-batch-size", "4", "--synthesis-iterations", "2",
            "--no-progress", "--device", "cpu", "--out"]
    runs = {"two": [_torchrun(), "--nproc_per_node", "2", "--standalone"], "one": [sys.executable]}
    for name, launcher in runs.items():
        (tmp_path / name).mkdir()
        run = _worker(launcher, [*argv, str(tmp_path / name / "out")], tmp_path / f"dump-{name}", tmp_path)
        assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
        assert run.stdout.count("wrote 8 synthetic images") == 1
    calls = [json.loads((tmp_path / "dump-two" / f"rank{r}-calls.json").read_text()) for r in (0, 1)]
    assert calls == [["check_output", "open_work_dir"], []]  # the dataset is written by write_output, main only
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["out"]  # the work folder is gone
    sets = [datasets.load_from_disk(str(tmp_path / n / "out")).with_format("numpy") for n in ("one", "two")]
    for column in ("pixel_values", "label"):
        assert np.array_equal(np.stack(sets[0][column]), np.stack(sets[1][column]))
