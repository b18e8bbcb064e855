"""ResNet-50 W4A4 (paper: FP 77.73, SynQ 71.05 top-1 on ImageNet).

Run: `python recipes/resnet50_w4a4.py [--eval-data DATA] [--out DIR]`, multi-GPU: `accelerate launch recipes/resnet50_w4a4.py`,
code-path check in seconds: `python recipes/resnet50_w4a4.py --smoke`. Every hyperparameter is below and in the card.
"""

from synq_hf import SynQConfig
from synq_hf.recipe import Recipe, run_recipe

RECIPE = Recipe(
    name="resnet50_w4a4",
    model="timm/resnet50",
    description="ResNet-50 W4A4 (paper: FP 77.73, SynQ 71.05 top-1 on ImageNet).",
    smoke_family="cnn",
    config=SynQConfig(
        w_bits=4,
        a_bits=4,
        num_images=5120,
        synthesis_iterations=1000,
        synthesis_batch_size=256,
        lpf_d0=80.0,  # authors default
        tau=0.5,  # ImageNet setting
        lambda_ce=0.5,  # authors ResNet-18 W3A3 run
        lambda_cam=50.0,
        kd_temperature=1.0,  # the paper's plain KL
        learning_rate=1e-4,
        train_batch_size=16,
        num_epochs=100,
        seed=0,
    ),
)

if __name__ == "__main__":
    raise SystemExit(run_recipe(RECIPE))
