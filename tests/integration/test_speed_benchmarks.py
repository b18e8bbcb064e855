"""Issue 24's benchmarks on CPU at tiny sizes: synthesis_speed / finetune_speed / time_to_model print their JSON rows,
the projection is the recipe's schedule times the measured steps, summarize.py's checks, and run.sh end to end."""

import importlib.util
import json
import math
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"

pytestmark = pytest.mark.usefixtures("one_thread")


def _load(name: str, path: Path | None = None):
    path = path or BENCH / f"{name}.py"
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # the scripts import their siblings
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _rows(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def test_synthesis_and_finetune_speed_print_rows_per_precision_and_kde(capsys):
    synthesis = _load("synthesis_speed")
    assert synthesis.main(["--json", "--models", "test_vit", "--size", "32", "--batch", "2", "--repeats", "1",
                           "--warmup", "0", "--precision", "fp32,bf16", "--kde", "loop,fused"]) == 0
    rows = _rows(capsys)
    assert [(r["precision"], r["kde"]) for r in rows] == [("fp32", "loop"), ("fp32", "fused"), ("bf16", "loop"),
                                                           ("bf16", "fused")]
    assert all(r["iteration_s"] > 0 and r["floor_s"] > 0 and r["device"] == "cpu" for r in rows)
    assert rows[0]["ratio"] == pytest.approx(rows[0]["iteration_s"] / rows[0]["floor_s"], rel=1e-2)
    finetune = _load("finetune_speed")
    assert finetune.main(["--json", "--models", "test_resnet", "--size", "32", "--batch", "2", "--repeats", "1",
                          "--warmup", "0", "--precision", "bf16"]) == 0
    rows = _rows(capsys)  # a CNN: one row per Grad-CAM layer (issue 21), each against its own floor
    assert [r["cam_layer"] for r in rows] == ["last_conv", "pool"]
    for row in rows:
        assert row["precision"] == "bf16" and row["batch"] == 2 and row["finite"]
        assert row["train_step_s"] == pytest.approx(row["step_s"] + row["optimizer_s"], abs=2e-5)
    with pytest.raises(SystemExit, match="--cam-layers"):
        finetune.main(["--models", "test_resnet", "--cam-layers", "stage4"])


def test_time_to_model_projects_the_recipe_schedule(capsys):
    ttm = _load("time_to_model")
    assert ttm.main(["--json", "--tiny", "--recipes", "resnet18_w4a4,deit_w4a8", "--precision", "bf16",
                     "--repeats", "1", "--warmup", "0"]) == 0
    rows = _rows(capsys)
    assert [r["recipe"] for r in rows] == ["resnet18_w4a4", "deit_w4a8"]
    cnn, vit = rows
    # the paper's schedules: CNNs 5,120 images in 20 groups of 256 x 1,000 iterations, 320 steps x 100 epochs;
    # ViTs (PSAQ-ViT) 32 images in one group, 2 steps x 100 epochs
    assert (cnn["projection"]["synthesis_units"], cnn["projection"]["finetune_steps"]) == (20, 32000)
    assert (vit["projection"]["synthesis_units"], vit["projection"]["finetune_steps"]) == (1, 200)
    for r in rows:
        p, s, f = r["projection"], r["synthesis"], r["finetune"]
        assert p["synthesis_s"] == pytest.approx(p["synthesis_units"] * 1000 * s["iteration_s"], rel=1e-3, abs=0.1)
        assert p["finetune_s"] == pytest.approx(p["finetune_steps"] * (f["train_step_s"] + f["data_s"]), rel=1e-3,
                                                abs=0.1)
        assert p["projected_s"] == pytest.approx(p["synthesis_s"] + p["calibration_s"] + p["finetune_s"], abs=0.2)
        assert r["tiny"] and r["precision"] == "bf16" and f["finite"]
    assert vit["synthesis"]["kde"] == "loop"  # CPU: the loop form (auto)
    with pytest.raises(SystemExit, match="unknown recipe"):
        ttm.load_recipe("resnet19_w4a4")


def _ttm_row(recipe, precision, synth_ratio, ft_ratio, iteration_s, train_step_s, hours):
    return {"recipe": recipe, "precision": precision, "gpu": "H100",
            "synthesis": {"ratio": synth_ratio, "iteration_s": iteration_s, "floor_s": iteration_s / synth_ratio},
            "finetune": {"ratio": ft_ratio, "batch": 16, "step_s": train_step_s, "floor_s": train_step_s / ft_ratio,
                         "train_step_s": train_step_s},
            "projection": {"projected_h": hours, "synthesis_s": 1.0, "calibration_s": 1.0, "finetune_s": 1.0,
                           "epoch_s": 1.0},
            "peak_memory_bytes": 2**30}


def test_summarize_checks_thresholds_and_fidelity(tmp_path):
    summarize = _load("summarize", BENCH / "gpu" / "summarize.py")
    rows = [_ttm_row("resnet18_w4a4", "fp32", 1.1, 1.2, 0.04, 0.020, 0.9),
            _ttm_row("resnet18_w4a4", "bf16", 1.2, 1.4, 0.02, 0.012, 0.5),
            _ttm_row("resnet50_w4a4", "fp32", 1.1, 1.2, 0.10, 0.040, 2.0),
            _ttm_row("resnet50_w4a4", "bf16", 1.1, 1.2, 0.04, 0.025, 1.0),
            _ttm_row("deit_w4a8", "fp32", 1.4, 1.2, 0.03, 0.02, 0.1)]
    (tmp_path / "ttm.json").write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    for precision, tops in (("fp32", (90.0, 91.0, 92.0)), ("bf16", (89.2, 90.0, 90.4))):
        for seed, top in enumerate(tops):
            result = {"rows": [{"bits": "W4A4", "data": "lossless", "synq_top1": top}]}
            (tmp_path / f"r20_{precision}_s{seed}.json").write_text(json.dumps(result, indent=1))
    # a run cut short: no stdout JSON, its rows only in the log
    (tmp_path / "vit_fp32_s0.json").write_text("")
    (tmp_path / "vit_fp32_s0.log").write_text('step 1\n{"bits": "W4A8", "data": "lossless", "synq_top1": 70.0}\n')
    fid = summarize.fidelity(summarize.fidelity_rows(tmp_path))
    r20 = {f["precision"]: f for f in fid if f["model"] == "r20"}
    assert (r20["fp32"]["mean"], r20["fp32"]["spread"], r20["bf16"]["mean"]) == (91.0, 2.0, 89.87)
    assert any(f["model"] == "vit" and f["mean"] == 70.0 for f in fid)
    found = {c["check"]: c for c in summarize.checks(rows, [], fid)}
    assert found["synthesis step/floor resnet18_w4a4 fp32"]["status"] == "pass"
    assert found["synthesis step/floor resnet18_w4a4 bf16"]["status"] == "FAIL"  # 1.2 > 1.15
    assert found["fine-tune step/floor resnet18_w4a4 batch 16 bf16"]["status"] == "FAIL"  # 1.4 > 1.3
    assert found["synthesis step/floor swin_t_w4a8 fp32"]["status"] == "missing"
    assert found["bf16 / fp32 synthesis throughput resnet50_w4a4"]["value"] == 2.5
    assert found["bf16 / fp32 finetune throughput resnet50_w4a4"]["status"] == "FAIL"  # 1.6x
    assert found["bf16 / fp32 synthesis throughput deit_w4a8"]["status"] == "missing"
    assert found["resnet18_w4a4 projected paper schedule fp32 (hours)"]["status"] == "pass"
    assert found["bf16 - fp32 mean top-1 r20 W4A4 lossless"]["status"] == "pass"  # -1.13 within the 2.0 spread
    assert found["bf16 - fp32 mean top-1 r20 W3A3 lossless"]["status"] == "missing"
    text = summarize.markdown(rows, [], [], fid, list(found.values()))
    assert "Card: H100" in text and "| r20 | W4A4 | lossless | bf16 | 3 | **89.87** |" in text


@pytest.mark.slow
def test_gpu_script_runs_end_to_end_at_tiny_sizes(shared_data, tmp_path):
    """benchmarks/gpu/run.sh with TINY=1 on CPU: every step of the device call, at tiny sizes (several minutes)."""
    out, r = tmp_path / "out", tmp_path / "r24"
    env = {**os.environ, "TINY": "1", "OUT": str(out), "R": str(r), "PY": sys.executable,
           "PYTHONPATH": str(BENCH.parent), "LIMIT": "1500", "SPEED_LIMIT": "900"}
    proc = subprocess.run(["bash", str(BENCH / "gpu" / "run.sh")], cwd=BENCH.parent, env=env, capture_output=True,
                          text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    status = (r / "gpu.txt").read_text()
    for step in ("ttm", "ft256", "kde"):
        assert f"{step} rc=0" in status, status
    summary = (out / "summary.md").read_text()
    assert "resnet18_w4a4" in summary and "| r20 | W4A4 | lossless | bf16 |" in summary
    assert "| vit | W4A8 | jpeg | fp32 |" in summary
    with tarfile.open(out / "r24.tgz") as tar:
        names = tar.getnames()
    assert any(n.endswith("ttm.json") for n in names) and any(n.endswith("r20_bf16_s0.json") for n in names)
    rows = [json.loads(line) for line in (r / "ttm.json").read_text().splitlines()]
    assert {(row["recipe"], row["precision"]) for row in rows} >= {("swin_t_w4a8", "bf16"), ("deit_w4a8", "fp32")}
    assert all(math.isfinite(row["projection"]["projected_s"]) for row in rows)
