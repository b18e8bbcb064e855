"""What any image classifier answers whatever library it came from: its logits and its number of classes."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


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


def hooked_forward(model: nn.Module, example: torch.Tensor, handles: Iterable[torch.utils.hooks.RemovableHandle]
                   ) -> None:
    """One eval-mode forward of ``example`` for the hooks behind ``handles`` to observe; then the hooks are removed
    and the model's train/eval mode restored, also when the forward raises."""
    was_training = model.training
    try:
        model.eval()
        model_logits(model, example)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
