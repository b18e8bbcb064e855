"""The fine-tuning settings: the losses (TRL-style additions to TrainingArguments), the schedule, and block reconstruction's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .fields import COMPILE_MODES, PRECISIONS, check_bool, int_at_least, number_in, setting


@dataclass
class LossSettings:
    """The SynQ fine-tuning objective (Eq. 6) and its extras: what ``SynQTrainingArguments`` adds to ``TrainingArguments``."""

    lpf_d0: float | None = setting(None, "Low-pass filter cut-off D0. None: 80 (ImageNet-size), 8 (32x32). 0 disables.",
                              check=number_in())
    lpf_mode: Literal["once", "per_batch"] = setting(
        "once", "Filter the synthetic set once before fine-tuning (paper) or every batch after augmentation.",
        ("once", "per_batch"),
    )
    calibrate_filtered: bool | None = setting(
        None, "Fine-tuning calibrates activation ranges on the low-pass filtered images (True) or on the raw "
        "synthetic images (False). None: True (CNNs), False (ViTs).", check=check_bool,
    )
    tau: float | None = setting(None, "Difficulty threshold of selective CE (0-1). None: 0.5 (ImageNet), 0.7 (CIFAR).",
                           check=number_in(0.0, 1.0))
    lambda_ce: float = setting(0.5, "Weight of the selective cross-entropy term (>= 0).", check=number_in())
    lambda_cam: float = setting(50.0, "Weight of the Grad-CAM alignment term (>= 0).", check=number_in())
    kd_temperature: float = setting(1.0, "KD temperature; 1 is the paper's plain KL (the loss is scaled by T^2).",
                               check=number_in(open_low=True))
    kd_weight: float = setting(1.0, "Weight of the KD term (the authors' code: 20 at T=20, i.e. 8000 x KL).", check=number_in())
    cam_target: Literal["label", "argmax"] = setting(
        "label", "Grad-CAM target class: the synthetic label (paper) or the teacher's argmax (authors' code).",
        ("label", "argmax"),
    )
    quantizer_lr: float | None = setting(
        None, "Learning rate of learnable quantizer step sizes (own parameter group). None: learning_rate.",
        check=number_in(open_low=True),
    )
    augment: Literal["none", "shift_flip", "crop_flip"] = setting(
        "none", "Fine-tuning augmentation per batch: random shift + flip, or random-resized-crop (0.5-1) + flip.",
        ("none", "shift_flip", "crop_flip"),
    )
    momentum: float = setting(0.9, "SGD momentum.", check=number_in(0.0, 1.0, open_high=True))
    hast_feature_alignment: bool = setting(False, "Authors' extra: HAST feature-alignment loss.", check=check_bool)
    hast_weight: float = setting(1.0, "Weight of the HAST feature-alignment loss.", check=number_in())
    perturbed_loss: bool = setting(False, "Authors' extra: sign-gradient (FGSM-style) perturbed-sample KD loss.",
                              check=check_bool)
    perturbed_eps: float = setting(0.01, "Step size of the sign-gradient perturbation (normalized pixel units).",
                              check=number_in())
    perturbed_weight: float = setting(1.0, "Weight of the perturbed-sample loss.", check=number_in())

    # -- accelerator speed (issue 24) -------------------------------------------------------------
    finetune_precision: Literal["fp32", "bf16", "fp16"] = setting(
        "fp32", "Precision of the teacher and student forwards in fine-tuning: 'bf16'/'fp16' autocast them (fp16: "
        "CUDA only, with a gradient scaler); quantizer scales and rounding, losses and weights stay float32.",
        PRECISIONS,
    )
    finetune_compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = setting(
        "off", "torch.compile the teacher's and student's blocks for fine-tuning with this mode ('reduce-overhead' "
        "captures CUDA graphs); pays on GPUs at small batches, compiles for minutes first.", COMPILE_MODES,
    )

    # -- where Grad-CAM is taken (issue 21) -------------------------------------------------------
    cam_layer: Literal["last_conv", "pool"] = setting(
        "last_conv",
        "CNN Grad-CAM layer: 'last_conv' = the output of the last nn.Conv2d (the authors' Grad-CAM: gradients vary "
        "in space, channel weights clamped to >= 1e-10, map upsampled bilinearly to the input); 'pool' = the input "
        "of global pooling, where the gradient is constant in space and the map is classic CAM. ViT/Swin always "
        "use their family's layer (configs saved before version 6 load as 'pool').",
        ("last_conv", "pool"),
    )


@dataclass
class ScheduleSettings:
    """The fine-tuning schedule; each field sets the ``TrainingArguments`` field named in its metadata."""

    learning_rate: float | None = setting(None, "SGD learning rate. None: 1e-3 (CIFAR CNN), 1e-4 (CIFAR ViT, ImageNet CNN), 1e-5 (ImageNet ViT).",
                                     check=number_in(open_low=True), trainer="learning_rate")
    max_grad_norm: float = setting(
        5.0, "Clip the gradient norm of each fine-tuning step to this (0 disables; unclipped SGD can diverge).",
        check=number_in(), trainer="max_grad_norm",
    )
    weight_decay: float = setting(1e-4, "SGD weight decay.", check=number_in(), trainer="weight_decay")
    train_batch_size: int | None = setting(None, "Fine-tuning batch size per device. None: 256 (32x32 inputs), 16 otherwise.",
                                      check=int_at_least(1), trainer="per_device_train_batch_size")
    num_epochs: float = setting(100.0, "Fine-tuning epochs over the synthetic set.", check=number_in(open_low=True),
                           trainer="num_train_epochs")
    max_steps: int | None = setting(None, "Stop fine-tuning after this many steps (overrides num_epochs).",
                               check=int_at_least(1), trainer="max_steps")


@dataclass
class FinetuneSettings(ScheduleSettings, LossSettings):
    """Everything about fine-tuning: the losses, then the schedule."""

    # -- block reconstruction (issue 25) ----------------------------------------------------------
    method: Literal["synq", "ptq", "reconstruct"] = setting(
        "synq",
        "What quantizes the model: 'synq' fine-tunes the whole network (QAT style, the paper's main setting); 'ptq' "
        "calibrates only; 'reconstruct' reconstructs block by block against the float blocks (Genie/BRECQ: "
        "AdaRound, learned weight scales, LSQ activation ranges, QDrop).",
        ("synq", "ptq", "reconstruct"),
    )
    reconstruct_iterations: int = setting(20000, "Reconstruction: optimization steps per block (Genie, BRECQ: 20,000).",
                                     check=int_at_least(1), group="reconstruction")
    reconstruct_batch_size: int = setting(32, "Reconstruction: images per step (Genie: 32).", check=int_at_least(1),
                                     group="reconstruction")
    reconstruct_num_images: int = setting(1024, "Reconstruction: synthetic images used, the first N of the set "
                                     "(Genie: 1,024).", check=int_at_least(1), group="reconstruction")
    reconstruct_round_weight: float = setting(1.0, "Reconstruction: weight of AdaRound's rounding regulariser, summed "
                                         "over the block's weights (Genie: 1; BRECQ: 0.01).", check=number_in(),
                                         group="reconstruction")
    reconstruct_beta_start: float = setting(20.0, "Reconstruction: exponent beta of the rounding regulariser when it "
                                       "starts (AdaRound: 20).", check=number_in(open_low=True), group="reconstruction")
    reconstruct_beta_end: float = setting(2.0, "Reconstruction: beta at the last step, reached linearly (AdaRound: 2).",
                                     check=number_in(open_low=True), group="reconstruction")
    reconstruct_warmup: float = setting(0.2, "Reconstruction: fraction of each block's steps without the rounding "
                                   "regulariser (AdaRound: 0.2).", check=number_in(0.0, 1.0, open_high=True),
                                   group="reconstruction")
    reconstruct_qdrop: float = setting(0.5, "Reconstruction: QDrop probability that an element stays float at each "
                                  "activation quantizer and the block input (0 disables QDrop; QDrop, Genie: 0.5).",
                                  check=number_in(0.0, 1.0), group="reconstruction")
    reconstruct_lr: float = setting(1e-3, "Reconstruction: Adam learning rate of the rounding variables (Genie: 1e-3).",
                               check=number_in(open_low=True), group="reconstruction")
    reconstruct_lr_weight_scale: float = setting(1e-4, "Reconstruction: Adam learning rate of the per-channel weight step "
                                            "sizes, cosine decay (Genie: 1e-4; 0 keeps them).", check=number_in(),
                                            group="reconstruction")
    reconstruct_lr_act_scale: float = setting(4e-5, "Reconstruction: Adam learning rate of the LSQ activation ranges, "
                                         "cosine decay (Genie: 4e-5; 0 keeps them).", check=number_in(),
                                         group="reconstruction")
    reconstruct_synq: bool = setting(False, "Reconstruction + SynQ: reconstruct on the low-pass filtered images "
                                "(lpf_d0, reconstruct_synq_images) and add SynQ's output terms (selective CE, "
                                "Grad-CAM alignment; see reconstruct_synq_stage).", check=check_bool,
                                group="reconstruction")
    reconstruct_synq_images: Literal["both", "filtered", "raw"] | None = setting(
        None,
        "Reconstruction + SynQ: the images it reconstructs on: 'both' each image raw and then low-pass filtered "
        "(twice the images; the ranges calibrated on the raw ones, as in plain reconstruction), 'filtered' only the "
        "filtered ones (SynQ's filter as its fine-tuning applies it), 'raw' the unfiltered ones (SynQ's output terms "
        "only). None: 'both' for CNNs, 'raw' for ViTs (measured: BENCHMARKS.md, block reconstruction).",
        ("both", "filtered", "raw"),
        group="reconstruction",
    )
    reconstruct_synq_stage: Literal["last_block", "network"] = setting(
        "last_block",
        "Reconstruction + SynQ: where SynQ's terms act: 'last_block' adds lambda_ce x selective CE and lambda_cam x "
        "Grad-CAM alignment on the network output to the last block's loss; 'network' runs reconstruct_synq_steps "
        "steps of SynQ's whole loss (KD + selective CE + CAM) on the whole network after the last block, training "
        "only step sizes, activation ranges, biases and normalization affines (the integer weights stay).",
        ("last_block", "network"),
        group="reconstruction",
    )
    reconstruct_synq_steps: int = setting(300, "Reconstruction + SynQ: steps of the whole-network phase.",
                                     check=int_at_least(1), group="reconstruction")
