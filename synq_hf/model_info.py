"""``LoadedModel``: a classifier plus what synq_hf needs to know about it, whatever library it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

if TYPE_CHECKING:
    from .architectures import ArchSpec
    from .config import SynQConfig

Library = Literal["timm", "transformers"]
Family = Literal["cnn", "vit", "swin"]


@dataclass
class LoadedModel:
    """A loaded (float or quantized) image classifier and its metadata.

    ``data_config`` holds the preprocessing the model expects: ``mean``, ``std`` (tuples of 3 floats),
    ``input_size`` (C, H, W), ``interpolation`` (``"bilinear"``/``"bicubic"``...) and ``crop_pct``.
    Synthetic images live in the space normalized by ``mean``/``std``. ``spec`` is the architecture spec
    matched when the model was loaded (``None`` when built by hand: the pipeline then matches it once).
    """

    model: nn.Module
    model_id: str
    library: Library
    family: Family
    data_config: dict[str, Any]
    num_classes: int
    class_names: list[str] | None = None
    synq_config: SynQConfig | None = None
    base_model: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    spec: ArchSpec | None = field(default=None, repr=False, compare=False)

    @property
    def input_size(self) -> int:
        """Image side in pixels (the height of ``data_config['input_size']``)."""
        return int(self.data_config["input_size"][-2])

    @property
    def is_quantized(self) -> bool:
        return self.synq_config is not None


def model_num_classes(model: nn.Module) -> int | None:
    """Classes predicted by a timm (``num_classes``) or transformers (``config.num_labels``) classifier."""
    n = getattr(model, "num_classes", None)
    if isinstance(n, int) and n > 0:
        return n
    n = getattr(getattr(model, "config", None), "num_labels", None)
    return n if isinstance(n, int) and n > 0 else None


def model_logits(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Logits of a timm module (returns a tensor) or a transformers model (returns ``.logits``)."""
    out = model(pixel_values)
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, (tuple, list)):
        logits = out[0]
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"cannot find logits in the output of {type(model).__name__}: {type(out).__name__}")
    return logits
