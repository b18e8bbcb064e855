"""Recipe runner: the shared body of every ``recipes/*.py`` script (paper settings + ``--smoke``).

A recipe names a teacher and a full ``SynQConfig``; ``run_recipe`` parses the common flags, runs
synthesize → quantize → (PTQ baseline and evaluation when ``--eval-data`` is given) → save, and
records the recipe and every hyperparameter in the model card. It works under ``python`` and
``accelerate launch`` / ``torchrun`` (one machine or several): every process synthesizes its share of the
groups and gets the whole set, all processes fine-tune (DDP) and evaluate their slice of the data (counts
summed), and the main process alone saves and pushes. Block reconstruction (``method="reconstruct"``) runs on
one process and refuses a multi-process launch; a rerun resumes after its last finished block.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import PAPER_SETTINGS, SynQConfig

__all__ = ["PAPER_SETTINGS", "Recipe", "build_smoke_teacher", "run_recipe", "smoke_env"]

@dataclass(frozen=True)
class Recipe:
    """One published setting: teacher id, its SynQ config and the data to evaluate on (optional)."""

    name: str
    model: str
    config: SynQConfig
    description: str
    eval_data: str | None = None
    smoke_family: str = "cnn"  # which tiny random model --smoke uses: "cnn", "vit" or "swin"


SMOKE_OVERRIDES = dict(num_images=16, synthesis_batch_size=8, synthesis_iterations=2, calibration_num_images=8,
                       calibration_batch_size=8, train_batch_size=4, max_steps=2, reconstruct_iterations=2,
                       reconstruct_num_images=16, reconstruct_batch_size=8, reconstruct_synq_steps=2)


def build_smoke_teacher(family: str, folder: Path) -> str:
    """Write a tiny random-init timm model (CNN, ViT or Swin) as a ``local-dir:`` folder; return its id.

    Smoke runs check that a recipe's code path works end to end in seconds, not accuracy.
    """
    import timm
    import torch
    from timm.models import save_for_hf

    kwargs = {
        "cnn": ("test_resnet", dict(num_classes=10)),
        "vit": ("test_vit", dict(num_classes=10)),
        "swin": ("swin_tiny_patch4_window7_224", dict(num_classes=10, embed_dim=24, depths=(1, 1),
                                                        num_heads=(1, 2), img_size=56, window_size=7)),
    }[family]
    with torch.random.fork_rng():  # the same weights in every process of a multi-process smoke run
        torch.manual_seed(0)
        model = timm.create_model(kwargs[0], pretrained=False, **kwargs[1]).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model_args = kwargs[1] if family == "swin" else {"num_classes": 10}
    save_for_hf(model, str(folder), model_args=model_args, safe_serialization=True)
    return f"local-dir:{folder}"


def build_smoke_eval_data(folder: Path, num_images: int = 24) -> str:
    """Write a tiny seeded set of random labelled 32x32 images (``save_to_disk``) so smoke runs evaluate too."""
    import datasets
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(num_images)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    data = datasets.Dataset.from_dict({"image": images, "label": rng.integers(0, 10, num_images).tolist()},
                                      features=features)
    data.save_to_disk(str(folder))
    return str(folder)


def _parser(recipe: Recipe) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=f"{recipe.name}: {recipe.description}",
        epilog=f"example:\n  python recipes/{recipe.name}.py --eval-data DATA --out runs/{recipe.name}\n"
               f"  accelerate launch recipes/{recipe.name}.py --out runs/{recipe.name}\n"
               f"  python recipes/{recipe.name}.py --smoke   # tiny model, seconds",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default=recipe.model, help=f"teacher id or folder (default: {recipe.model})")
    p.add_argument("--eval-data", default=recipe.eval_data, help="real labelled data for float/PTQ/SynQ top-1")
    p.add_argument("--out", default=None, help=f"output folder (default: runs/{recipe.name})")
    p.add_argument("--synthetic", default=None, help="reuse a synthetic dataset folder instead of synthesizing")
    p.add_argument("--max-steps", type=int, default=None, help="cap fine-tuning steps")
    p.add_argument("--seed", type=int, default=None, help="override the recipe's seed")
    p.add_argument("--smoke", action="store_true", help="tiny random model and budget: checks the code path")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--push-to-hub", metavar="REPO", default=None, help="upload the result (needs a token)")
    return p


def run_recipe(recipe: Recipe, argv: list[str] | None = None,
               on_result: Callable[[dict], None] | None = None) -> int:
    """Run ``recipe`` with command-line ``argv``; returns the exit code (0 on success)."""
    from .distributed import end_processes

    try:
        return _run_recipe(recipe, argv, on_result)
    finally:
        end_processes()  # a process group left to the interpreter's exit can abort a finished run


def _run_recipe(recipe: Recipe, argv: list[str] | None, on_result: Callable[[dict], None] | None) -> int:
    from datasets import load_from_disk

    from .data import load_image_dataset
    from .distributed import partial_state, processes
    from .quantizer import SynQQuantizer

    args = _parser(recipe).parse_args(argv)
    state, procs = partial_state(), processes()
    config = recipe.config
    if args.seed is not None:
        config = config.replace(seed=args.seed)
    tmp = tempfile.TemporaryDirectory(prefix="synq-recipe-") if args.smoke else None
    model_id, eval_data = args.model, args.eval_data
    if args.smoke:  # every process builds its own identical (seeded) tiny teacher and data: no shared disk needed
        config = config.replace(**SMOKE_OVERRIDES)
        model_id = build_smoke_teacher(recipe.smoke_family, Path(tmp.name) / "teacher")
        eval_data = build_smoke_eval_data(Path(tmp.name) / "eval")
    out = Path(args.out or (Path(tmp.name) / "out" if args.smoke else Path("runs") / recipe.name))
    refuse = (f"{out} exists and is not empty; pass --overwrite to replace it"
              if procs.is_main and out.exists() and any(out.iterdir()) and not args.overwrite else None)
    refuse = procs.from_main(refuse)
    if refuse:
        raise SystemExit(refuse)

    quantizer = SynQQuantizer.from_pretrained(model_id, config, device=state.device)
    quantizer.recipe = recipe.name
    groups = out.parent / f".{out.name}-synthetic-groups"  # per-group checkpoints: a rerun resumes
    if args.synthetic:
        quantizer.synthetic = load_from_disk(args.synthetic)
    else:
        quantizer.synthesize(progress=procs.is_main, checkpoint_dir=groups)
    finetune_dir = out.parent / f".{out.name}-ckpt"  # the Trainer's checkpoints, removed after a successful save
    if config.method == "reconstruct":  # one process; a rerun resumes after the last finished block
        quantizer.reconstruct(output_dir=finetune_dir, resume=True, progress=procs.is_main)
    else:
        quantizer.quantize(max_steps=args.max_steps or config.max_steps, output_dir=finetune_dir)
    if eval_data:
        with state.main_process_first():  # datasets builds its cache once
            load_image_dataset(eval_data)
        progress = procs.is_main
        quantizer.evaluate(eval_data, which=quantizer.method, progress=progress)
        quantizer.ptq(progress=progress)
        quantizer.evaluate(eval_data, which="ptq", progress=progress)
        quantizer.evaluate(eval_data, which="float", progress=progress)
    if procs.is_main:
        quantizer.save_pretrained(out, overwrite=args.overwrite or args.smoke)
        result = quantizer.results_json()
        print(json.dumps(result, indent=2))
        if on_result is not None:
            on_result(result)
        if args.push_to_hub:
            print(quantizer.push_to_hub(args.push_to_hub, save_dir=None))
    procs.barrier()  # every process is done with the work folders before the main process removes them
    if procs.is_main:
        for work in (groups, finetune_dir):
            shutil.rmtree(work, ignore_errors=True)
    if tmp is not None:
        tmp.cleanup()
    return 0


def smoke_env() -> dict[str, str]:
    """Environment for subprocess smoke runs: offline, few threads."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1")
    return env
