"""CIFAR-10 ResNet-20 W3A3 on the shared teacher (paper: drop of 5.78 points from float).

Run: `python recipes/cifar10_resnet20_w3a3.py [--eval-data DATA] [--out DIR]`, multi-GPU: `accelerate launch recipes/cifar10_resnet20_w3a3.py`,
code-path check in seconds: `python recipes/cifar10_resnet20_w3a3.py --smoke`. Hyperparameters: ``PAPER_SETTINGS`` in synq_hf/recipe.py; all are recorded in the card.
"""

from synq_hf import SynQConfig
from synq_hf.recipe import PAPER_SETTINGS, Recipe, run_recipe

RECIPE = Recipe(
    name="cifar10_resnet20_w3a3",
    model="local-dir:../shared/data/teachers/cifar10-resnet20",
    description="CIFAR-10 ResNet-20 W3A3 on the shared teacher (paper: drop of 5.78 points from float).",
    smoke_family="cnn",
    eval_data="../shared/data/cifar10/test-lossless-first1017.parquet",
    config=SynQConfig(w_bits=3, a_bits=3, **PAPER_SETTINGS["cifar"]),
)

if __name__ == "__main__":
    raise SystemExit(run_recipe(RECIPE))
