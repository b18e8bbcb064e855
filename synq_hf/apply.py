"""``quantize_model`` (module swapping), calibration of activation ranges, and the ``ptq`` baseline."""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from .architectures import ArchSpec
from .config import SynQConfig, has_weight_budget, weight_symmetric_default
from .errors import SynQError, UnsupportedModelError
from .model_info import model_logits
from .pipeline import match_spec
from .quant.coverage import COVERAGE_ATTR, example_input, static_coverage, trace_coverage
from .quant.integer_bias import snap_biases_to_int32_grid
from .quant.layers import OutputQuantized, QuantConv2d, QuantLinear
from .quant.policy import LayerPolicy
from .quant.quantizers import ActQuantizer, Mode

SYNQ_CONFIG_ATTR = "synq_config"
logger = logging.getLogger(__name__)


def quantize_model(
    model: nn.Module,
    config: SynQConfig,
    *,
    inplace: bool = True,
    on_gap: Literal["error", "warn"] = "error",
    example_input: torch.Tensor | None = None,
    spec: ArchSpec | None = None,
) -> nn.Module:
    """Insert fake quantizers into ``model`` according to ``config`` and its architecture spec; return it.

    The spec (``synq_hf.architectures``) decides the placement: after every ReLU for plain ReLU ResNets,
    on the input of every conv/linear for other CNNs, PSAQ-ViT for ViT/DeiT/Swin; ``deploy_placement="int8"``
    adds the spec's 8-bit quantizers for integer runtimes (ReLU ResNets; other specs refuse it). One forward of
    ``example_input`` (default: a random image of the model's size) then records the coverage report
    (:func:`coverage_report`); a conv/linear whose weights or input stay float without a rule of the
    spec raises ``UnsupportedModelError`` (``on_gap="warn"``: a warning). Activation quantizers start
    uncalibrated: run :func:`calibrate` before using the model. ``spec`` is the model's spec when the caller
    already matched it (default: matched here). ``weight_symmetric`` comes from the config (resolution fills it
    in); an unresolved config gets the same family default (:func:`synq_hf.config.weight_symmetric_default`).
    """
    if is_quantized(model):
        raise SynQError(f"{type(model).__name__} is already quantized")
    if on_gap not in ("error", "warn"):
        raise SynQError(f"on_gap={on_gap!r} is not allowed; choose 'error' or 'warn'")
    spec = match_spec(model, spec)
    if config.deploy_placement != "off" and spec.deploy is None:
        from .architectures import SPECS

        offered = ", ".join(s.name for s in SPECS if s.deploy is not None)
        raise UnsupportedModelError(
            f"{type(model).__name__} ({spec.name}): deploy_placement={config.deploy_placement!r} is available for "
            f"{offered} only; use deploy_placement='off'"
        )
    if not inplace:
        model = copy.deepcopy(model)
    symmetric = (config.weight_symmetric if config.weight_symmetric is not None
                 else weight_symmetric_default(spec.family))
    first, last = spec.first_last(model)
    policy = LayerPolicy(config, first=first, last=last, symmetric_weights=symmetric)
    excluded = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and not policy.enabled(n)}
    spec.place(model, policy)
    if config.deploy_placement != "off":
        spec.deploy(model, policy)
    param = next(model.parameters(), None)
    device = param.device if param is not None else None
    for name, module in model.named_modules():
        if isinstance(module, ActQuantizer):
            module.name = module.name or name
            if device is not None and device.type != "meta":  # new quantizers follow the model's device
                module.to(device)
    _check_layer_bits(model, config)
    setattr(model, SYNQ_CONFIG_ATTR, config.replace(weight_symmetric=symmetric))
    _record_coverage(model, spec, config, excluded, on_gap, example_input)
    return model


def _check_layer_bits(model: nn.Module, config: SynQConfig) -> None:
    """Refuse per-layer bits naming no quantizer of ``model``, and a weight budget whose bits are not chosen yet."""
    layers = [n for n, m in model.named_modules() if isinstance(m, (QuantConv2d, QuantLinear))]
    acts = [m.name for m in model.modules() if isinstance(m, ActQuantizer)]
    for field, names, what in (("layer_w_bits", layers, "quantized layer"), ("layer_a_bits", acts, "activation quantizer")):
        unknown = sorted(set(getattr(config, field)) - set(names))
        if unknown:
            raise SynQError(f"{field} names {len(unknown)} {what}(s) {type(model).__name__} does not have: "
                            f"{', '.join(unknown[:4])}{' ...' if len(unknown) > 4 else ''} (it has {', '.join(names[:4])}"
                            f"{' ...' if len(names) > 4 else ''})")
    if has_weight_budget(config):
        missing = [n for n in layers if n not in config.layer_w_bits]
        if missing:
            raise SynQError(f"the weight budget's per-layer bits are not chosen yet ({len(missing)} layer(s), e.g. "
                            f"{missing[0]}): allocate them first (synq_hf.mixed.plan_mixed_precision; "
                            "SynQQuantizer.quantize and ptq do it)")
    if config.avg_a_bits is not None and not config.layer_a_bits:
        raise SynQError("the activation budget's per-quantizer bits are not chosen yet: allocate them first "
                        "(synq_hf.mixed.plan_mixed_precision; SynQQuantizer.quantize and ptq do it)")


def _record_coverage(model, spec, config, excluded, on_gap, example) -> None:  # noqa: ANN001
    """Trace (or, without a known input size, derive) the coverage report, refuse gaps, store it on the model."""
    rules = spec.rules()
    example = example if example is not None else example_input(model)
    report = None
    if example is not None:
        try:
            report = trace_coverage(model, example, rules=rules, excluded=excluded)
        except (RuntimeError, ValueError, TypeError, AssertionError) as e:
            logger.warning("coverage: one forward of a %s image failed (%s); reporting placement only",
                           tuple(example.shape[1:]), str(e).splitlines()[0] if str(e) else type(e).__name__)
    if report is None:
        report = static_coverage(model, rules=rules, excluded=excluded)
    report = {"architecture": spec.name, "placement": spec.placement,
              "deploy_placement": config.deploy_placement,
              "w_bits": None if config.layer_w_bits else config.w_bits,  # mixed: the layers' own bits below
              "a_bits": None if config.layer_a_bits else config.a_bits, "rules": rules, **report}
    setattr(model, COVERAGE_ATTR, report)
    gaps = report["gaps"]
    if gaps:
        shown = "; ".join(f"{g['name']}: {g['why']}" for g in gaps[:3]) + (" ..." if len(gaps) > 3 else "")
        message = (f"{type(model).__name__} ({spec.name}): {len(gaps)} conv/linear layer(s) would run with float "
                   f"weights or inputs without a rule: {shown}")
        if on_gap == "error":
            raise UnsupportedModelError(message + " (pass on_gap='warn' to accept them)")
        warnings.warn(message, stacklevel=3)


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
    configured with ``range_init="search"`` get a second pass that collects histograms and picks the clip with
    the lowest Lp error. Weight quantizers search their per-channel clips here too. Afterwards every
    quantizer is in ``quantize`` mode; learnable quantizers are initialized from the final range. A
    ``deploy_placement="int8"`` model then gets its biases on the int32 grid (:func:`deploy_convert`).
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
    first = None
    for mode in passes:
        seen = 0
        with quant_mode(model, mode):  # type: ignore[arg-type]
            desc = "calibrate" if mode == "calibrate" else "calibrate (range search)"
            for x in tqdm(batches, desc=desc, unit="batch", total=total, disable=not progress):
                if device is not None:
                    x = x.to(device)
                model_logits(model, x)
                first = x[:1] if first is None else first
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
    deploy_convert(model, first)
    model.train(was_training)
    return model


def deploy_convert(model: nn.Module, example: torch.Tensor | None = None) -> dict[str, str] | None:
    """The convert step of ``deploy_placement="int8"`` (run by :func:`calibrate` and at the end of fine-tuning):
    :func:`snap_biases_to_int32_grid`, so onnxruntime's integer kernels compute what the model computes.

    Returns its report; other placements are left untouched (None).
    """
    config = getattr(model, SYNQ_CONFIG_ATTR, None)
    if getattr(config, "deploy_placement", "off") != "int8":
        return None
    return snap_biases_to_int32_grid(model, example)


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
