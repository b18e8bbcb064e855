"""Per-layer sensitivity from synthetic images alone (ZeroQ's measure).

The sensitivity of layer l at b bits is KL(p_float || p_l,b), averaged over the images: p_float the float model's
softmax output, p_l,b the output of the same model with only layer l's weights quantized to b bits (its range set
the way the config sets it: min-max, or the searched clip). For activations, only that one activation quantizer is
on (b bits, range calibrated on the same images). Summing these over layers is ZeroQ's additive model of the
whole network's loss, which the allocation minimizes.

The table is cached as JSON (``sensitivity.json`` in a work folder) after every layer, keyed by a fingerprint of
the model's weights, the images and the quantizer settings, so an interrupted run resumes where it stopped and a
changed model or image set is measured again.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..apply import act_quantizers, calibrate, iter_batches, quant_mode, quantize_model
from ..config import SynQConfig
from ..model_info import model_logits
from ..quant import ActQuantizer, QuantConv2d, QuantLinear, WeightQuantizer
from .size import measurement_config

logger = logging.getLogger(__name__)

__all__ = ["SENSITIVITY_FILE", "SensitivityTable", "activation_sensitivity", "weight_sensitivity"]

SENSITIVITY_FILE = "sensitivity.json"

# the settings that change how a quantizer computes (and so its sensitivity); budgets and candidates do not
_MEASURED_FIELDS = ("weight_granularity", "weight_symmetric", "act_symmetric", "ste", "act_range_init",
                    "weight_range_init", "range_search_p", "ema_momentum", "vit_placement", "first_layer_bits",
                    "last_layer_bits", "include", "exclude", "learnable_act_scale", "learnable_weight_scale",
                    "calibration_batch_size")


class SensitivityTable:
    """KL per (layer, bits) and per (activation quantizer, bits), saved to ``path`` after every entry when given."""

    def __init__(self, fingerprint: str, path: str | os.PathLike | None = None) -> None:
        self.fingerprint, self.path = fingerprint, Path(path) if path is not None else None
        self.weights: dict[str, dict[int, float]] = {}
        self.activations: dict[str, dict[int, float]] = {}
        self.elements: dict[str, int] = {}
        if self.path is not None and self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                logger.warning("ignoring the unreadable sensitivity cache %s (%s)", self.path, e)
                return
            if data.get("fingerprint") != fingerprint:
                logger.warning("%s was measured on another model, image set or quantizer setting: measuring again",
                               self.path)
                return
            self.weights = {k: {int(b): float(v) for b, v in d.items()} for k, d in data.get("weights", {}).items()}
            self.activations = {k: {int(b): float(v) for b, v in d.items()}
                                for k, d in data.get("activations", {}).items()}
            self.elements = {k: int(v) for k, v in data.get("elements", {}).items()}

    def save(self) -> None:
        """Write the table atomically (a crash never leaves half a file)."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"fingerprint": self.fingerprint, "measure": "kl",
                "weights": {k: {str(b): v for b, v in d.items()} for k, d in self.weights.items()},
                "activations": {k: {str(b): v for b, v in d.items()} for k, d in self.activations.items()},
                "elements": self.elements}
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)


def fingerprint(model: nn.Module, images: torch.Tensor, config: SynQConfig) -> str:
    """sha256 of the float weights, the images and the quantizer settings the sensitivities depend on."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    h.update(images.detach().cpu().float().contiguous().numpy().tobytes())
    h.update(json.dumps({k: getattr(config, k) for k in _MEASURED_FIELDS}, sort_keys=True, default=str).encode())
    return h.hexdigest()


@torch.no_grad()
def _reference(model: nn.Module, images: torch.Tensor, batch_size: int, device: Any) -> list[torch.Tensor]:
    return [F.log_softmax(model_logits(model, x.to(device)).float(), -1) for x in iter_batches(images, batch_size)]


@torch.no_grad()
def _kl(model: nn.Module, images: torch.Tensor, reference: list[torch.Tensor], batch_size: int, device: Any) -> float:
    """Mean over images of KL(reference || model), reference given as log-probabilities per batch."""
    total = 0.0
    for x, log_p in zip(iter_batches(images, batch_size), reference):
        log_q = F.log_softmax(model_logits(model, x.to(device)).float(), -1)
        total += float(F.kl_div(log_q, log_p, log_target=True, reduction="sum"))
    return max(total / len(images), 0.0)


def _quantized_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (QuantConv2d, QuantLinear))}


def weight_sensitivity(
    model: nn.Module,
    config: SynQConfig,
    images: torch.Tensor,
    candidates: dict[str, list[int]],
    table: SensitivityTable,
    *,
    device: Any = "cpu",
    progress: bool = True,
) -> dict[str, dict[int, float]]:
    """KL of the whole model when only layer l's weights are quantized at b bits, for every ``candidates[l]``.

    ``model`` is the float model; entries already in ``table`` are not measured again.
    """
    todo = [(n, b) for n, bits in candidates.items() for b in bits if b not in table.weights.get(n, {})]
    if todo:
        student = quantize_model(copy.deepcopy(model), measurement_config(config), on_gap="warn").to(device).eval()
        batch = config.calibration_batch_size
        reference = _reference(model, images, batch, device)
        layers = _quantized_layers(student)
        for layer in layers.values():
            layer.weight_quantizer.enabled = False
        with quant_mode(student, "float"), tqdm(total=len(todo), desc="sensitivity (weights)", unit="layer-bits",
                                                disable=not progress) as bar:
            for name, bits_list in candidates.items():
                layer = layers[name]
                kept = layer.weight_quantizer
                for bits in bits_list:
                    if bits in table.weights.get(name, {}):
                        continue
                    layer.weight_quantizer = _weight_quantizer_like(kept, bits, layer.weight)
                    table.weights.setdefault(name, {})[bits] = _kl(student, images, reference, batch, device)
                    bar.update()
                layer.weight_quantizer = kept
                table.save()
    return {n: {b: table.weights[n][b] for b in bits} for n, bits in candidates.items()}


def _weight_quantizer_like(q: WeightQuantizer, bits: int, weight: torch.Tensor) -> WeightQuantizer:
    new = WeightQuantizer(bits, q.symmetric, q.per_channel, range_init=q.range_init, learnable=q.learnable,
                          search_p=q.search_p).to(weight.device)
    new.bind(weight)
    new.init_range(weight)
    return new


def activation_sensitivity(
    model: nn.Module,
    config: SynQConfig,
    images: torch.Tensor,
    candidates: dict[str, list[int]],
    table: SensitivityTable,
    *,
    device: Any = "cpu",
    progress: bool = True,
) -> tuple[dict[str, dict[int, float]], dict[str, int]]:
    """(KL when only activation quantizer q is on at b bits, for every ``candidates[q]``; its elements per image).

    Measured on the placement's own quantizers (``deploy_placement`` sites stay at their fixed bits).
    """
    all_bits = sorted({b for bits in candidates.values() for b in bits})
    todo = [(n, b) for n, bits in candidates.items() for b in bits if b not in table.activations.get(n, {})]
    missing_elements = [n for n in candidates if n not in table.elements]
    if todo or missing_elements:
        batch = config.calibration_batch_size
        reference = _reference(model, images, batch, device)
        with tqdm(total=len(todo), desc="sensitivity (activations)", unit="act-bits", disable=not progress) as bar:
            for bits in all_bits:
                names = [n for n, b in candidates.items() if bits in b and bits not in table.activations.get(n, {})]
                if not names and not missing_elements:
                    continue
                student = _activation_student(model, config, bits, images, device)
                quantizers = {q.name: q for q in act_quantizers(student)}
                if missing_elements:
                    table.elements.update(_elements_per_image(student, quantizers, images[:1].to(device)))
                    missing_elements = []
                for name in names:
                    with quant_mode(student, "float"):
                        quantizers[name].mode = "quantize"
                        table.activations.setdefault(name, {})[bits] = _kl(student, images, reference, batch, device)
                    bar.update()
                    table.save()
        table.save()
    kl = {n: {b: table.activations[n][b] for b in bits} for n, bits in candidates.items()}
    return kl, {n: table.elements[n] for n in candidates}


def _activation_student(model: nn.Module, config: SynQConfig, bits: int, images: torch.Tensor,
                        device: Any) -> nn.Module:
    """The model with float weights and every placement quantizer at ``bits``, calibrated on ``images``."""
    cfg = measurement_config(config).replace(a_bits=bits, deploy_placement="off")
    student = quantize_model(copy.deepcopy(model), cfg, on_gap="warn").to(device).eval()
    for layer in _quantized_layers(student).values():
        layer.weight_quantizer.enabled = False
    calibrate(student, iter_batches(images, config.calibration_batch_size), device=device, progress=False)
    return student


@torch.no_grad()
def _elements_per_image(student: nn.Module, quantizers: dict[str, ActQuantizer], x: torch.Tensor) -> dict[str, int]:
    seen: dict[str, int] = {}
    hooks = [q.register_forward_hook(_recorder(seen, name)) for name, q in quantizers.items()]
    try:
        with quant_mode(student, "float"):
            model_logits(student, x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _recorder(seen: dict[str, int], name: str) -> Any:
    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        seen[name] = seen.get(name, 0) + int(args[0][0].numel())  # one image; a reused quantizer adds up

    return hook


def placement_activations(model: nn.Module, config: SynQConfig) -> dict[str, int]:
    """Name -> bits of the placement's activation quantizers (no ``deploy_placement`` sites) under ``config``."""
    cfg = measurement_config(config).replace(deploy_placement="off")
    student = quantize_model(copy.deepcopy(model), cfg, on_gap="warn")
    return {q.name: q.bits for q in act_quantizers(student)}
