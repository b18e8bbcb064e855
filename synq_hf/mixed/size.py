"""The size arithmetic of a mixed-precision model: what ``synq_hf.hub.checkpoint.save_quantized`` will store.

The size of a model counts every tensor the saved folder holds (``model.safetensors`` and, for timm,
``quantizers.safetensors``): each quantized layer's codes at their true bit-width (``ceil(numel * bits / 8)``
bytes, :func:`synq_hf.quant.packing.code_bytes`), plus what does not depend on the bits: per-channel scales and
zero points, biases, BatchNorm parameters and statistics, activation ranges, and layers left in float. The
safetensors headers (JSON, a few KB with the qmap) are not counted. :func:`stored_tensor_bytes` reads the same
quantity back from a saved folder.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..apply import quantize_model
from ..config import SynQConfig
from ..quant.packing import code_bytes, pack_model, packed_layers

__all__ = ["SizeModel", "measurement_config", "stored_tensor_bytes"]


def measurement_config(config: SynQConfig) -> SynQConfig:
    """``config`` without its budgets and per-layer bits: the uniform model the sizes and sensitivities start from."""
    return config.replace(size_budget=None, avg_w_bits=None, avg_a_bits=None, layer_w_bits={}, layer_a_bits={},
                          w_bits=int(config.w_bits), a_bits=int(config.a_bits))


@dataclass
class SizeModel:
    """Per quantized layer its weight count, and the bytes stored whatever the bits (``fixed_bytes``)."""

    numel: dict[str, int]
    fixed_bytes: int
    float_bytes: int

    @classmethod
    def from_quantized(cls, quantized: nn.Module, float_model: nn.Module) -> SizeModel:
        """Measure a quantized copy (any bits) the way :func:`synq_hf.quant.packing.pack_model` packs it."""
        layers = packed_layers(quantized)
        tensors, qmap = pack_model(quantized)
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        codes = sum(code_bytes(layers[k.removesuffix(".weight")].weight.numel(), info["bits"])
                    for k, info in qmap["weights"].items())
        numel = {name: int(layer.weight.numel()) for name, layer in layers.items()}
        floats = sum(t.numel() * t.element_size() for t in float_model.state_dict().values())
        return cls(numel=numel, fixed_bytes=total - codes, float_bytes=int(floats))

    @classmethod
    def of(cls, model: nn.Module, config: SynQConfig) -> SizeModel:
        """Measure a float ``model`` quantized with ``config`` (its budget and per-layer bits left out)."""
        quantized = quantize_model(copy.deepcopy(model), measurement_config(config), on_gap="warn")
        return cls.from_quantized(quantized, model)

    def layer_bytes(self, name: str, bits: int) -> int:
        return code_bytes(self.numel[name], bits)

    def total_bytes(self, layer_bits: dict[str, int]) -> int:
        """The stored bytes of the model with ``layer_bits`` (one entry per quantized layer)."""
        return self.fixed_bytes + sum(self.layer_bytes(n, layer_bits[n]) for n in self.numel)

    def average_bits(self, layer_bits: dict[str, int]) -> float:
        """Weight bits per quantized weight."""
        total = sum(self.numel.values())
        return sum(self.numel[n] * layer_bits[n] for n in self.numel) / max(total, 1)


def stored_tensor_bytes(folder: str | os.PathLike) -> int:
    """The bytes of every tensor in a saved folder's ``*.safetensors`` files (headers not counted)."""
    from safetensors import safe_open

    total = 0
    for path in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                t = f.get_slice(key)
                numel = 1
                for d in t.get_shape():
                    numel *= int(d)
                total += numel * _dtype_size(t.get_dtype())
    return total


def _dtype_size(name: str) -> int:
    sizes: dict[str, Any] = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                             "U8": 1, "BOOL": 1, "U16": 2, "U32": 4, "U64": 8}
    if name not in sizes:
        return torch.empty((), dtype=getattr(torch, name.lower(), torch.float32)).element_size()
    return sizes[name]
