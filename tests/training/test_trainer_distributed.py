"""Two CPU ranks under torchrun: training runs, ranks hold identical students, the result is saved once."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch

from synq_hf.training import STUDENT_WEIGHTS


def test_two_cpu_ranks_stay_in_sync(tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    out = tmp_path / "out"
    worker = Path(__file__).resolve().parents[1] / "_ddp_worker.py"
    proc = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--standalone", str(worker), str(out)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    r0 = safetensors.torch.load_file(out / "rank0.safetensors")
    r1 = safetensors.torch.load_file(out / "rank1.safetensors")
    assert r0.keys() == r1.keys() and all(torch.equal(r0[k], r1[k]) for k in r0)
    saved = safetensors.torch.load_file(out / STUDENT_WEIGHTS)
    assert all(torch.equal(saved[k], r0[k]) for k in saved)
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["rank0.safetensors", "rank1.safetensors",
                                                                 STUDENT_WEIGHTS]
    # the students trained (the ranks hold the same *changed* weights, not the untouched start) ...
    for rank, weights in enumerate((r0, r1)):
        before = torch.load(out / f"student_before_rank{rank}.pt")
        changed = [k for k in weights if k.endswith(".weight") and k in before and not torch.equal(weights[k], before[k])]
        assert len(changed) >= 10, changed
    # ... while each rank's teacher stayed exactly as it was
    for rank in (0, 1):
        t_before = torch.load(out / f"teacher_before_rank{rank}.pt")
        t_after = torch.load(out / f"teacher_after_rank{rank}.pt")
        assert all(torch.equal(t_before[k], t_after[k]) for k in t_before)
    assert "loss_kd" in proc.stdout + proc.stderr
