"""Sharded synthesis and evaluation on two CPU ranks (torchrun, gloo) against a single process, bit for bit.

Also: a process that fails names its group and leaves its finished groups behind; a synthesis stopped under
two processes resumes under one and the reverse, skipping the finished groups, to the same images.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import synq_hf.synthesis.api as api
from synq_hf.distributed import Processes, processes
from synq_hf.evaluation import evaluate_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _shard_common as common  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _assert_same(a: dict, b: dict) -> None:
    assert torch.equal(a["pixels"], b["pixels"]) and torch.equal(a["labels"], b["labels"])
    assert a["restarts"] == b["restarts"] and a["history"] == b["history"]


def _count_units(monkeypatch) -> list[list[int]]:
    calls: list[list[int]] = []
    real = api._init_chunk

    def counting(chunk, *args, **kwargs):
        calls.append(list(chunk))
        return real(chunk, *args, **kwargs)

    monkeypatch.setattr(api, "_init_chunk", counting)
    return calls


def _stopping_at(group: int):
    """``_init_chunk`` that raises when it is asked for ``group`` (a process stopping there)."""
    real = api._init_chunk

    def failing(chunk, *args, **kwargs):
        if group in chunk:
            raise RuntimeError("stop")
        return real(chunk, *args, **kwargs)

    return failing


def test_processes_share_round_robin_and_alone_is_a_no_op() -> None:
    assert Processes(1, 3).share(list(range(8))) == [1, 4, 7]
    alone = processes()
    assert (alone.rank, alone.world, alone.is_main) == (0, 1, True)
    assert alone.gather("x") == ["x"] and alone.from_main(5) == 5
    alone.check(None)


def test_single_process_resume_skips_finished_units(tmp_path, monkeypatch) -> None:
    teacher = common.teacher()
    whole = common.as_dict(common.synthesize(teacher, per_forward=2))
    with monkeypatch.context() as m:
        m.setattr(api, "_init_chunk", _stopping_at(2))
        with pytest.raises(RuntimeError, match="stop"):
            common.synthesize(teacher, per_forward=2, checkpoint_dir=tmp_path / "store")
    assert sorted(p.name for p in (tmp_path / "store").glob("group-*")) == ["group-000000.safetensors",
                                                                          "group-000001.safetensors"]
    calls = _count_units(monkeypatch)
    resumed = common.as_dict(common.synthesize(teacher, per_forward=2, checkpoint_dir=tmp_path / "store"))
    assert calls == [[2, 3], [4]]
    _assert_same(resumed, whole)


def test_two_cpu_ranks_match_one_process(tmp_path, monkeypatch) -> None:
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    teacher = common.teacher()
    reference = {gpf: common.as_dict(common.synthesize(teacher, per_forward=gpf)) for gpf in (1, 2)}
    model, dataset, data_config = common.evaluation_case()
    evaluation = evaluate_model(model, dataset, data_config, batch_size=4, progress=False)

    # A single process stops after groups 0 and 1; the worker resumes that store under two processes.
    with monkeypatch.context() as m:
        m.setattr(api, "_init_chunk", _stopping_at(2))
        with pytest.raises(RuntimeError):
            common.synthesize(teacher, per_forward=1, checkpoint_dir=tmp_path / "store-one")

    worker = Path(__file__).parent / "_shard_worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([torchrun, "--nproc_per_node", "2", "--standalone", str(worker), str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]

    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r in (0, 1):
        for gpf in (1, 2):  # every rank holds all images, identical to one process
            _assert_same(torch.load(tmp_path / f"rank{r}-gpf{gpf}.pt"), reference[gpf])
        _assert_same(torch.load(tmp_path / f"rank{r}-resumed.pt"), reference[1])
        assert records[r]["evaluation"] == evaluation
        # process 1 (groups 1 and 3) failed on group 3; both processes say so
        assert records[r]["failure"] == ("process 1 of 2: synthesis group(s) [3] failed: RuntimeError: "
                                         "injected failure")
    # two processes resumed the one-process store: only groups 2, 3, 4 ran, shared out round robin
    assert records[0]["resumed_groups"] == [[2], [4]] and records[1]["resumed_groups"] == [[3]]

    # the store the two processes left when one failed: a single process finishes it, running only group 3
    assert sorted(p.name for p in (tmp_path / "store-two").glob("group-*")) == [
        f"group-{g:06d}.safetensors" for g in (0, 1, 2, 4)]
    calls = _count_units(monkeypatch)
    resumed = common.as_dict(common.synthesize(teacher, per_forward=1, checkpoint_dir=tmp_path / "store-two"))
    assert calls == [[3]]
    _assert_same(resumed, reference[1])


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_recipe_on_two_localhost_machines(tmp_path) -> None:
    """Two ``accelerate launch`` process groups (machine ranks 0 and 1) on loopback run one recipe with --smoke."""
    from synq_hf.recipe import smoke_env

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "2",
              "--num_processes", "2", "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()),
              "--mixed_precision", "no", "--dynamo_backend", "no"]
    script = [str(repo / "recipes" / "cifar10_resnet20_w4a4.py"), "--smoke", "--out", str(out)]
    env = {**smoke_env(), "PYTHONPATH": str(repo), "CUDA_VISIBLE_DEVICES": ""}
    procs = [subprocess.Popen([*launch, "--machine_rank", str(r), *script], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in (1, 0)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs[1][-3000:] + logs[0][-3000:]
    result = json.loads((out / "results.json").read_text())
    assert result["method"] == "synq" and result["num_samples"] == 24
    assert result["training"]["batch_size"] == 8  # 4 per process x 2 processes: data-parallel fine-tuning
    assert result["synthesis"]["num_images"] == 16
    # only the main process printed the results and saved; the group checkpoints are gone after success
    assert sum('"quantized_layers"' in log for log in logs) == 1
    assert not (tmp_path / ".out-synthetic-groups").exists() and not (tmp_path / ".out-ckpt").exists()
