"""``quantize_model`` (module swapping), calibration of activation ranges, and the ``ptq`` baseline."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import SynQConfig
from ..errors import SynQError, UnsupportedModelError
from ..model_info import model_logits
from .layers import OutputQuantized, QuantConv2d, QuantLinear
from .placement import PLACEMENTS, find_placement
from .policy import LayerPolicy
from .quantizers import ActQuantizer, Mode

SYNQ_CONFIG_ATTR = "synq_config"


def quantize_model(model: nn.Module, config: SynQConfig, *, inplace: bool = True) -> nn.Module:
    """Insert fake quantizers into ``model`` according to ``config`` and return it.

    The architecture decides the placement (CNN: weights + every ReLU output; ViT/Swin: PSAQ-ViT).
    Activation quantizers start uncalibrated: run :func:`calibrate` before using the model.
    """
    if is_quantized(model):
        raise SynQError(f"{type(model).__name__} is already quantized")
    placement = find_placement(model)
    if placement is None:
        names = ", ".join(p.name for p in PLACEMENTS)
        raise UnsupportedModelError(
            f"cannot quantize {type(model).__name__}: supported are CNNs with BatchNorm (timm resnet*, "
            f"mobilenetv2_*, the CIFAR ResNets) and ViT/DeiT/Swin from timm or transformers (placements: {names})"
        )
    if not inplace:
        model = copy.deepcopy(model)
    symmetric = config.weight_symmetric if config.weight_symmetric is not None else placement.family != "cnn"
    first, last = placement.first_last(model)
    placement.apply(model, LayerPolicy(config, first=first, last=last, symmetric_weights=symmetric))
    param = next(model.parameters(), None)
    device = param.device if param is not None else None
    for name, module in model.named_modules():
        if isinstance(module, ActQuantizer):
            module.name = module.name or name
            if device is not None and device.type != "meta":  # new quantizers follow the model's device
                module.to(device)
    setattr(model, SYNQ_CONFIG_ATTR, config.replace(weight_symmetric=symmetric))
    return model


def is_quantized(model: nn.Module) -> bool:
    """Whether ``model`` already carries synq_hf quantizers."""
    return any(isinstance(m, (QuantConv2d, QuantLinear, OutputQuantized, ActQuantizer)) for m in model.modules())


def act_quantizers(model: nn.Module) -> list[ActQuantizer]:
    """All activation quantizers of ``model`` in module order."""
    return [m for m in model.modules() if isinstance(m, ActQuantizer)]


def set_quant_mode(model: nn.Module, mode: Mode) -> None:
    """Put every activation quantizer in ``float``, ``calibrate`` or ``quantize`` mode."""
    for q in act_quantizers(model):
        q.mode = mode


@contextmanager
def quant_mode(model: nn.Module, mode: Mode) -> Iterator[nn.Module]:
    """Temporarily switch activation quantizers to ``mode`` (restores each one's previous mode)."""
    quantizers = act_quantizers(model)
    previous = [q.mode for q in quantizers]
    set_quant_mode(model, mode)
    try:
        yield model
    finally:
        for q, m in zip(quantizers, previous):
            q.mode = m


@torch.no_grad()
def calibrate(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    *,
    device: torch.device | str | None = None,
    progress: bool = True,
    total: int | None = None,
) -> nn.Module:
    """Reset and observe activation ranges on ``batches``, then freeze them; initialize weight ranges.

    ``batches`` yields normalized image tensors (N, C, H, W). Pass 1 records EMA min-max ranges; quantizers
    configured with ``range_init="mse"`` get a second pass that collects histograms and picks the clip with
    the lowest Lp error. Weight quantizers search their per-channel clips here too. Afterwards every
    quantizer is in ``quantize`` mode; learnable quantizers are initialized from the final range.
    """
    quantizers = act_quantizers(model)
    if not quantizers:
        raise SynQError("the model has no activation quantizers: call quantize_model first")
    was_training = model.training
    model.eval()
    for q in quantizers:
        q.reset()
    for layer in model.modules():
        if isinstance(layer, (QuantConv2d, QuantLinear)):
            layer.weight_quantizer.init_range(layer.weight)
    search = any(q.range_init != "minmax" for q in quantizers)
    if search:
        batches = list(batches)  # two passes over the same images
    passes = ["calibrate", "histogram"] if search else ["calibrate"]
    for mode in passes:
        seen = 0
        with quant_mode(model, mode):  # type: ignore[arg-type]
            desc = "calibrate" if mode == "calibrate" else "calibrate (range search)"
            for x in tqdm(batches, desc=desc, unit="batch", total=total, disable=not progress):
                if device is not None:
                    x = x.to(device)
                model_logits(model, x)
                seen += 1
        if seen == 0:
            raise SynQError("calibration got no batches")
        if mode == "calibrate":
            missing = [q.name for q in quantizers if not q._is_calibrated]
            if missing:
                raise SynQError(f"{len(missing)} activation quantizer(s) saw no data during calibration: {missing[:5]}")
    for q in quantizers:
        q.mode = "quantize"
        q.finish_calibration()
    model.train(was_training)
    return model


def iter_batches(images: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Split a tensor of images into batches (the last one may be smaller)."""
    for i in range(0, len(images), batch_size):
        yield images[i : i + batch_size]


def ptq(
    model: nn.Module,
    config: SynQConfig,
    images: torch.Tensor | Iterable[torch.Tensor],
    *,
    inplace: bool = False,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> nn.Module:
    """Post-training quantization baseline: min-max calibration on ``images``, no fine-tuning.

    ``images`` is a tensor (N, C, H, W) in the model's normalized space (batched by
    ``config.calibration_batch_size``) or an iterable of such batches.
    """
    qmodel = quantize_model(model, config, inplace=inplace)
    if isinstance(images, torch.Tensor):
        total = -(-len(images) // config.calibration_batch_size)
        images = iter_batches(images, config.calibration_batch_size)
    else:
        total = None
    return calibrate(qmodel, images, device=device, progress=progress, total=total)
