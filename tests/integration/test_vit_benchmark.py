"""benchmarks/vit_accuracy.py: the JSON row format (smoke budget) and the W4A4 guard that SynQ beats PSAQ-ViT."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "vit_accuracy.py"


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("vit_accuracy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_budgets_use_psaq_vits_32_images():
    bench = _load_benchmark()
    assert bench.BUDGETS["cpu"].num_images == 32 and bench.BUDGETS["guard"].num_images == 32
    assert bench.PSAQ == {"act_range_init": "minmax", "weight_range_init": "minmax"}


@pytest.mark.slow
def test_smoke_budget_prints_json_rows(shared_data, capsys):
    bench = _load_benchmark()
    argv = ["--budget", "smoke", "--bits", "W4A4", "--json", "--no-progress", "--threads", "1", "--ceiling",
            "--ceiling-images", "8", "--eval-every", "1"]
    assert bench.main(argv) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert "step 1: top-1" in captured.err  # --eval-every logs the fine-tuning trajectory
    (row,) = result["rows"]
    accuracies = ("fp_top1", "psaq_top1", "synq_top1", "ceiling_top1")
    assert set(row) == {"bits", "data", "seed", "nonfinite", "seconds", "synq_images", "psaq_images", "agreement",
                        "calibrate_filtered", *accuracies}
    assert row["calibrate_filtered"] is False  # the ViT default: ranges from the raw synthetic images
    assert all(0.0 <= row[k] <= 100.0 for k in accuracies) and 0.0 <= row["agreement"] <= 1.0
    assert row["fp_top1"] > 60.0  # the float ViT on its first 64 lossless test images
    (summary,) = result["summary"]
    assert summary["synq_drop_mean"] == round(row["fp_top1"] - row["synq_top1"], 2)


@pytest.mark.slow
@pytest.mark.guard
def test_synq_beats_psaq_vit_at_w4a4(shared_data, capsys):
    """CI guard: at a reduced budget SynQ must beat PSAQ-ViT (min-max PTQ on the same 32 synthetic images) at W4A4
    on the shared ViT, without a non-finite loss."""
    bench = _load_benchmark()
    argv = ["--budget", "guard", "--bits", "W4A4", "--json", "--no-progress", "--threads", "1"]
    assert bench.main(argv) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert row["nonfinite"] is False
    assert row["synq_top1"] > row["psaq_top1"], row


@pytest.mark.slow
def test_synthesis_only_reports_label_agreement(shared_data, capsys):
    bench = _load_benchmark()
    argv = ["--budget", "smoke", "--synthesis-only", "--num-images", "4", "--json", "--no-progress", "--threads", "1"]
    assert bench.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    (row,) = result["rows"]
    assert set(row) == {"seed", "images", "iterations", "agreed", "agreement", "synthesis_seconds"}
    assert row["images"] == 4 and row["iterations"] == 2 and 0 <= row["agreed"] <= 4
    assert row["agreement"] == round(row["agreed"] / 4, 4) and result["summary"] == []
