"""Every recipe runs end to end with ``--smoke`` (tiny random model, tiny budget); one also under accelerate."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from synq_hf.recipe import Recipe, run_recipe, smoke_env

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("[!_]*.py"))
EXPECTED = {"deit_w4a8", "deit_w8a8", "swin_t_w4a8", "resnet18_w4a4", "resnet18_w3a3", "resnet50_w4a4",
            "mobilenetv2_w4a4", "cifar10_resnet20_w4a4", "cifar10_resnet20_w3a3", "cifar10_vit_w4a8",
            "cifar10_vit_w4a4", "cifar10_resnet20_reconstruct_w3a3"}


def _recipe(path: Path) -> Recipe:
    return runpy.run_path(str(path))["RECIPE"]


def test_all_recipes_are_present() -> None:
    assert {p.stem for p in RECIPES} == EXPECTED


@pytest.mark.slow
@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_smoke(path: Path, tmp_path: Path) -> None:
    recipe = _recipe(path)
    assert recipe.name == path.stem
    bits = path.stem.split("_")[-1].upper()
    assert f"W{recipe.config.w_bits}A{recipe.config.a_bits}" == bits
    results = []
    assert run_recipe(recipe, ["--smoke", "--out", str(tmp_path / "out")], on_result=results.append) == 0
    assert results[0]["method"] == recipe.config.method and results[0]["w_bits"] == recipe.config.w_bits
    card = (tmp_path / "out" / "README.md").read_text()
    assert path.stem in card  # the recipe is recorded in the card
    # after a successful save nothing is left beside --out: no synthesis groups, no Trainer checkpoints
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_recipe_records_every_hyperparameter() -> None:
    for path in RECIPES:
        config = _recipe(path).config
        for field in ("num_images", "synthesis_iterations", "lpf_d0", "tau", "lambda_ce", "lambda_cam",
                      "kd_temperature", "learning_rate", "train_batch_size", "seed"):
            assert getattr(config, field) is not None, (path.stem, field)


def test_recipe_refuses_non_empty_output(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("x")
    with pytest.raises(SystemExit, match="not empty"):
        run_recipe(_recipe(RECIPES[0]), ["--smoke", "--out", str(tmp_path / "out")])


@pytest.mark.slow
def test_recipe_runs_under_accelerate_launch(tmp_path: Path) -> None:
    script = next(p for p in RECIPES if p.stem == "cifar10_resnet20_w4a4")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script),
           "--smoke", "--out", str(out)]
    proc = subprocess.run(cmd, env=smoke_env(), capture_output=True, text=True, timeout=600,
                          cwd=script.parent.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["method"] == "synq"
    assert os.path.exists(out / "model.safetensors")
