"""DeiT-S W4A8 (paper: FP 79.85, PSAQ-ViT 72.04, SynQ 72.28 top-1 on ImageNet).

Run: `python recipes/deit_w4a8.py [--eval-data DATA] [--out DIR]`, multi-GPU: `accelerate launch recipes/deit_w4a8.py`,
code-path check in seconds: `python recipes/deit_w4a8.py --smoke`. Every hyperparameter is below and in the card.
"""

from synq_hf import SynQConfig
from synq_hf.recipe import Recipe, run_recipe

RECIPE = Recipe(
    name="deit_w4a8",
    model="timm/deit_small_patch16_224",
    description="DeiT-S W4A8 (paper: FP 79.85, PSAQ-ViT 72.04, SynQ 72.28 top-1 on ImageNet).",
    smoke_family="vit",
    config=SynQConfig(
        w_bits=4,
        a_bits=8,
        num_images=32,  # PSAQ-ViT synthesizes 32 images
        synthesis_iterations=1000,
        synthesis_batch_size=32,
        lpf_d0=80.0,  # authors default
        tau=0.5,  # ImageNet setting
        lambda_ce=0.5,
        lambda_cam=50.0,
        kd_temperature=1.0,  # the paper's plain KL
        learning_rate=1e-5,
        train_batch_size=16,
        num_epochs=100,
        seed=0,
    ),
)

if __name__ == "__main__":
    raise SystemExit(run_recipe(RECIPE))
