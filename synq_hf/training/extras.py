"""The authors' extras, off unless a recipe turns them on: HAST feature alignment and the sign-gradient loss.

* HAST feature alignment: after every residual/transformer block, the channel attention
  ``normalize(mean_spatial(A²))`` of student and teacher are matched by MSE, summed over blocks.
  (The authors hook the residual branch; we hook the block output, which every architecture has.)
* Perturbed-sample loss: the inputs are moved by ``eps · sign(∇_x L)`` (FGSM-style, towards where the
  student disagrees most with the teacher) and the KD + selective-CE loss is added on the moved inputs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..architectures import ArchSpec, get_spec
from ..errors import UnsupportedModelError


def feature_modules(model: nn.Module, spec: ArchSpec | None = None) -> list[str]:
    """Names of the residual / transformer blocks whose outputs HAST aligns (the spec's ``feature_blocks``;
    ``spec``: the model's spec when the caller already matched it)."""
    spec = spec if spec is not None else get_spec(model)
    names = spec.feature_blocks(model)
    if not names:
        raise UnsupportedModelError(
            f"HAST feature alignment found no residual or transformer blocks in {type(model).__name__} ({spec.name})"
        )
    return names


def channel_attention(feature: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """L2-normalized per-channel energy ``mean(A²)`` over positions: (B, C)."""
    f = feature.float().pow(2)
    if f.dim() == 3:  # tokens (B, N, C)
        att = f.mean(dim=1)
    elif f.dim() == 4:
        att = f.mean(dim=(1, 2)) if channels_last else f.mean(dim=(2, 3))
    else:
        raise UnsupportedModelError(f"cannot take channel attention of a {f.dim()}-D feature")
    return F.normalize(att, dim=1)


class FeatureCapture:
    """Context manager recording the channel attention of each named block's output during one forward."""

    def __init__(self, model: nn.Module, names: list[str], *, channels_last: bool, detach: bool) -> None:
        self.modules = [model.get_submodule(n) for n in names]
        self.channels_last, self.detach = channels_last, detach
        self.features: list[torch.Tensor] = []
        self._handles: list[Any] = []

    def _hook(self, module: nn.Module, args: Any, out: Any) -> None:
        t = out[0] if isinstance(out, (tuple, list)) else out
        att = channel_attention(t, self.channels_last)
        self.features.append(att.detach() if self.detach else att)

    def __enter__(self) -> FeatureCapture:
        self._handles = [m.register_forward_hook(self._hook) for m in self.modules]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def feature_alignment_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Sum over blocks of the MSE between student and teacher channel attentions."""
    if len(student) != len(teacher) or not student:
        raise UnsupportedModelError(
            f"HAST feature alignment captured {len(student)} student and {len(teacher)} teacher blocks"
        )
    return sum((s - t).pow(2).mean() for s, t in zip(student, teacher))  # type: ignore[return-value]


def sign_perturbation(loss: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """``x + eps · sign(∂loss/∂x)`` detached; ``x`` must be a leaf that requires grad (graph is kept)."""
    (grad,) = torch.autograd.grad(loss, x, retain_graph=True)
    return (x + eps * grad.sign()).detach()
