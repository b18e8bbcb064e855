"""Time to a quantized model: per recipe, measured per-iteration synthesis and per-step fine-tuning times on
random-weight timm models, their ratios to the floor, peak GPU memory, and the projection to the recipe's full
schedule (the paper's: CNNs 5,120 images x 1,000 iterations and 100 epochs at batch 16; ViTs 32 images).

    python benchmarks/time_to_model.py --json --device cuda --precision fp32,bf16      # the five ImageNet recipes
    python benchmarks/time_to_model.py --json --tiny                                   # CPU smoke: tiny models

Per recipe and precision one JSON object: the synthesis iteration (the engine's step at the recipe's
``synthesis_batch_size`` and ``synthesis_groups_per_forward``) and its floor (teacher forward + backward to the
pixels), the fine-tuning step (``SynQTrainer.compute_loss`` + backward; + clipping and SGD = ``train_step_s``) and
its floor (teacher forward + student forward/backward), the batch's collation and copy (``data_s``), the measured
calibration, and ``projected_s`` = synthesis units x iterations x iteration + calibration + steps x (train step +
data); the once-only low-pass filter of the synthetic set, model loading and evaluation are not included. Times come from the card the script ran on; the ratios compare across
cards. ``--tiny`` swaps every teacher for the tiny random model of its family (the recipes' ``--smoke`` models)
at a tiny batch: a code-path check, not a measurement.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmarks, also when imported by tests

import finetune_speed  # noqa: E402
import synthesis_speed  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402

from synq_hf.architectures import get_spec  # noqa: E402

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"
DEFAULT_RECIPES = "resnet18_w4a4,resnet50_w4a4,mobilenetv2_w4a4,deit_w4a8,swin_t_w4a8"
AUTHORS_REFERENCE = {
    "resnet18": {"epoch_s": 113.0, "card": "RTX 3090", "source": "the SynQ authors' figure on their card"},
}
"""Published fine-tuning times to print beside our projection (their figure, their card, their code)."""


def load_recipe(name: str):  # noqa: ANN201
    """The ``RECIPE`` object of ``recipes/<name>.py``."""
    path = RECIPES_DIR / f"{name}.py"
    if not path.is_file():
        known = sorted(p.stem for p in RECIPES_DIR.glob("*.py"))
        raise SystemExit(f"unknown recipe {name!r}; choose from {known}")
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RECIPE


def tiny_teacher(family: str) -> tuple[torch.nn.Module, int]:
    """The tiny random model of a family (as the recipes' ``--smoke`` runs use) and its input side."""
    torch.manual_seed(0)
    if family == "cnn":
        return timm.create_model("test_resnet", pretrained=False, num_classes=10).eval(), 32
    if family == "vit":
        return timm.create_model("test_vit", pretrained=False, num_classes=10, img_size=32).eval(), 32
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=10, embed_dim=24,
                             depths=(1, 1), num_heads=(1, 2), img_size=56, window_size=7).eval(), 56


def imagenet_teacher(model_id: str) -> tuple[torch.nn.Module, int]:
    """A random-weight timm model of a recipe's ``timm/<name>`` id (nothing is downloaded) and its input side."""
    if not model_id.startswith("timm/"):
        raise SystemExit(f"{model_id!r} is not a timm/<name> model: this report covers the ImageNet recipes")
    model = timm.create_model(model_id.split("/", 1)[1], pretrained=False).eval()
    return model, int(model.pretrained_cfg["input_size"][-1])


def project(cfg, iteration_s: float, train_step_s: float, calibration_s: float,  # noqa: ANN001
            data_s: float = 0.0) -> dict[str, float]:
    """Seconds of the recipe's full schedule from the measured times (see the module docstring)."""
    groups = math.ceil(cfg.num_images / cfg.synthesis_batch_size)
    units = math.ceil(groups / cfg.synthesis_groups_per_forward)
    steps = math.ceil(cfg.num_images / cfg.train_batch_size) * cfg.num_epochs
    if cfg.max_steps:
        steps = min(steps, cfg.max_steps)
    synthesis = units * cfg.synthesis_iterations * iteration_s
    finetune = steps * (train_step_s + data_s)
    return {"synthesis_units": units, "finetune_steps": int(steps), "synthesis_s": round(synthesis, 1),
            "calibration_s": round(calibration_s, 2), "finetune_s": round(finetune, 1),
            "epoch_s": round(math.ceil(cfg.num_images / cfg.train_batch_size) * (train_step_s + data_s), 2),
            "projected_s": round(synthesis + calibration_s + finetune, 1),
            "projected_h": round((synthesis + calibration_s + finetune) / 3600, 3)}


def report(name: str, device: str, precision: str, tiny: bool, repeats: int, warmup: int) -> dict:
    """One recipe at one precision: measured times, ratios, peak memory and the projection."""
    recipe = load_recipe(name)
    teacher, size = tiny_teacher(recipe.smoke_family) if tiny else imagenet_teacher(recipe.model)
    family = get_spec(teacher).family
    cfg = recipe.config.resolve(family=family, input_size=size)
    cfg = cfg.replace(synthesis_precision=precision, finetune_precision=precision)
    synth_batch, train_batch = (4, 4) if tiny else (cfg.synthesis_batch_size, cfg.train_batch_size)
    if tiny:
        cfg = cfg.replace(calibration_num_images=8, calibration_batch_size=4)
    dev = torch.device(device)
    synth = synthesis_speed.measure(name, teacher, synth_batch, size, dev, repeats,
                                    groups=cfg.synthesis_groups_per_forward, precision=precision, warmup=warmup)
    tune = finetune_speed.bench(name, repeats, warmup, device, precision, train_batch, size, teacher=teacher, cfg=cfg)
    calibration_s = tune["calibration_s"] * cfg.calibration_num_images / tune["calibration_images"]
    row = {
        "recipe": name, "model": recipe.model, "tiny": tiny, "device": device, "gpu": synth["gpu"],
        "precision": precision, "size": size,
        "synthesis": {k: synth[k] for k in ("batch", "groups", "kde", "iteration_s", "floor_s", "ratio",
                                            "median_ratio", "images_per_s", "peak_memory_bytes",
                                            "host_syncs_per_iteration")},
        "finetune": {k: tune[k] for k in ("batch", "step_s", "floor_s", "ratio", "optimizer_s", "train_step_s",
                                          "data_s", "peak_memory_bytes", "host_syncs_per_step", "finite")},
        "schedule": {"num_images": cfg.num_images, "synthesis_batch_size": cfg.synthesis_batch_size,
                     "synthesis_iterations": cfg.synthesis_iterations, "train_batch_size": cfg.train_batch_size,
                     "num_epochs": cfg.num_epochs, "calibration_num_images": cfg.calibration_num_images},
        "projection": project(cfg, synth["iteration_s"], tune["train_step_s"], calibration_s, tune["data_s"]),
        "peak_memory_bytes": max((m for m in (synth["peak_memory_bytes"], tune["peak_memory_bytes"]) if m),
                                 default=None),
    }
    arch = recipe.model.split("/", 1)[-1]
    if arch in AUTHORS_REFERENCE and not tiny:
        row["reference"] = AUTHORS_REFERENCE[arch]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", default=DEFAULT_RECIPES, help=f"comma list of recipes/ names ({DEFAULT_RECIPES})")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="fp32", help="comma list of fp32, bf16, fp16 (fp16: CUDA only)")
    parser.add_argument("--tiny", action="store_true", help="tiny random models at tiny batches (CPU smoke test)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", action="store_true", help="one JSON object per recipe and precision")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available on this machine")
    for name in [r.strip() for r in args.recipes.split(",") if r.strip()]:
        for precision in [p.strip() for p in args.precision.split(",") if p.strip()]:
            row = report(name, args.device, precision, args.tiny, args.repeats, args.warmup)
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                p = row["projection"]
                print(f"{name} [{precision}, {row['gpu'] or row['device']}]: synthesis {p['synthesis_s']:.0f} s "
                      f"(ratio {row['synthesis']['ratio']}), fine-tuning {p['finetune_s']:.0f} s "
                      f"(ratio {row['finetune']['ratio']}), total {p['projected_h']:.2f} h", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
