"""Grad-CAM for SynQ's CAM alignment (idea I2): target layer per architecture, hooks, and the maps.

CNNs take it where the authors do (``cam_layer="last_conv"``): at the output of the last ``nn.Conv2d``, channel
weights clamped to >= 1e-10, map upsampled bilinearly to the input; ``cam_layer="pool"`` takes it at the
global-pooling input, where it is classic CAM. ViT/Swin use their family's layer (the registry files say which).

The maps come from forward passes the step runs anyway. The teacher's forward replaces the target
activation with ``act.detach().requires_grad_()`` so only the part after it (the head) records a graph;
``torch.autograd.grad`` to that activation gives the channel weights. The student's activation is kept
in-graph: ``autograd.grad(score, act, retain_graph=True)`` gives its weights (treated as constants),
and the loss gradient flows back through the activation. Hooks live for one forward only.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..architectures import ArchSpec, CamTarget, find_spec, supported_families
from ..config import LossSettings
from ..errors import ConfigError, UnsupportedModelError
from ..model_info import model_logits
from ..precision import float32

__all__ = ["CamHook", "CamTarget", "compute_cam", "grad_cam_map", "resolve_cam_target"]

Size = tuple[int, int]


def resolve_cam_target(model: nn.Module, layer: str | None = None, *, spec: ArchSpec | None = None) -> CamTarget:
    """The Grad-CAM target of ``model``, from its architecture spec (``synq_hf.architectures``).

    CNNs: the output of the last conv (``layer="last_conv"``, the authors') or the feature map entering global
    pooling (``"pool"``, classic CAM); ``None`` is the config's default ``cam_layer``. ViT/DeiT: the output of
    the last block's first LayerNorm (the last block's output reaches the head only through the class token);
    Swin: the last stage (``layer`` does not apply). Names refer to the float model and stay valid on its
    quantized copy (in-place subclasses). ``spec``: the model's spec when the caller already matched it.
    """
    layer = LossSettings.cam_layer if layer is None else layer
    if layer not in ("last_conv", "pool"):
        raise ConfigError(f"cam_layer={layer!r} is not allowed; choose one of ['last_conv', 'pool']")
    spec = spec if spec is not None else find_spec(model)
    if spec is None:
        raise UnsupportedModelError(
            f"cannot find a Grad-CAM target layer in {type(model).__name__}: supported are {supported_families()}"
        )
    if layer == "pool" and spec.pool_cam_target is not None:
        return spec.pool_cam_target(model)
    return spec.cam_target(model)


class CamHook:
    """Context manager: one hook on the target module for one forward; removed on exit, even on error.

    ``detach=True`` (teacher) swaps the activation for a detached leaf that requires grad, so only the
    layers after it build a graph; ``detach=False`` (student) just records the in-graph activation.
    """

    def __init__(self, model: nn.Module, target: CamTarget, *, detach: bool) -> None:
        try:
            self.module = model.get_submodule(target.module)
        except AttributeError:
            raise UnsupportedModelError(
                f"Grad-CAM target {target.module!r} does not exist in {type(model).__name__}"
            ) from None
        self.target, self.detach = target, detach
        self.activation: torch.Tensor | None = None
        self._handle: Any = None

    def _swap(self, value: Any) -> Any:
        first = value[0] if isinstance(value, (tuple, list)) else value
        if not isinstance(first, torch.Tensor):
            raise UnsupportedModelError(f"Grad-CAM target {self.target.module!r} does not produce a tensor")
        if self.detach:
            first = first.detach().requires_grad_(True)
        self.activation = first
        if not self.detach:
            return None
        return (first, *value[1:]) if isinstance(value, (tuple, list)) else first

    def __enter__(self) -> CamHook:
        if self.target.site == "output":
            self._handle = self.module.register_forward_hook(lambda m, a, out: self._swap(out))
        else:
            self._handle = self.module.register_forward_pre_hook(lambda m, a: self._swap(a))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def take(self) -> torch.Tensor:
        """The captured activation (raises when the hooked module never ran)."""
        if self.activation is None:
            raise UnsupportedModelError(f"the Grad-CAM target {self.target.module!r} was not reached by the forward")
        act, self.activation = self.activation, None
        return act


def minmax_normalize(cam: torch.Tensor, eps: float = 1e-8, flat: float = 1e-2,
                     reference: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample min-max normalization of (B, P) maps to [0, 1], with a floor on the divisor.

    The divisor is at least ``flat`` × ``reference`` (per sample; default the map's own peak magnitude) and
    ``eps``. Grad-CAM passes the peak of the map *before* its ReLU: when the class evidence is almost all
    negative, the ReLU leaves a tiny bump whose plain min-max normalization stretches it to 1 and multiplies
    its gradient by 1 / (its height). That single-step spike (CAM gradient norms of 1e5-1e6 against < 20
    otherwise) is what sent unclipped fine-tuning to chance (BENCHMARKS.md). An all-zero map stays 0.
    """
    lo = cam.amin(dim=1, keepdim=True)
    hi = cam.amax(dim=1, keepdim=True)
    ref = cam.detach().abs().amax(dim=1, keepdim=True) if reference is None else reference.detach().reshape(-1, 1)
    floor = (flat * ref).clamp_min(eps)
    return (cam - lo) / torch.maximum(hi - lo, floor)


def grad_cam_map(act: torch.Tensor, grad: torch.Tensor, target: CamTarget, size: Size | None = None) -> torch.Tensor:
    """Normalized Grad-CAM ``ReLU(Σ_c w_c·A_c)`` with ``w_c`` = spatially averaged ``grad``; returns (B, P).

    ``grad`` is detached (the channel weights are constants); the map stays differentiable in ``act``. With
    ``target.weight_floor`` the weights are clamped to at least it; with ``target.upsample`` and ``size`` (the
    input's H, W) the map is resized bilinearly to ``size`` after the ReLU and before the min-max, as the
    authors' Grad-CAM does (then P = H·W).
    """
    dtype = torch.float64 if act.dtype == torch.float64 else torch.float32
    with float32(act.device):  # the maps in float32 under autocast (bf16/fp16 fine-tuning)
        return _grad_cam_map(act.to(dtype), grad.detach().to(dtype), target, size)


def _grad_cam_map(act: torch.Tensor, grad: torch.Tensor, target: CamTarget, size: Size | None) -> torch.Tensor:
    if target.layout == "nchw":
        a, g = act.flatten(2), grad.flatten(2)  # (B, C, P)
        weights = g.mean(dim=2)
        if target.weight_floor is not None:
            weights = weights.clamp_min(target.weight_floor)
        cam = torch.einsum("bcp,bc->bp", a, weights)
    else:
        if target.layout == "nhwc":
            a, g = act.flatten(1, 2), grad.flatten(1, 2)  # (B, P, C)
        else:
            k = target.num_prefix_tokens
            a, g = act[:, k:], grad[:, k:]
        weights = g.mean(dim=1)
        if target.weight_floor is not None:
            weights = weights.clamp_min(target.weight_floor)
        cam = torch.einsum("bpc,bc->bp", a, weights)
    cam = cam.float()
    peak = cam.detach().abs().amax(dim=1)
    cam = F.relu(cam)
    if target.upsample and size is not None and target.layout == "nchw":
        h, w = act.shape[-2:]
        cam = F.interpolate(cam.view(-1, 1, h, w), size=tuple(size), mode="bilinear", align_corners=False).flatten(1)
    return minmax_normalize(cam, reference=peak)


def _class_score(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, classes.view(-1, 1)).sum()


def teacher_forward_cam(
    teacher: nn.Module, x: torch.Tensor, target: CamTarget, labels: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One teacher forward giving ``(logits, cam)``, both detached; ``labels=None`` targets the argmax class.

    Parameters get no gradients (the teacher's are frozen); only the layers after the target record a graph.
    The map is upsampled to ``x``'s size when the target says so.
    """
    with CamHook(teacher, target, detach=True) as hook, torch.enable_grad():
        logits = model_logits(teacher, x)
        act = hook.take()
        classes = labels if labels is not None else logits.detach().argmax(dim=1)
        if not logits.requires_grad:
            raise UnsupportedModelError(f"the logits of {type(teacher).__name__} do not depend on {target.module!r}")
        (grad,) = torch.autograd.grad(_class_score(logits, classes), act)
    return logits.detach(), grad_cam_map(act.detach(), grad, target, size=tuple(x.shape[-2:]))


def student_cam(logits: torch.Tensor, act: torch.Tensor, classes: torch.Tensor, target: CamTarget,
                size: Size | None = None) -> torch.Tensor:
    """The student's map from its training forward: channel weights by ``autograd.grad`` (graph kept);
    ``size`` is the input's (H, W), for targets that upsample."""
    (grad,) = torch.autograd.grad(_class_score(logits, classes), act, retain_graph=True)
    return grad_cam_map(act, grad, target, size=size)


def compute_cam(
    model: nn.Module, x: torch.Tensor, classes: torch.Tensor | None = None, target: CamTarget | None = None,
    *, layer: str | None = None,
) -> torch.Tensor:
    """Normalized Grad-CAM maps (B, P) of ``model`` on ``x`` for ``classes`` (default: argmax), for inspection;
    ``layer`` is a ``cam_layer`` value (default: the config's)."""
    target = target or resolve_cam_target(model, layer)
    return teacher_forward_cam(model, x, target, classes)[1]
