"""Block reconstruction (BRECQ/QDrop/Genie setting, zero-shot): the loop over units, checkpoints and resume.

For each unit in forward order (:mod:`.units`), on the reconstruction images:

1. cache the float network's unit inputs ``x`` and outputs ``y`` (one stopped forward of the float model per
   batch) and the quantized network's unit inputs ``x_q`` (earlier units already reconstructed and hard);
2. swap an :class:`AdaRoundQuantizer` onto every quantized layer of the unit and optimize, for
   ``reconstruct_iterations`` steps of ``reconstruct_batch_size`` images, ``sum_c (unit(x_mix) - y)^2`` (summed
   over channels, averaged over the rest) plus the annealed rounding regulariser, where ``x_mix`` takes each
   element from ``x_q`` or ``x`` and every activation quantizer of the unit leaves each element float, both with
   probability ``reconstruct_qdrop`` (QDrop). Adam trains the rounding variables, the per-channel weight step sizes
   and the LSQ activation ranges (cosine decay on the last two);
3. harden the rounding, and save the model's state and the progress to the work folder.

An interrupted run resumes at the first unfinished unit and gives the same weights as an uninterrupted one:
every unit draws its batches and QDrop masks from its own generator, seeded by ``(seed, unit index)``.

SynQ on top (:mod:`.synq`) adds its output terms to the last block's loss. Reconstruction runs on one process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn
from tqdm.auto import tqdm

from ..apply import quant_mode
from ..architectures import get_spec
from ..config import SynQConfig
from ..errors import CheckpointError, ConfigError, SynQError
from ..quant import ActQuantizer, WeightQuantizer
from .qdrop import MaskBank, qdrop_mix, training_quantizers
from .rounding import AdaRoundQuantizer, RoundingSchedule, rectified_sigmoid, rounding_regularizer
from .units import Unit, collect, reconstruction_units, run_unit

__all__ = ["PROGRESS_FILE", "STATE_FILE", "ReconstructionReport", "reconstruct", "reconstruction_fingerprint"]

logger = logging.getLogger(__name__)

STATE_FILE = "reconstruction_state.safetensors"
PROGRESS_FILE = "reconstruction_progress.json"
LOG_EVERY = 100  # steps between loss read-outs (the only host syncs of the loop)


@dataclass
class ReconstructionReport:
    """What ran: the units in order, and per unit its steps, wall and CPU seconds (this process, all threads) and
    final losses."""

    units: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_units: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"units": self.units, "seconds": round(self.seconds, 1), "resumed_units": self.resumed_units}


# -- losses ---------------------------------------------------------------------------------------------------


def reconstruction_loss(out: torch.Tensor, target: torch.Tensor, channels_first: bool) -> torch.Tensor:
    """Squared error summed over the channel (feature) axis and averaged over the rest (BRECQ, Genie)."""
    dim = 1 if channels_first and out.dim() == 4 else -1
    return (out.float() - target.float()).pow(2).sum(dim).mean()


# -- checkpoints ----------------------------------------------------------------------------------------------


def reconstruction_fingerprint(config: SynQConfig, units: list[Unit], images: torch.Tensor) -> dict[str, Any]:
    """What must match for a work folder to be resumed: every setting, the unit order and the images' hash."""
    digest = hashlib.sha256(images.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()
    return {"config": config.to_dict(), "units": [u.name for u in units], "images_sha256": digest,
            "num_images": len(images)}


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(os.fspath(tmp))
    os.replace(tmp, path)


def _save(student: nn.Module, work: Path, fingerprint: dict[str, Any], done: list[dict[str, Any]]) -> None:
    """The student's state after ``len(done)`` units, then the progress record (the record names the state)."""
    work.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in student.state_dict().items()}
    _atomic_write(work / STATE_FILE, lambda p: safetensors.torch.save_file(state, p))
    record = {"fingerprint": fingerprint, "done": done}
    _atomic_write(work / PROGRESS_FILE, lambda p: Path(p).write_text(json.dumps(record, indent=1) + "\n"))


def _resume(student: nn.Module, work: Path, fingerprint: dict[str, Any]) -> list[dict[str, Any]]:
    """Load the finished units from ``work`` (none when it holds no progress); refuse another run's folder."""
    progress = work / PROGRESS_FILE
    if not progress.is_file():
        return []
    try:
        record = json.loads(progress.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{progress} is unreadable ({e}); delete {work} to start over") from None
    saved = record.get("fingerprint", {})
    diff = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
    if diff:
        raise CheckpointError(f"{work} holds a reconstruction with other {', '.join(diff)}; resume with the same "
                              "settings and images, or delete that folder")
    try:
        state = safetensors.torch.load_file(os.fspath(work / STATE_FILE), device="cpu")
    except (OSError, safetensors.SafetensorError) as e:
        raise CheckpointError(f"{work / STATE_FILE} is missing or corrupt ({e}); delete {work} to start over") from None
    own = student.state_dict()
    if set(state) != set(own) or any(state[k].shape != own[k].shape for k in own):
        raise CheckpointError(f"{work / STATE_FILE} belongs to another model; delete {work} to start over")
    student.load_state_dict(state, strict=True)
    return list(record.get("done", []))


@torch.no_grad()
def _largest_activation(student: nn.Module, unit: Unit, units: list[Unit], x: torch.Tensor,
                        image_shape: tuple[int, ...]) -> int:
    """Elements of the largest tensor any activation quantizer of ``unit`` sees for a batch like ``x``."""
    modules = dict(student.named_modules())
    sizes = [0]
    handles = [modules[n].register_forward_pre_hook(lambda m, a: sizes.append(a[0].numel()))
               for n in unit.act_quantizers]
    try:
        run_unit(student, unit, x, units, image_shape)
    finally:
        for h in handles:
            h.remove()
    return max(sizes)


# -- one unit -------------------------------------------------------------------------------------------------


def _unit_seed(seed: int, index: int) -> int:
    return (seed * 1_000_003 + index * 7919 + 17) % (2**62)


def _check_settings(config: SynQConfig) -> None:
    if not config.learnable_weight_scale or not config.learnable_act_scale:
        raise ConfigError("block reconstruction learns the weight step sizes and activation ranges: set "
                          "learnable_weight_scale=True and learnable_act_scale=True")


@torch.no_grad()
def _undecided(quantizers: list[AdaRoundQuantizer]) -> float:
    """Fraction of rounding variables still strictly between 0.01 and 0.99 (0 when the regulariser converged)."""
    if not quantizers:
        return 0.0
    counts = [((h > 0.01) & (h < 0.99)).sum() for h in (rectified_sigmoid(q.logits) for q in quantizers)]
    return round(float(torch.stack(counts).sum()) / sum(q.logits.numel() for q in quantizers), 4)


@torch.no_grad()
def _harden(quantizers: list[AdaRoundQuantizer]) -> None:
    for q in quantizers:
        q.harden()


def _unit_optimizers(rounders: list[AdaRoundQuantizer], act_qs: list[ActQuantizer], config: SynQConfig
                     ) -> tuple[list[torch.optim.Optimizer], Any]:
    """Adam on the rounding variables, Adam with a cosine schedule on the learned weight and activation scales."""
    rounding = [q.logits for q in rounders]
    w_scales = [q.base.scale for q in rounders]
    a_params = [p for q in act_qs if q.learnable for p in (q.scale, q.zero_point)]
    for p in (*rounding, *w_scales, *a_params):
        p.requires_grad_(True)
    optimizers = [torch.optim.Adam(rounding, lr=config.reconstruct_lr)] if rounding else []
    groups = [g for g in ({"params": w_scales, "lr": config.reconstruct_lr_weight_scale},
                          {"params": a_params, "lr": config.reconstruct_lr_act_scale})
              if g["params"] and g["lr"] > 0]
    if not groups:
        return optimizers, None
    opt_scale = torch.optim.Adam(groups)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt_scale, T_max=config.reconstruct_iterations)
    return [*optimizers, opt_scale], sched


class _LossMeter:
    """Running means of a unit's loss parts over ``LOG_EVERY`` steps; stops the run in one line on a non-finite loss."""

    def __init__(self, unit: str) -> None:
        self.unit, self.sums, self.count, self.last = unit, {}, 0, {}

    def add(self, parts: dict[str, torch.Tensor], step: int, *, last_step: bool) -> bool:
        """Adds one step's parts; returns True when it has just refreshed ``last`` (every ``LOG_EVERY`` steps)."""
        for k, v in parts.items():
            v = v.detach()
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.count += 1
        if step % LOG_EVERY and not last_step:
            return False
        self.last = {k: float(v) / self.count for k, v in self.sums.items()}
        self.sums, self.count = {}, 0
        if not math.isfinite(sum(self.last.values())):
            raise SynQError(f"reconstruction of {self.unit} diverged at step {step} (loss {self.last}); lower "
                            "reconstruct_lr_weight_scale / reconstruct_lr_act_scale")
        return True


def _mask_bank(student: nn.Module, unit: Unit, units: list[Unit], batch: torch.Tensor, image_shape: tuple[int, ...],
               p: float, generator: torch.Generator) -> MaskBank | None:
    """QDrop's masks for this unit (none at ``p = 0``), sized for its largest quantized activation."""
    if p <= 0:
        return None
    largest = max(batch.numel(), _largest_activation(student, unit, units, batch, image_shape))
    return MaskBank(p, 4 * largest, generator, batch.device)


def _optimize_unit(
    student: nn.Module,
    unit: Unit,
    units: list[Unit],
    data: dict[str, torch.Tensor],
    config: SynQConfig,
    *,
    index: int,
    channels_first: bool,
    image_shape: tuple[int, ...],
    extra_loss: Any | None,
    progress: bool,
) -> dict[str, Any]:
    """Reconstruct one unit in place (rounding hard at the end); returns its record.

    ``extra_loss(student)`` (optional) builds an object whose ``scope()`` context wraps each step's forward and
    whose call ``(unit_output, batch_indices) -> (loss, parts)`` adds to the unit's loss.
    """
    modules = dict(student.named_modules())
    layers = [modules[n] for n in unit.layers if isinstance(getattr(modules[n], "weight_quantizer", None),
                                                           WeightQuantizer)
              and modules[n].weight_quantizer.enabled]
    act_qs = [modules[n] for n in unit.act_quantizers if isinstance(modules[n], ActQuantizer)]
    device = next(student.parameters()).device
    generator = torch.Generator(device=device).manual_seed(_unit_seed(config.seed, index))
    student.requires_grad_(False)
    rounders = [AdaRoundQuantizer.attach(layer) for layer in layers]
    extra = extra_loss(student) if extra_loss is not None else None
    try:
        steps = config.reconstruct_iterations
        optimizers, sched = _unit_optimizers(rounders, act_qs, config)
        schedule = RoundingSchedule(steps, config.reconstruct_warmup, config.reconstruct_beta_start,
                                    config.reconstruct_beta_end)
        x_fp, x_q, y = data["x"], data["x_q"], data["y"]
        n, batch = len(y), min(config.reconstruct_batch_size, len(y))
        masks = _mask_bank(student, unit, units, x_q[:batch], image_shape, config.reconstruct_qdrop, generator)
        order = torch.randperm(n, generator=generator, device=device)
        pos = 0
        meter = _LossMeter(unit.name)
        bar = tqdm(range(1, steps + 1), desc=f"reconstruct {index + 1}/{len(units)} {unit.name}", unit="step",
                   disable=not progress, leave=False)
        start, cpu_start = time.perf_counter(), time.process_time()
        for step in bar:
            if pos + batch > n:
                order, pos = torch.randperm(n, generator=generator, device=device), 0
            idx = order[pos:pos + batch]
            pos += batch
            x_in = x_fp[idx] if unit.kind == "stem" else qdrop_mix(x_q[idx], x_fp[idx], masks)
            with training_quantizers(act_qs, masks), (extra.scope() if extra is not None else nullcontext()):
                out = run_unit(student, unit, x_in, units, image_shape)
                parts = {"rec": reconstruction_loss(out, y[idx], channels_first)}
                loss = parts["rec"]
                if extra is not None:
                    extra_value, extra_parts = extra(out, idx)
                    loss = loss + extra_value
                    parts.update(extra_parts)
            if rounders and schedule.active(step) and config.reconstruct_round_weight > 0:
                parts["round"] = rounding_regularizer(rounders, schedule.beta(step))
                loss = loss + config.reconstruct_round_weight * parts["round"]
            for o in optimizers:
                o.zero_grad(set_to_none=True)
            loss.backward()
            for o in optimizers:
                o.step()
            if sched is not None:
                sched.step()
            if meter.add(parts, step, last_step=step == steps):
                bar.set_postfix({k: f"{v:.4g}" for k, v in meter.last.items()}, refresh=False)
        bar.close()
        undecided = _undecided(rounders)
        _harden(rounders)
        rounders = []
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    finally:
        for q in rounders:  # interrupted: the layer gets its own quantizer and weight back, unchanged
            q.restore()
        student.requires_grad_(False)
    return {"unit": unit.name, "kind": unit.kind, "layers": len(layers), "act_quantizers": len(act_qs),
            "steps": steps, "seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2), "final_losses": {k: round(v, 6) for k, v in meter.last.items()},
            "undecided_rounding": undecided}


@torch.no_grad()
def _run_batched(model: nn.Module, unit: Unit, units: list[Unit], x: torch.Tensor, batch_size: int,
                 image_shape: tuple[int, ...]) -> torch.Tensor:
    """``unit``'s outputs in ``model`` for inputs ``x``, batch by batch, without gradients."""
    return torch.cat([run_unit(model, unit, x[i:i + batch_size], units, image_shape)
                      for i in range(0, len(x), batch_size)])


# -- the loop -------------------------------------------------------------------------------------------------


def reconstruct(
    teacher: nn.Module,
    student: nn.Module,
    images: torch.Tensor,
    config: SynQConfig,
    *,
    work_dir: str | os.PathLike | None = None,
    extra_loss_factory: Callable[[Unit, list[Unit]], Any] | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    finish: Callable[[], dict[str, Any]] | None = None,
) -> ReconstructionReport:
    """Reconstruct calibrated fake-quant ``student`` unit by unit against float ``teacher`` on ``images``, in place.

    ``student`` must come from :func:`synq_hf.apply.quantize_model` with ``learnable_weight_scale`` and
    ``learnable_act_scale`` and be calibrated (the ranges the reconstruction starts from). ``images`` is
    (N, C, H, W) in the teacher's normalized space, on the models' device. With ``work_dir`` every finished unit
    is saved there and a later call with the same arguments resumes after the last one saved.
    ``extra_loss_factory(unit, units)`` may return a function ``(unit_output, batch_indices) -> (loss, parts)``
    added to that unit's loss (SynQ's output terms); ``finish()`` (optional) runs after the last unit, is saved
    like a unit and returns its record; ``stop_after`` ends the run after that many units (tests).
    """
    _check_settings(config)
    if images.dim() != 4 or len(images) == 0:
        raise SynQError(f"reconstruction needs a batch of images (N, C, H, W), got shape {tuple(images.shape)}")
    start = time.perf_counter()
    teacher.eval()
    student.eval()
    spec = get_spec(teacher)
    channels_first = spec.family == "cnn" and not spec.channels_last_features
    image_shape = tuple(images.shape[1:])
    units = reconstruction_units(student, images[:2])
    fingerprint = reconstruction_fingerprint(config, units, images)
    work = Path(work_dir) if work_dir is not None else None
    done = _resume(student, work, fingerprint) if work is not None else []
    report = ReconstructionReport(resumed_units=len(done))
    report.units = list(done)
    bs = max(config.calibration_batch_size, config.reconstruct_batch_size)
    carried: tuple[torch.Tensor, torch.Tensor] | None = (images, images)  # the stem reads the images
    for index, unit in enumerate(units):
        if stop_after is not None and index >= stop_after:
            break
        with quant_mode(student, "quantize"):
            if unit.chained and carried is not None:
                x_fp, x_q = carried
            else:  # not the previous unit's output: forwards of the models, stopped at its input
                x_fp, _ = collect(teacher, unit, units, images, bs, outputs=False)
                x_q, _ = collect(student, unit, units, images, bs, outputs=False)
            y = _run_batched(teacher, unit, units, x_fp, bs, image_shape)
            if index >= len(done):  # (units loaded from the work folder only pass their data on)
                extra = extra_loss_factory(unit, units) if extra_loss_factory is not None else None
                record = _optimize_unit(student, unit, units, {"x": x_fp, "x_q": x_q, "y": y}, config,
                                        index=index, channels_first=channels_first, image_shape=image_shape,
                                        extra_loss=extra, progress=progress)
                report.units.append(record)
                logger.info("reconstructed %s (%d/%d) in %.1f s: %s, undecided rounding %.4f", unit.name, index + 1,
                            len(units), record["seconds"], record["final_losses"], record["undecided_rounding"])
                if work is not None:
                    _save(student, work, fingerprint, report.units)
            following = units[index + 1] if index + 1 < len(units) else None
            carried = None
            if following is not None and following.chained:
                carried = (y, _run_batched(student, unit, units, x_q, bs, image_shape))
        del x_fp, x_q, y
    if finish is not None and len(report.units) == len(units) and (stop_after is None or stop_after > len(units)):
        record = finish()
        report.units.append(record)
        if work is not None:
            _save(student, work, fingerprint, report.units)
    report.seconds = time.perf_counter() - start
    return report
