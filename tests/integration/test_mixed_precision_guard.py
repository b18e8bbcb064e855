"""CI guard of issue 26's headline: at a reduced budget, mixed precision at the packed size of uniform 3-bit weights
beats uniform 3-bit weights (same 4-bit activations, synthetic set, steps and evaluation) by a margin."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "mixed_precision.py"
GUARD_MARGIN = 1.0
"""Top-1 points mixed + SynQ must gain over uniform W3A4 SynQ at the guard schedule (BENCHMARKS.md, issue 26)."""
GUARD = ["--budget", "guard", "--images", "128", "--iterations", "100", "--steps", "60", "--eval-every", "0",
         "--set", "sensitivity_num_images=64", "--set", "train_batch_size=64", "--set", "calibration_num_images=128",
         "--json", "--no-progress", "--threads", "1", "--no-checks"]


def _load():
    spec = importlib.util.spec_from_file_location("mixed_precision_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.guard
def test_mixed_at_the_w3_size_beats_uniform_w3(shared_data, tmp_path, capsys):
    bench = _load()
    synthetic = str(tmp_path / "synthetic")
    assert bench.main([*GUARD, "--synthetic", synthetic, "--bits", "W3A4"]) == 0
    uniform = json.loads(capsys.readouterr().out)
    assert bench.main([*GUARD, "--synthetic", synthetic, "--size-budget", "w3", "--a-bits", "4"]) == 0
    mixed = json.loads(capsys.readouterr().out)
    assert mixed["weight_bytes"] <= uniform["weight_bytes"], (mixed["weight_bytes"], uniform["weight_bytes"])
    assert not mixed["nonfinite"] and not uniform["nonfinite"]
    assert mixed["ptq_search_top1"] >= uniform["ptq_search_top1"] + GUARD_MARGIN, (mixed, uniform)
    assert mixed["synq_top1"] >= uniform["synq_top1"] + GUARD_MARGIN, (mixed["synq_top1"], uniform["synq_top1"])
