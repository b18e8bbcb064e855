"""Swin-T W4A8 (paper: FP 81.35, PSAQ-ViT 69.78, SynQ 70.76 top-1 on ImageNet).

Run: `python recipes/swin_t_w4a8.py [--eval-data DATA] [--out DIR]`, multi-GPU: `accelerate launch recipes/swin_t_w4a8.py`,
code-path check in seconds: `python recipes/swin_t_w4a8.py --smoke`. Hyperparameters: ``PAPER_SETTINGS`` in synq_hf/recipe.py; all are recorded in the card.
"""

from synq_hf import SynQConfig
from synq_hf.recipe import PAPER_SETTINGS, Recipe, run_recipe

RECIPE = Recipe(
    name="swin_t_w4a8",
    model="timm/swin_tiny_patch4_window7_224",
    description="Swin-T W4A8 (paper: FP 81.35, PSAQ-ViT 69.78, SynQ 70.76 top-1 on ImageNet).",
    smoke_family="swin",
    config=SynQConfig(w_bits=4, a_bits=8, **PAPER_SETTINGS["imagenet_vit"]),
)

if __name__ == "__main__":
    raise SystemExit(run_recipe(RECIPE))
