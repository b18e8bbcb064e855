"""The synthesis settings: how the synthetic images are made and how many calibrate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .fields import PRECISIONS, check_bool, int_at_least, number_in, setting


@dataclass
class SynthesisSettings:
    """How the synthetic images are made, and how many of them calibrate the activation ranges."""

    calibration_num_images: int = setting(512, "Images used to calibrate activation ranges.", check=int_at_least(1),
                                     group="calibration")
    calibration_batch_size: int = setting(64, "Batch size of the calibration forward passes.", check=int_at_least(1),
                                     group="calibration")
    # -- mixed precision (issue 26) --
    sensitivity_num_images: int = setting(
        256, "Mixed precision: synthetic images on which each layer's sensitivity (KL of the model's output to the "
        "float model's when only that layer is quantized) is measured.", check=int_at_least(1), group="mixed",
    )
    num_images: int = setting(5120, "Number of synthetic images to generate.", check=int_at_least(1))
    synthesis_iterations: int = setting(1000, "Optimization iterations per synthetic batch.", check=int_at_least(0))
    synthesis_batch_size: int | None = setting(None, "Synthetic images optimized together. None: 256 (CNN) or 32 (ViT).",
                                          check=int_at_least(1))
    synthesis_lr: float | None = setting(None, "Adam learning rate on pixels. None: 0.5 (CNN), 0.2 (ViT), 0.25 (Swin).",
                                    check=number_in(open_low=True))
    synthesis_ce_beta: float | None = setting(
        None, "Weight of the hard-sample CE term. None: 0.1 (the authors', against the channel-mean BN loss), "
        "10 (32x32 inputs with the channel-sum BN loss, HAST setting).",
        check=number_in(),
    )
    synthesis_ce_gamma: float | None = setting(
        None, "Focal exponent of the hard-sample CE term. None: 0.5 (with the channel-mean BN loss), 2 (32x32 inputs "
        "with the channel-sum BN loss).", check=number_in()
    )
    synthesis_augment: bool | None = setting(
        None, "Random-resized-crop + flip during CNN synthesis. None: on for inputs of 64 px and up.", check=check_bool
    )
    synthesis_lr_patience: int = setting(50, "ReduceLROnPlateau patience (iterations; CNN synthesis, ViTs use PSAQ-ViT's "
                                        "2 warm-up + cosine cycles).", check=int_at_least(1))
    synthesis_lr_factor: float = setting(0.1, "ReduceLROnPlateau decay factor (CNN synthesis).",
                                    check=number_in(0.0, 1.0, open_low=True, open_high=True))
    synthesis_min_lr: float = setting(1e-4, "ReduceLROnPlateau minimum learning rate (CNN synthesis).", check=number_in())
    synthesis_calibration_centres: bool = setting(False, "TexQ-style: also synthesize one calibration-centre image per class.",
                                             check=check_bool)
    synthesis_groups_per_forward: int = setting(
        1, "Groups of synthesis_batch_size images sent through one forward (BN statistics stay per group).",
        check=int_at_least(1),
    )
    synthesis_tv_weight: float = setting(0.05, "ViT synthesis: weight of PSAQ-ViT's image prior (distance of the "
                                    "neighbouring-pixel L2 norms to a random target).", check=number_in())
    synthesis_kde_bandwidth: float = setting(0.01, "ViT synthesis: Gaussian KDE bandwidth of patch similarities.",
                                        check=number_in(open_low=True))
    synthesis_kde_points: int = setting(10, "ViT synthesis: KDE evaluation points between batch min and max.",
                                   check=int_at_least(1))
    synthesis_log_every: int = setting(50, "Log synthesis losses every k iterations (no host sync in between).",
                                  check=int_at_least(1))

    # -- accelerator speed (issue 24) -------------------------------------------------------------
    synthesis_precision: Literal["fp32", "bf16", "fp16"] = setting(
        "fp32", "Precision of the teacher's forward/backward in synthesis: 'bf16'/'fp16' autocast it (fp16: CUDA "
        "only); the BN-statistics loss, the KDE and the pixels stay float32. fp32 until a GPU fidelity check "
        "supports a low-precision default.", PRECISIONS,
    )

    # -- BN-statistics reduction (issue 21) -------------------------------------------------------
    synthesis_bn_reduction: Literal["mean", "sum"] | None = setting(
        None,
        "CNN synthesis: reduce each BN layer's squared mean/variance errors over channels by 'mean' (the authors' "
        "nn.MSELoss) or 'sum' (||.||^2, C times stronger against the CE term). None: 'mean' for ImageNet-size "
        "inputs, 'sum' for 32x32 (paper_defaults; the CE beta/gamma defaults follow the reduction; configs saved "
        "before version 6 load as 'sum').",
        ("mean", "sum"),
    )
