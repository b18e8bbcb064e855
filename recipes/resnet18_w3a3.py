"""ResNet-18 W3A3 (paper: FP 71.47, SynQ 52.02 top-1 on ImageNet; ablation baseline 43.63).

Run: `python recipes/resnet18_w3a3.py [--eval-data DATA] [--out DIR]`, multi-GPU: `accelerate launch recipes/resnet18_w3a3.py`,
code-path check in seconds: `python recipes/resnet18_w3a3.py --smoke`. Hyperparameters: ``PAPER_SETTINGS`` in synq_hf/recipe.py; all are recorded in the card.
"""

from synq_hf import SynQConfig
from synq_hf.recipe import PAPER_SETTINGS, Recipe, run_recipe

RECIPE = Recipe(
    name="resnet18_w3a3",
    model="timm/resnet18",
    description="ResNet-18 W3A3 (paper: FP 71.47, SynQ 52.02 top-1 on ImageNet; ablation baseline 43.63).",
    smoke_family="cnn",
    config=SynQConfig(w_bits=3, a_bits=3, **PAPER_SETTINGS["imagenet_cnn"]),
)

if __name__ == "__main__":
    raise SystemExit(run_recipe(RECIPE))
