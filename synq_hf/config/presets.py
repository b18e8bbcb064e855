"""Named values: the paper's family-dependent defaults, the loss presets, and the schema migrations."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError


def paper_defaults(family: str, input_size: int, *, bn_reduction: str | None = None) -> dict[str, Any]:
    """The paper's value of every family-dependent (``None``-default) field, for a teacher family and image side.

    The BN-statistics loss reduces over channels by the mean (the authors' ``nn.MSELoss``) for ImageNet-size inputs,
    with the authors' CE beta 0.1 / gamma 0.5 (tuned against that mean). 32x32 inputs (CIFAR) keep the channel sum
    with HAST's beta 10 / gamma 2 (measured: BENCHMARKS.md, "Method fidelity"); ``bn_reduction`` (the config's
    value, when set) picks the beta/gamma tuned for it: 0.1 / 0.5 with the mean at any size, as the authors' CIFAR
    scripts do. 32x32 inputs also get D0 = 8 (D0 >= 40 is nearly an identity there),
    tau 0.7 and SGD lr 1e-3 for CNNs (1e-2 diverged, Adam 1e-5 was worse in METHOD.md's trial), 1e-4 for ViTs (1e-3
    drifts away on the shared CIFAR ViT: BENCHMARKS.md, ViT); ImageNet-size CNNs lr 1e-4 and batch 16; ViTs
    (PSAQ-ViT) symmetric weights, batch 32 synthesis and lr 1e-5 from the paper's grid. ViTs calibrate activation
    ranges on the raw synthetic images, as PSAQ-ViT does: ranges from the filtered ones clip real activations
    (BENCHMARKS.md, ViT). Reconstruction + SynQ (our choice, which the paper does not state) runs on a CNN's raw
    and filtered images and on a ViT's raw ones: the filter alone cost the shared ViT 3.2 points (BENCHMARKS.md,
    block reconstruction).
    """
    if family not in ("cnn", "vit", "swin"):
        raise ConfigError(f"family={family!r} is not allowed; choose one of ['cnn', 'vit', 'swin']")
    small = input_size < 64
    vit = family != "cnn"
    reduction = bn_reduction or ("sum" if small else "mean")
    hast = small and reduction == "sum"  # HAST's CIFAR weights were tuned against the channel sum
    return {
        "weight_symmetric": weight_symmetric_default(family),
        "synthesis_batch_size": 32 if vit else 256,
        "synthesis_lr": {"cnn": 0.5, "vit": 0.2, "swin": 0.25}[family],
        "synthesis_bn_reduction": reduction,
        "synthesis_ce_beta": 10.0 if hast else 0.1,
        "synthesis_ce_gamma": 2.0 if hast else 0.5,
        "synthesis_augment": not small,
        "lpf_d0": 8.0 if small else 80.0,
        "calibrate_filtered": not vit,
        "reconstruct_synq_images": "raw" if vit else "both",
        "tau": 0.7 if small else 0.5,
        "learning_rate": (1e-4 if vit else 1e-3) if small else (1e-5 if vit else 1e-4),
        "train_batch_size": 256 if small else 16,
    }


def weight_symmetric_default(family: str) -> bool:
    """The paper's weight quantizer per family: symmetric for ViT/Swin (PSAQ-ViT), asymmetric for CNNs."""
    return family != "cnn"


RESOLVED_FIELDS: tuple[str, ...] = tuple(paper_defaults("cnn", 224))
"""The family-dependent fields (``None`` by default) that :meth:`SynQConfig.resolve` fills in."""


LOSS_PRESETS: dict[str, dict[str, Any]] = {
    # Eq. 6 as the paper states it: a plain KL, the authors' ResNet-18 W3A3 weights for CE and CAM.
    "paper": {"kd_weight": 1.0, "kd_temperature": 1.0, "lambda_ce": 0.5, "lambda_cam": 50.0},
    # The authors' code: 20 x T^2 x KL at T = 20 (8000 x KL), crop + flip on every batch, filter after it.
    "authors": {"kd_weight": 20.0, "kd_temperature": 20.0, "lambda_ce": 0.5, "lambda_cam": 50.0,
                "augment": "crop_flip", "lpf_mode": "per_batch"},
}
"""Named loss balances (``SynQConfig.with_loss_preset``, ``synq-hf quantize --loss-preset``)."""


MIGRATIONS: dict[int, dict[str, Any]] = {
    # v2 searches ranges by default; version 1 had min-max ranges only (the quantizers must match)
    1: {"act_range_init": "minmax", "weight_range_init": "minmax"},
    # v3 quantizes ViTs with PSAQ-ViT's full placement; older ViT checkpoints were built with 'loose'
    2: {"vit_placement": "loose"},
    # v4 adds the opt-in integer-runtime quantizers; older checkpoints were built without them
    3: {"deploy_placement": "off"},
    # v5 lets ViTs calibrate on the raw synthetic images; older fine-tuning always used the filtered ones
    4: {"calibrate_filtered": True},
    # v6 takes CNN Grad-CAM at the last conv and reduces ImageNet-size BN losses by the channel mean (issue 21);
    # older configs took it at the pooling input (classic CAM) and summed over channels at every size
    5: {"cam_layer": "pool", "synthesis_bn_reduction": "sum"},
    # v7 adds ``layer_rule`` (issue 25); older checkpoints were built with the uniform rule
    6: {"layer_rule": "uniform"},
    # v8 reconstructs + SynQ on each image raw and filtered by default; older ones ran on the filtered images only
    7: {"reconstruct_synq_images": "filtered"},
}
"""Migrations from schema version N to N+1, as data: the values a version-N config meant for the fields that
version N+1 added or whose default it changed (a field the config sets itself is kept)."""
