"""DeiT-S W8A8 (near-lossless setting for ViTs).

Run: `python recipes/deit_w8a8.py [--eval-data DATA] [--out DIR]`, multi-GPU: `accelerate launch recipes/deit_w8a8.py`,
code-path check in seconds: `python recipes/deit_w8a8.py --smoke`. Hyperparameters: ``PAPER_SETTINGS`` in synq_hf/recipe.py; all are recorded in the card.
"""

from synq_hf import SynQConfig
from synq_hf.recipe import PAPER_SETTINGS, Recipe, run_recipe

RECIPE = Recipe(
    name="deit_w8a8",
    model="timm/deit_small_patch16_224",
    description="DeiT-S W8A8 (near-lossless setting for ViTs).",
    smoke_family="vit",
    config=SynQConfig(w_bits=8, a_bits=8, **PAPER_SETTINGS["imagenet_vit"]),
)

if __name__ == "__main__":
    raise SystemExit(run_recipe(RECIPE))
