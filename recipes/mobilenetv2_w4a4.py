"""MobileNetV2 W4A4 (paper: FP 73.03, SynQ 67.27 top-1 on ImageNet).

Run: `python recipes/mobilenetv2_w4a4.py [--eval-data DATA] [--out DIR]`, multi-GPU: `accelerate launch recipes/mobilenetv2_w4a4.py`,
code-path check in seconds: `python recipes/mobilenetv2_w4a4.py --smoke`. Hyperparameters: ``PAPER_SETTINGS`` in synq_hf/recipe.py; all are recorded in the card.
"""

from synq_hf import SynQConfig
from synq_hf.recipe import PAPER_SETTINGS, Recipe, run_recipe

RECIPE = Recipe(
    name="mobilenetv2_w4a4",
    model="timm/mobilenetv2_100",
    description="MobileNetV2 W4A4 (paper: FP 73.03, SynQ 67.27 top-1 on ImageNet).",
    smoke_family="cnn",
    config=SynQConfig(w_bits=4, a_bits=4, **PAPER_SETTINGS["imagenet_cnn"]),
)

if __name__ == "__main__":
    raise SystemExit(run_recipe(RECIPE))
