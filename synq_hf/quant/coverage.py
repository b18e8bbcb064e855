"""Activation coverage: which conv/linear layers have quantized weights and inputs, traced on one forward.

``trace_coverage`` runs one example image through a freshly quantized model (quantizers in ``float``
mode) and follows tensors by identity: the output of an activation quantizer is quantized, and so
is what a max-pool, a global average pool, a flatten, a dropout or an identity makes of it (under
the rule named in ``PASSTHROUGH_RULES``). For every conv/linear layer it records its weight bits and
where its input came from: its own input quantizer, a quantizer upstream, the image, or nothing. A
float input or a float conv/linear without a rule of the architecture's spec is a *gap*;
``quantize_model`` refuses gaps (or warns, when asked). The report is plain JSON.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from .layers import OutputQuantized, QuantConv2d, QuantLinear
from .quantizers import ActQuantizer

logger = logging.getLogger(__name__)

COVERAGE_ATTR = "synq_coverage"
_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)
# module class name -> rule id under which its output inherits a quantized input's status (None: same rule)
PASSTHROUGH_RULES: dict[str, str | None] = {
    "MaxPool2d": "max_pool",
    "AdaptiveAvgPool2d": "pooled_classifier",
    "SelectAdaptivePool2d": "pooled_classifier",
    "Flatten": None,
    "Identity": None,
    "Dropout": None,
}


def _base_class_name(module: nn.Module) -> str:
    cls = type(module)
    return (cls.base_class if issubclass(cls, OutputQuantized) else cls).__name__


def example_input(model: nn.Module) -> torch.Tensor | None:
    """One random image of the size the model takes (timm ``patch_embed``/``pretrained_cfg``, transformers config),
    on the model's device; None when the size is unknown or the weights are on the meta device."""
    size = None
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if img_size is not None:
        size = (3, *(img_size if isinstance(img_size, (tuple, list)) else (img_size, img_size)))
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if size is None and cfg.get("input_size"):
        size = tuple(int(v) for v in cfg["input_size"])
    hf = getattr(model, "config", None)
    if size is None and hf is not None and getattr(hf, "num_channels", None) is not None:
        side = getattr(hf, "image_size", None) or 64  # transformers CNNs (ResNet, ConvNeXt) take any size
        hw = tuple(side) if isinstance(side, (tuple, list)) else (side, side)
        size = (int(hf.num_channels), *hw)
    params = list(model.parameters())
    if size is None or any(p.is_meta for p in params):  # nothing to run on meta weights (transformers' lazy init)
        return None
    device = params[0].device if params else torch.device("cpu")
    return torch.randn(1, *size, generator=torch.Generator().manual_seed(0)).to(device)


def _weight_bits(module: nn.Module) -> int | None:
    wq = getattr(module, "weight_quantizer", None)
    return int(wq.bits) if isinstance(module, (QuantConv2d, QuantLinear)) and wq is not None else None


@torch.no_grad()
def trace_coverage(
    model: nn.Module, example: torch.Tensor, *, rules: dict[str, str], excluded: set[str]
) -> dict[str, Any]:
    """Trace one forward of a quantized ``model`` and return the coverage report (see the module docstring).

    ``rules`` are the spec's float rules (id -> text); ``excluded`` names layers the config leaves float.
    """
    marks: dict[int, tuple[torch.Tensor, int | None, str, str | None]] = {}  # id -> (tensor, bits, source, rule)
    marks[id(example)] = (example, None, "image", "model_input")
    calls: dict[str, list[tuple[int | None, str, str | None]]] = {}
    handles = []
    quantizers = [m for m in model.modules() if isinstance(m, ActQuantizer)]
    modes = [q.mode for q in quantizers]

    def quantized_out(q: ActQuantizer, _args: Any, out: torch.Tensor) -> None:
        marks[id(out)] = (out, int(q.bits), q.name, None)

    def passthrough(rule: str | None):
        def hook(_m: nn.Module, args: tuple, out: Any) -> None:
            src = marks.get(id(args[0])) if args and isinstance(args[0], torch.Tensor) else None
            if src is not None and isinstance(out, torch.Tensor) and src[3] != "model_input":
                marks[id(out)] = (out, src[1], src[2], rule or src[3])
        return hook

    def layer_input(name: str):
        def hook(m: nn.Module, args: tuple) -> None:
            if getattr(m, "input_quantizer", None) is not None:
                calls.setdefault(name, []).append((int(m.input_quantizer.bits), "input_quantizer", None))
                return
            x = args[0] if args else None
            src = marks.get(id(x))
            if src is None:
                calls.setdefault(name, []).append((None, "float", None))
            else:
                calls.setdefault(name, []).append((src[1], src[2], src[3]))
        return hook

    weighted = [(n, m) for n, m in model.named_modules() if isinstance(m, _WEIGHTED)]
    for q in quantizers:
        handles.append(q.register_forward_hook(quantized_out))
    for _, m in model.named_modules():
        kind = _base_class_name(m)
        if kind in PASSTHROUGH_RULES and not isinstance(m, OutputQuantized):
            handles.append(m.register_forward_hook(passthrough(PASSTHROUGH_RULES[kind])))
    for name, m in weighted:
        handles.append(m.register_forward_pre_hook(layer_input(name)))
    was_training = model.training
    try:
        for q in quantizers:
            q.mode = "float"
        model.eval()
        model(example)
    finally:
        for h in handles:
            h.remove()
        for q, mode in zip(quantizers, modes):
            q.mode = mode
        model.train(was_training)
    return _report(model, weighted, calls, rules, excluded, traced=True)


def static_coverage(model: nn.Module, *, rules: dict[str, str], excluded: set[str]) -> dict[str, Any]:
    """The report without a forward: only a layer's own input quantizer counts (used when no input size is known)."""
    weighted = [(n, m) for n, m in model.named_modules() if isinstance(m, _WEIGHTED)]
    calls = {n: [(int(m.input_quantizer.bits), "input_quantizer", None)] for n, m in weighted
             if getattr(m, "input_quantizer", None) is not None}
    return _report(model, weighted, calls, rules, excluded, traced=False)


def _report(model, weighted, calls, rules, excluded, *, traced: bool) -> dict[str, Any]:
    layers, gaps, floats = [], [], {}

    def cite(rule: str, where: str) -> None:
        entry = floats.setdefault(rule, {"rule": rules.get(rule, rule), "count": 0, "where": []})
        entry["count"] += 1
        entry["where"].append(where)

    for name, m in weighted:
        wbits = _weight_bits(m)
        seen = calls.get(name)
        entry: dict[str, Any] = {"name": name, "type": _base_class_name(m), "weight_bits": wbits,
                                 "input_bits": None, "input_from": None, "input_rule": None}
        if wbits is None:
            rule = "excluded" if name in excluded else None
            entry["input_rule"] = rule
            if rule is None:
                gaps.append({"name": name, "why": f"{entry['type']} left float (its weights are not quantized)"})
            else:
                cite(rule, name)
            layers.append(entry)
            continue
        if not seen:
            entry["input_from"] = "not reached" if traced else "unknown (not traced)"
            layers.append(entry)
            continue
        bits = [b for b, _, _ in seen]
        float_calls = [c for c in seen if c[0] is None]
        entry["input_bits"] = None if float_calls else max(bits)
        entry["input_from"] = seen[0][1]
        rule_ids = sorted({r for _, _, r in seen if r is not None})
        entry["input_rule"] = rule_ids[0] if len(rule_ids) == 1 else (rule_ids or None)
        for _, _, r in seen:
            if r is not None and r not in rules:
                gaps.append({"name": name, "why": f"input passes through {r!r}, which this architecture has no rule for"})
        if float_calls:
            rule = next((r for _, _, r in float_calls if r is not None), None)
            if rule is None and traced:
                gaps.append({"name": name, "why": "float input computed inside the model (no quantizer before it)"})
        for r in rule_ids:
            if r in rules:
                cite(r, name)
        layers.append(entry)
    act_q = [m for m in model.modules() if isinstance(m, ActQuantizer)]
    outputs = [{"name": n, "type": _base_class_name(m), "bits": int(m.output_quantizer.bits)}
               for n, m in model.named_modules() if isinstance(m, OutputQuantized)]
    quantized = [e for e in layers if e["weight_bits"] is not None]
    return {
        "traced": traced,
        "layers": layers,
        "output_quantized": outputs,
        "activation_quantizers": len(act_q),
        "float": floats,
        "gaps": gaps,
        "counts": {
            "conv_linear": len(layers),
            "quantized_layers": len(quantized),
            "quantized_inputs": sum(e["input_bits"] is not None for e in quantized),
            "float_inputs_by_rule": sum(e["input_bits"] is None and e["input_rule"] is not None for e in quantized),
            "activation_quantizers": len(act_q),
            "gaps": len(gaps),
        },
    }


def coverage_report(model: nn.Module) -> dict[str, Any]:
    """The coverage report ``quantize_model`` recorded on ``model`` (plain JSON: layers, float rules, gaps)."""
    report = getattr(model, COVERAGE_ATTR, None)
    if report is None:
        from ..errors import SynQError

        raise SynQError(f"{type(model).__name__} has no coverage report: quantize it with quantize_model first")
    return report


def coverage_summary(report: dict[str, Any]) -> dict[str, Any]:
    """A short JSON summary for ``results.json`` and the model card: counts, float rules, gaps, W/A bits."""
    counts = report["counts"]
    quantized = [e for e in report["layers"] if e["weight_bits"] is not None]
    w_bits = sorted({e["weight_bits"] for e in quantized})
    a_bits = sorted({e["input_bits"] for e in quantized if e["input_bits"] is not None})
    return {
        "architecture": report.get("architecture"),
        "placement": report.get("placement"),
        "deploy_placement": report.get("deploy_placement", "off"),
        "weight_bits": w_bits,
        "input_bits": a_bits,
        "quantized_layers": f"{counts['quantized_layers']}/{counts['conv_linear']}",
        "quantized_inputs": f"{counts['quantized_inputs']}/{counts['quantized_layers']}",
        "activation_quantizers": counts["activation_quantizers"],
        "float_by_rule": {k: {"count": v["count"], "rule": v["rule"]} for k, v in report["float"].items()},
        "gaps": len(report["gaps"]),
        "traced": report["traced"],
    }
