"""Shared CIFAR-10 ResNet-20 W3A3 by zero-shot block reconstruction + SynQ (Genie/BRECQ setting, issue 25).

Run: `python recipes/cifar10_resnet20_reconstruct_w3a3.py [--eval-data DATA] [--out DIR]` (one process: block
reconstruction does not run under accelerate launch; a rerun resumes after the last finished block), code-path check
in seconds: `--smoke`. The schedule is the `cpu` budget of benchmarks/reconstruct_accuracy.py (BENCHMARKS.md,
"Block reconstruction (issue 25)"); every hyperparameter is spelled out below and recorded in the card.
"""

from synq_hf import SynQConfig
from synq_hf.recipe import Recipe, run_recipe

RECIPE = Recipe(
    name="cifar10_resnet20_reconstruct_w3a3",
    model="local-dir:../shared/data/teachers/cifar10-resnet20",
    description="Shared CIFAR-10 ResNet-20 W3A3, zero-shot block reconstruction with SynQ on top (CPU budget).",
    smoke_family="cnn",
    eval_data="../shared/data/cifar10/test-lossless-first1017.parquet",
    config=SynQConfig(
        w_bits=3, a_bits=3, method="reconstruct", layer_rule="uniform",
        # synthesis: the `cpu` budget's 512 images x 200 iterations (BN statistics + hard-sample CE, HAST weights)
        num_images=512, synthesis_iterations=200, synthesis_batch_size=256,
        # reconstruction: 1,000 steps per unit (Genie: 20,000) on the 512 images, so ten times Genie's learning rates
        reconstruct_num_images=512, reconstruct_iterations=1000, reconstruct_batch_size=32,
        reconstruct_round_weight=1.0, reconstruct_beta_start=20.0, reconstruct_beta_end=2.0, reconstruct_warmup=0.2,
        reconstruct_qdrop=0.5, reconstruct_lr=1e-2, reconstruct_lr_weight_scale=1e-3, reconstruct_lr_act_scale=4e-4,
        # SynQ on top: each image raw and filtered (D0 = 8 at 32 px), selective CE + Grad-CAM alignment in the last
        # block's loss
        reconstruct_synq=True, reconstruct_synq_images="both", reconstruct_synq_stage="last_block",
        reconstruct_synq_steps=300,
        lpf_d0=8.0, tau=0.7, lambda_ce=0.5, lambda_cam=50.0, kd_temperature=1.0,
        # unused by reconstruction, recorded for completeness (the recipe checks expect them)
        learning_rate=1e-3, train_batch_size=128, seed=0,
    ),
)

if __name__ == "__main__":
    raise SystemExit(run_recipe(RECIPE))
