"""benchmarks/cifar10_accuracy.py at the micro ``smoke`` budget: the JSON rows have the documented format."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

GUARD_MARGIN = 3.0
"""Points SynQ must gain over clip-searched PTQ at the guard budget (W3A3); see BENCHMARKS.md for the measured gain."""
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cifar10_accuracy.py"


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("cifar10_accuracy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def test_parse_bits_and_overrides():
    bench = _load_benchmark()
    assert bench.parse_bits("W4A4, w3a3") == [(4, 4), (3, 3)]
    assert bench.parse_overrides(["lpf_d0=12", "lpf_mode=per_batch"]) == {"lpf_d0": 12, "lpf_mode": "per_batch"}
    with pytest.raises(SystemExit):
        bench.parse_bits("4bit")
    with pytest.raises(SystemExit):
        bench.parse_overrides(["lpf_d0"])


def test_paper_budget_is_the_papers_schedule():
    budget = _load_benchmark().BUDGETS["paper"]
    assert (budget.num_images, budget.iterations, budget.num_epochs, budget.max_steps) == (5120, 1000, 100.0, None)


@pytest.mark.smoke
def test_smoke_budget_prints_json_rows(shared_data, tmp_path, capsys):
    bench = _load_benchmark()
    synthetic = tmp_path / "synthetic"
    argv = ["--budget", "smoke", "--json", "--no-progress", "--threads", "1", "--synthetic", str(synthetic),
            "--data", "lossless,jpeg", "--ceiling", "--ceiling-images", "16"]
    assert bench.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    rows = result["rows"]
    assert [(r["bits"], r["data"]) for r in rows] == [
        ("W4A4", "lossless"), ("W4A4", "jpeg"), ("W3A3", "lossless"), ("W3A3", "jpeg")]
    accuracies = ("fp_top1", "ptq_minmax_top1", "ptq_search_top1", "synq_top1", "synq_best_top1", "ceiling_top1")
    for row in rows:
        assert set(row) == {"bits", "data", "seed", "nonfinite", "seconds", "synq_best_step", *accuracies}
        assert all(0.0 <= row[k] <= 100.0 for k in accuracies)
        assert row["seconds"] > 0 and row["nonfinite"] is False and row["synq_best_top1"] >= row["synq_top1"]
    assert rows[0]["fp_top1"] > 80.0  # the float teacher on its first 64 lossless test images
    assert (synthetic / "dataset_info.json").exists()
    assert {(s["bits"], s["data"]) for s in result["summary"]} == {(r["bits"], r["data"]) for r in rows}
    assert all(s["synq_top1_min"] <= s["synq_top1_mean"] for s in result["summary"])

    # The cached synthetic set is reused: an ablation run on it gives one row per variant.
    argv = ["--budget", "smoke", "--json", "--no-progress", "--threads", "1", "--synthetic", str(synthetic),
            "--bits", "W4A4", "--data", "lossless", "--ablation"]
    assert bench.main(argv) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["variant"] for r in rows] == list(bench.ABLATION)
    assert len({r["fp_top1"] for r in rows}) == 1


@pytest.mark.slow
@pytest.mark.guard
def test_synq_beats_the_ptq_it_starts_from(shared_data, capsys):
    """CI guard of the headline: at a reduced budget SynQ must clearly beat clip-searched PTQ on the same
    calibration images (the model fine-tuning starts from), and no loss may go non-finite."""
    bench = _load_benchmark()
    argv = ["--budget", "guard", "--bits", "W3A3", "--json", "--no-progress", "--threads", "1"]
    assert bench.main(argv) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert row["nonfinite"] is False
    assert row["ptq_search_top1"] > row["ptq_minmax_top1"], row  # the range search is worth its keep
    assert row["synq_top1"] >= row["ptq_search_top1"] + GUARD_MARGIN, row
