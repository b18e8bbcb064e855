"""A textbook Grad-CAM, written independently of ``synq_hf.training.cam``, for the tests to compare against.

Separate forward with a hook on the target, ``retain_grad`` on the activation, a full backward of the summed class
scores; channel weights = spatially averaged gradients (clamped to ``target.weight_floor`` when set), ReLU of the
weighted sum, bilinear upsampling to the input (``target.upsample``), then per-sample min-max with the library's
documented floor: the divisor is at least 1% of the map's pre-ReLU peak magnitude (and 1e-8).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from synq_hf.model_info import model_logits


def textbook_grad_cam(model: torch.nn.Module, x: torch.Tensor, classes: torch.Tensor, target) -> torch.Tensor:
    """(B, P) normalized maps of ``model`` (a deep copy runs; the original is untouched)."""
    model = copy.deepcopy(model).requires_grad_(False)
    store: dict[str, torch.Tensor] = {}
    module = model.get_submodule(target.module)

    def keep(t):
        t = t[0] if isinstance(t, (tuple, list)) else t
        store["a"] = t
        return None

    if target.site == "input":
        handle = module.register_forward_pre_hook(lambda m, args: keep(args))
    else:
        handle = module.register_forward_hook(lambda m, args, out: keep(out))
    with torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)  # so every activation records a graph with frozen weights
        logits = model_logits(model, x)
        handle.remove()
        act = store["a"]
        act.retain_grad()
        logits.gather(1, classes.view(-1, 1)).sum().backward()
    a, g = act.detach().double(), act.grad.double()
    if target.layout == "nchw":
        w = g.mean(dim=(2, 3))
        if target.weight_floor is not None:
            w = torch.clamp(w, min=target.weight_floor)
        raw = (a * w[:, :, None, None]).sum(dim=1, keepdim=True)  # (B, 1, h, w)
        cam = F.relu(raw)
        if target.upsample:
            cam = F.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
        raw, cam = raw.flatten(1), cam.flatten(1)
    else:
        if target.layout == "nhwc":
            a, g = a.flatten(1, 2), g.flatten(1, 2)
        else:
            a, g = a[:, target.num_prefix_tokens:], g[:, target.num_prefix_tokens:]
        w = g.mean(dim=1)
        if target.weight_floor is not None:
            w = torch.clamp(w, min=target.weight_floor)
        raw = (a * w[:, None, :]).sum(dim=2)
        cam = F.relu(raw)
    lo = cam.min(dim=1, keepdim=True).values
    hi = cam.max(dim=1, keepdim=True).values
    floor = torch.clamp(0.01 * raw.abs().max(dim=1, keepdim=True).values, min=1e-8)
    return ((cam - lo) / torch.maximum(hi - lo, floor)).float()
