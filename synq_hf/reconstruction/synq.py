"""SynQ on top of block reconstruction: its output terms (selective CE, Grad-CAM alignment, KD) for the last block,
or a short whole-network phase with the rounding fixed.

The terms come from the training package's public functions (``kd_loss``, ``selective_ce``,
``cam_alignment_loss``, ``teacher_forward_cam``, ``student_cam``, ``CamHook``) and the registry's Grad-CAM target,
so a change there applies here too. The teacher's logits and maps are computed once per image.

* ``reconstruct_synq_stage="last_block"``: the last block's loss adds ``lambda_ce`` × selective CE and ``lambda_cam``
  × Grad-CAM alignment on the network output (the block's output run through the head).
* ``"network"``: after the last unit, ``reconstruct_synq_steps`` steps over the whole network of SynQ's Eq. 6
  (``kd_weight`` × KD + ``lambda_ce`` × selective CE + ``lambda_cam`` × CAM), training only continuous parameters
  (weight step sizes, activation ranges, biases and normalization affines): every weight keeps its integer code
  (:meth:`AdaRoundQuantizer.attach` with ``fixed=True``), so the rounding stays hard.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import SynQConfig
from ..errors import SynQError
from ..model_info import model_logits
from ..quant import ActQuantizer, QuantConv2d, QuantLinear, WeightQuantizer
from ..training.cam import CamHook, resolve_cam_target, student_cam, teacher_forward_cam
from ..training.losses import cam_alignment_loss, kd_loss, selective_ce
from .qdrop import training_quantizers
from .rounding import AdaRoundQuantizer
from .units import Unit, run_unit

__all__ = ["SynQTerms", "synq_network_phase"]

logger = logging.getLogger(__name__)


class SynQTerms:
    """The teacher's logits and Grad-CAM maps on the reconstruction images, and SynQ's loss against them."""

    def __init__(self, teacher: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: SynQConfig,
                 batch_size: int = 64) -> None:
        if labels is None or len(labels) != len(images):
            raise SynQError("SynQ on top of reconstruction needs one label per image (the synthetic labels)")
        self.config = config
        self.labels = labels.to(images.device).long()
        self.target = resolve_cam_target(teacher, config.cam_layer) if config.lambda_cam > 0 else None
        self.size = tuple(images.shape[-2:])  # the input's (H, W): maps that upsample (cam_layer="last_conv") match it
        logits, maps = [], []
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size]
            y = self.labels[i:i + batch_size] if config.cam_target == "label" else None
            if self.target is not None:
                t_logits, t_cam = teacher_forward_cam(teacher, x, self.target, y)
                maps.append(t_cam)
            else:
                with torch.no_grad():
                    t_logits = model_logits(teacher, x)
            logits.append(t_logits.detach())
        self.cam_inactive = False  # set when the CAM term had no trainable parameter before its target
        self.teacher_logits = torch.cat(logits)
        self.teacher_cams = torch.cat(maps) if maps else None

    @contextlib.contextmanager
    def capture(self, student: nn.Module) -> Iterator[CamHook | None]:
        """A hook on the student's Grad-CAM target for one forward (None without the CAM term)."""
        if self.target is None:
            yield None
            return
        with CamHook(student, self.target, detach=False) as hook:
            yield hook

    def loss(self, logits: torch.Tensor, hook: CamHook | None, idx: torch.Tensor, *,
             kd: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``lambda_ce`` × selective CE + ``lambda_cam`` × CAM (+ ``kd_weight`` × KD with ``kd``) on batch ``idx``."""
        cfg = self.config
        t_logits, y = self.teacher_logits[idx], self.labels[idx]
        ce, _ = selective_ce(logits, t_logits, y, cfg.tau)
        total = cfg.lambda_ce * ce
        parts = {"ce": ce}
        if kd:
            parts["kd"] = kd_loss(logits, t_logits, cfg.kd_temperature)
            total = total + cfg.kd_weight * parts["kd"]
        act = hook.take() if hook is not None else None
        if act is not None and not act.requires_grad:
            # the Grad-CAM target lies before every trained parameter of this stage (a ViT's target is the last
            # block's first LayerNorm, fed by the block's cached input): the term could train nothing, so it is left
            # out rather than computed as a constant
            if not self.cam_inactive:
                logger.info("SynQ on the last block: the Grad-CAM target %s comes before the block's trained layers; "
                            "only selective CE acts here (reconstruct_synq_stage='network' trains the CAM term)",
                            self.target.module)
            self.cam_inactive = True
        elif act is not None:
            classes = y if cfg.cam_target == "label" else t_logits.argmax(dim=1)
            parts["cam"] = cam_alignment_loss(student_cam(logits, act, classes, self.target, size=self.size),
                                              self.teacher_cams[idx])
            total = total + cfg.lambda_cam * parts["cam"]
        return total, parts

    def last_block(self, units: list[Unit], image_shape: tuple[int, ...]) -> Any:
        """The ``extra_loss`` of the last block: its output through the head, then :meth:`loss` (without KD)."""
        terms = self
        head = next((u for u in units if u.kind == "head"), None)
        if head is None:
            raise SynQError("SynQ on the last block needs the head to run after it")

        class LastBlock:
            def __init__(self, student: nn.Module) -> None:
                self.student = student
                self.hook: CamHook | None = None

            @contextlib.contextmanager
            def scope(self) -> Iterator[None]:
                with terms.capture(self.student) as hook:
                    self.hook = hook
                    yield

            def __call__(self, out: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
                logits = run_unit(self.student, head, out, units, image_shape)
                return terms.loss(logits, self.hook, idx, kd=False)

        return LastBlock


def _affine_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Biases and normalization scales/shifts: continuous parameters that leave every integer weight code as is."""
    params: list[nn.Parameter] = []
    for m in model.modules():
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)):
            params += [p for p in (m.weight, m.bias) if p is not None]
        elif isinstance(m, (QuantConv2d, QuantLinear)) and m.bias is not None:
            params.append(m.bias)
    return params


def synq_network_phase(student: nn.Module, images: torch.Tensor, terms: SynQTerms, config: SynQConfig, *,
                       seed: int, progress: bool = True) -> dict[str, Any]:
    """SynQ's Eq. 6 on the whole reconstructed network for ``reconstruct_synq_steps`` steps, weight codes fixed.

    Trains the per-channel weight step sizes, the LSQ activation ranges and the biases and normalization layers'
    affine parameters (Adam at ``reconstruct_lr_weight_scale``, the ranges at ``reconstruct_lr_act_scale``, cosine
    decay): every integer weight code stays, so the rounding stays hard. Returns its record.
    """
    layers = [m for m in student.modules() if isinstance(m, (QuantConv2d, QuantLinear))
              and isinstance(m.weight_quantizer, WeightQuantizer) and m.weight_quantizer.enabled]
    act_qs = [m for m in student.modules() if isinstance(m, ActQuantizer) and m.learnable]
    device = images.device
    generator = torch.Generator(device=device).manual_seed(seed)
    student.requires_grad_(False)
    fixed = [AdaRoundQuantizer.attach(layer, fixed=True) for layer in layers]
    steps, batch = config.reconstruct_synq_steps, min(config.reconstruct_batch_size, len(images))
    start, cpu_start = time.perf_counter(), time.process_time()
    last: dict[str, float] = {}
    try:
        w_scales = [q.base.scale for q in fixed]
        a_params = [p for q in act_qs for p in (q.scale, q.zero_point)]
        affine = _affine_parameters(student)
        for p in (*w_scales, *a_params, *affine):
            p.requires_grad_(True)
        groups = [g for g in ({"params": w_scales + affine, "lr": config.reconstruct_lr_weight_scale},
                              {"params": a_params, "lr": config.reconstruct_lr_act_scale}) if g["lr"] > 0]
        if not groups:
            raise SynQError("the SynQ network phase trains the step sizes: reconstruct_lr_weight_scale or "
                            "reconstruct_lr_act_scale must be > 0")
        opt = torch.optim.Adam(groups)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        order, pos = torch.randperm(len(images), generator=generator, device=device), 0
        sums: dict[str, torch.Tensor] = {}
        count = 0
        bar = tqdm(range(1, steps + 1), desc="reconstruct: SynQ network phase", unit="step", disable=not progress,
                   leave=False)
        for step in bar:
            if pos + batch > len(images):
                order, pos = torch.randperm(len(images), generator=generator, device=device), 0
            idx = order[pos:pos + batch]
            pos += batch
            with training_quantizers(act_qs, None), terms.capture(student) as hook:
                logits = model_logits(student, images[idx])
                loss, parts = terms.loss(logits, hook, idx, kd=True)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            for k, v in parts.items():
                sums[k] = sums[k] + v.detach() if k in sums else v.detach()
            count += 1
            if step % 50 == 0 or step == steps:
                last = {k: float(v) / count for k, v in sums.items()}
                sums, count = {}, 0
                bar.set_postfix({k: f"{v:.4g}" for k, v in last.items()}, refresh=False)
        bar.close()
        for q in fixed:
            q.harden()
        fixed = []
    finally:
        for q in fixed:
            q.restore()
        student.requires_grad_(False)
    return {"unit": "synq-network", "kind": "network", "layers": len(layers), "act_quantizers": len(act_qs),
            "steps": steps, "seconds": round(time.perf_counter() - start, 2),
            "cpu_seconds": round(time.process_time() - cpu_start, 2),
            "final_losses": {k: round(v, 6) for k, v in last.items()}}
