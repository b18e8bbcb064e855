"""benchmarks/pipeline_fingerprint.py: the same run twice gives the same hashes (the check refactors rely on)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "pipeline_fingerprint.py"


@pytest.mark.slow
def test_fingerprint_is_deterministic_and_names_every_stage(shared_data):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1"}
    cmd = [sys.executable, str(SCRIPT), "--json", "--teacher", str(shared_data / "teachers" / "cifar10-resnet20"),
           "--data", str(shared_data / "cifar10" / "test-lossless-first1017.parquet"), "--images", "8",
           "--iterations", "2", "--steps", "1", "--eval-images", "8"]
    runs = [subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr[-2000:]
    first, second = (json.loads(r.stdout) for r in runs)
    hashes = {k: v for k, v in first.items() if k.endswith("_sha256")}
    assert set(hashes) == {"synthetic_pixels_sha256", "eval_inputs_sha256", "student_logits_sha256"}
    assert all(len(v) == 64 for v in hashes.values())
    assert first == second
