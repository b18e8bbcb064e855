"""Synthesize images from a teacher: pick the objective by architecture, run groups in chunks, restart NaNs."""

from __future__ import annotations

import logging
import os
import random
from typing import Any

import datasets
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..architectures import SPECS, ArchSpec, find_spec
from ..config import SynQConfig
from ..distributed import Processes, processes
from ..errors import ConfigError, UnsupportedModelError
from ..hub.outputs import public_name
from ..model_info import model_num_classes
from ..pipeline import resolve_config
from ..precision import check_precision, wants_channels_last
from .cnn import BNStatsObjective
from .engine import run_groups
from .types import SynthesisDivergedError, SyntheticImages
from .vit import PatchSimilarityObjective

logger = logging.getLogger(__name__)

SUPPORTED = "CNNs with BatchNorm (BN-statistics synthesis) and ViT/DeiT/Swin attention models (patch-similarity synthesis)"
MAX_RESTARTS = 3


def synthesis_family(teacher: nn.Module, family: str | None = None, *, spec: ArchSpec | None = None) -> str:
    """The teacher's family from its architecture spec (``cnn``: BN statistics; ``vit``/``swin``: PSAQ-ViT).

    Raises a one-line ``UnsupportedModelError`` at once for architectures without a synthesis objective
    (no spec, or a spec such as LayerNorm CNNs that has none) or when ``family`` contradicts the spec.
    ``spec`` is the teacher's spec when the caller already matched it (default: matched here).
    """
    return synthesis_spec(teacher, family, spec=spec).family


def synthesis_spec(teacher: nn.Module, family: str | None = None, *, spec: ArchSpec | None = None) -> ArchSpec:
    """The teacher's architecture spec, checked as :func:`synthesis_family` describes; its ``synthesis`` field
    names the objective (``bn_stats`` or ``patch_similarity``)."""
    spec = spec if spec is not None else find_spec(teacher)
    what = type(teacher).__name__
    if spec is None:
        raise UnsupportedModelError(
            f"cannot synthesize images for {what}: no architecture spec recognises it; supported teachers are "
            f"{SUPPORTED} (families: {', '.join(s.name for s in SPECS)})"
        )
    if spec.synthesis is None:
        raise UnsupportedModelError(f"cannot synthesize images for {what} ({spec.name}): {spec.synthesis_hint}; "
                                    f"supported teachers are {SUPPORTED}")
    if family is not None and family != spec.family:
        raise UnsupportedModelError(
            f"cannot synthesize images for {what} as family {family!r}: it is a {spec.name} model "
            f"({'BatchNorm statistics' if spec.synthesis == 'bn_stats' else 'attention'}, family {spec.family!r}); "
            f"supported teachers are {SUPPORTED}"
        )
    return spec


def _group_seed(seed: int, group: int, attempt: int) -> int:
    """A 63-bit seed for one group's noise and labels, independent of how groups are chunked."""
    return int(np.random.SeedSequence([seed, group, attempt]).generate_state(1, np.uint64)[0] >> 1)


def _valid_range(data_config: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(data_config["mean"], dtype=torch.float32, device=device).view(-1, 1, 1)
    std = torch.tensor(data_config["std"], dtype=torch.float32, device=device).view(-1, 1, 1)
    return (0 - mean) / std, (1 - mean) / std


def _check_counts(num_images: int, batch: int, iterations: int) -> None:
    for name, value, low in (("num_images", num_images, 1), ("synthesis_batch_size", batch, 1),
                             ("synthesis_iterations", iterations, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name}={value!r} is not allowed; it must be an integer >= {low}")
    if num_images % batch:
        lower, upper = num_images // batch * batch, (num_images // batch + 1) * batch
        hint = f"{lower} or {upper}" if lower else f"{upper}"
        divisor = max(d for d in range(1, batch + 1) if num_images % d == 0)
        raise ConfigError(
            f"num_images={num_images} is not a multiple of synthesis_batch_size={batch} (BatchNorm statistics "
            f"and patch-similarity densities are per batch): set num_images (--num-images) to {hint}, or "
            f"synthesis_batch_size (--synthesis-batch-size) to a divisor of {num_images} (e.g. {divisor})"
        )


def generate_synthetic(
    teacher: nn.Module, config: SynQConfig, *, data_config: dict[str, Any], family: str | None = None,
    num_classes: int | None = None, num_images: int | None = None, iterations: int | None = None,
    seed: int | None = None, device: str | torch.device | None = None, progress: bool = True,
    checkpoint_dir: str | os.PathLike | None = None, fingerprint: dict[str, Any] | None = None,
    distributed: bool | None = None, spec: ArchSpec | None = None,
) -> SyntheticImages:
    """Synthesize images as tensors (no ``datasets`` overhead): the lower level of :func:`synthesize`.

    ``config`` may be unresolved; it is resolved (:func:`synq_hf.pipeline.resolve_config`, a no-op for a resolved
    config) for the teacher's family and input size and the resolved copy is returned in the result.
    ``num_images``/``iterations``/``seed`` override the config fields of the same role (before resolution, which
    makes an unset ``synthesis_batch_size`` ``min(num_images, the family's default)``). ``spec`` is the teacher's
    architecture spec when the caller already matched it; its ``synthesis`` field picks the objective. With ``checkpoint_dir``
    each finished group is saved there (:class:`~synq_hf.synthesis.groups.GroupStore`, keyed by ``fingerprint``
    and the resolved config) and groups already there are loaded instead of synthesized again.

    Under ``accelerate launch``/``torchrun`` with several processes (``distributed=None``: detected; ``False``:
    every process synthesizes everything alone) every process must call this: each optimizes its share of the
    groups and every process returns all images, the same as a single process with the same seed and
    ``synthesis_groups_per_forward`` would. A shared ``checkpoint_dir`` lets a rerun resume with any number of
    processes.
    """
    spec = synthesis_spec(teacher, family, spec=spec)
    family = spec.family
    input_size = tuple(int(v) for v in data_config["input_size"])
    overrides = {k: v for k, v in (("num_images", num_images), ("synthesis_iterations", iterations),
                                   ("seed", seed)) if v is not None}
    cfg = resolve_config(config.replace(**overrides) if overrides else config, family=family,
                         input_size=input_size[-1])
    n, batch, iters = cfg.num_images, cfg.synthesis_batch_size, cfg.synthesis_iterations
    _check_counts(n, batch, iters)
    device = torch.device(device) if device is not None else next(teacher.parameters()).device
    check_precision(cfg.synthesis_precision, device, what="synthesis_precision")
    if num_classes is None:
        num_classes = _num_classes(teacher)

    was_training = teacher.training
    grad_flags = [p.requires_grad for p in teacher.parameters()]
    teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    channels_last = wants_channels_last(family, device)
    if channels_last:
        teacher.to(memory_format=torch.channels_last)  # cuDNN's native layout; back to NCHW below
    try:
        labels_plan = [None] * (n // batch)
        centres = 0
        if cfg.synthesis_calibration_centres:
            # TexQ-style calibration centres: extra groups covering every class once, in class order.
            centre_labels = torch.arange(num_classes)
            centre_batch = min(batch, num_classes)
            if num_classes % centre_batch:
                centre_batch = num_classes
            labels_plan += list(centre_labels.split(centre_batch))
            centres = num_classes
        store = None
        if checkpoint_dir is not None:
            from .groups import GroupStore

            store = GroupStore(checkpoint_dir, {**(fingerprint or {}), "config": cfg.to_dict(), "family": family,
                                                "groups": len(labels_plan), "num_classes": num_classes})
        return _run_plan(teacher, cfg, spec, input_size, data_config, labels_plan, batch, num_classes, device,
                         progress, centres, store, processes(distributed))
    finally:
        for p, flag in zip(teacher.parameters(), grad_flags):
            p.requires_grad_(flag)
        teacher.train(was_training)
        if channels_last:
            teacher.to(memory_format=torch.contiguous_format)


def synthesize(
    teacher: nn.Module, config: SynQConfig | None = None, *, data_config: dict[str, Any], family: str | None = None,
    class_names: list[str] | None = None, teacher_id: str = "", num_images: int | None = None,
    iterations: int | None = None, seed: int | None = None, device: str | torch.device | None = None,
    progress: bool = True, checkpoint_dir: str | os.PathLike | None = None, distributed: bool | None = None,
    spec: ArchSpec | None = None,
) -> datasets.Dataset:
    """Synthesize a labelled image dataset from ``teacher`` alone (SynQ step 1), as a ``datasets.Dataset``.

    ``data_config`` (required: a bare module does not say its input size or normalization) is the teacher's
    preprocessing as timm describes it (``input_size`` (C, H, W), ``mean``, ``std``): the images are made at that
    size in the teacher's normalized input space (ViT pixels are kept within what [0, 1] maps to). Get it from
    ``synq_hf.load_model(id).data_config`` or ``timm.data.resolve_model_data_config(teacher)``.
    CNNs with BatchNorm use BN-statistics synthesis, ViT/DeiT/Swin models PSAQ-ViT patch similarity. The
    dataset's ``info.description`` holds the teacher id, the resolved config and the seed (see
    ``synthesis_metadata``); the same seed gives the same pixels. ``checkpoint_dir`` saves each finished group
    and resumes from the groups already there (same pixels as an uninterrupted run). Under a multi-process
    launch the groups are shared out among the processes and each returns the whole dataset (see
    :func:`generate_synthetic`). ``spec``: the teacher's architecture spec, when the caller already matched it.
    """
    from .dataset import to_dataset

    num_classes = len(class_names) if class_names else None
    images = generate_synthetic(teacher, config or SynQConfig(), data_config=data_config, family=family,
                                num_classes=num_classes, num_images=num_images, iterations=iterations, seed=seed,
                                device=device, progress=progress, checkpoint_dir=checkpoint_dir,
                                fingerprint={"teacher": public_name(teacher_id)}, distributed=distributed,
                                spec=spec)
    return to_dataset(images, teacher_id=teacher_id, data_config=data_config, class_names=class_names,
                      num_classes=num_classes or _num_classes(teacher))


def _num_classes(teacher: nn.Module) -> int:
    n = model_num_classes(teacher)
    if n is None:
        raise UnsupportedModelError(f"cannot tell how many classes {type(teacher).__name__} has; pass num_classes")
    return n


def _run_plan(teacher, cfg, spec, input_size, data_config, labels_plan, batch, num_classes, device, progress,
              centres, store=None, procs: Processes | None = None) -> SyntheticImages:
    """Optimize every planned group in forward units of ``synthesis_groups_per_forward`` groups.

    The units are fixed by the plan alone (consecutive groups of equal size). A unit's noise, labels and
    augmentation are seeded by (seed, its first group, attempt) and a diverged group restarts within its unit,
    so a unit's pixels do not depend on which units ran before it, on which process, or whether it was loaded
    from ``store``. Under several processes (``procs``) each optimizes every world-th unfinished unit; the
    results are gathered, in group order, on every process.
    """
    procs = procs or Processes()
    iters, per_forward = cfg.synthesis_iterations, cfg.synthesis_groups_per_forward
    host_rng = random.Random(cfg.seed)
    aug_gen = torch.Generator(device=device).manual_seed(cfg.seed)
    family = spec.family
    objective, clamp = _objective(teacher, cfg, spec, data_config, device, aug_gen, host_rng)
    units = _chunks(list(range(len(labels_plan))), labels_plan, per_forward)
    # The main process decides which units are finished, so that every process shares out the same list.
    done = set(procs.from_main(sorted(store.done()) if store is not None and procs.is_main else []))
    todo = procs.share([u for u, unit in enumerate(units) if not done.issuperset(unit)])
    results, histories = _load_finished(units, done, store, procs, len(labels_plan))
    total_images = sum(batch if lab is None else len(lab) for lab in labels_plan)
    bar = tqdm(total=len(todo) * iters, disable=not (progress and procs.is_main), desc="synthesizing", unit="it")
    shown: dict[str, Any] = {}
    counter = {"images": sum(r[1].numel() for r in results.values())}

    def run_unit(unit: list[int]) -> list[dict[str, float]]:
        """Optimize one unit, restarting its diverged groups from new noise; results go to ``results``."""
        pending, attempt, history = list(unit), 0, []
        while pending:
            if attempt > MAX_RESTARTS:
                raise SynthesisDivergedError(
                    f"synthesis group(s) {pending} still produced NaN/Inf after {MAX_RESTARTS} restarts; lower "
                    f"synthesis_lr (now {cfg.synthesis_lr}) or check the teacher"
                )
            chunk_seed = _group_seed(cfg.seed, pending[0], attempt)
            aug_gen.manual_seed(chunk_seed)
            host_rng.seed(chunk_seed)
            if isinstance(objective, PatchSimilarityObjective):
                objective.start(len(pending))
            pixels, labels = _init_chunk(pending, labels_plan, batch, input_size, num_classes, cfg.seed, attempt,
                                         device)
            last = [0]

            def on_log(it: int, entry: dict[str, float], last: list[int] = last) -> None:
                shown.clear()
                shown.update(it=it, **{k: f"{v:.3g}" for k, v in entry.items() if k not in ("iteration", "lr")})
                bar.set_postfix(**shown, images=f"{counter['images']}/{total_images}", refresh=False)
                bar.update(it - last[0])
                last[0] = it

            run = run_groups(objective, pixels, labels, iterations=iters, lr=cfg.synthesis_lr,
                             patience=cfg.synthesis_lr_patience, factor=cfg.synthesis_lr_factor,
                             min_lr=cfg.synthesis_min_lr, log_every=cfg.synthesis_log_every, clamp=clamp,
                             on_log=on_log, **objective.optimizer)
            bad = (run.nonfinite | ~torch.isfinite(run.pixels.flatten(1)).all(1)).tolist()
            failed = []
            for gi, g in enumerate(pending):
                if bad[gi]:
                    failed.append(g)
                else:
                    results[g] = (run.pixels[gi].cpu(), labels[gi].cpu(), attempt)
                    counter["images"] += labels[gi].numel()
            history.extend({"chunk": pending[0], "attempt": attempt, **e} for e in run.history)
            bar.set_postfix(**shown, images=f"{counter['images']}/{total_images}", refresh=True)
            if failed:
                logger.warning("synthesis: %d group(s) diverged (NaN/Inf); restarting them from new noise",
                               len(failed))
                bar.total += len(failed) * iters
            pending, attempt = failed, attempt + 1
        return history

    error = None
    with objective:
        for u in todo:
            try:
                histories[u] = run_unit(units[u])
            except Exception as e:
                if procs.world == 1:
                    raise
                logger.exception("synthesis: group(s) %s failed on process %d", units[u], procs.rank)
                error = f"synthesis group(s) {units[u]} failed: {type(e).__name__}: {e}"
                break
            if store is not None:  # a unit is saved only once all its groups are finished
                for g in units[u]:
                    store.save(g, *results[g], history=histories[u])
    bar.close()
    procs.check(error)
    if procs.world > 1:
        for part_results, part_histories in procs.gather((results, histories)):
            results.update(part_results)
            histories.update(part_histories)
    order = range(len(labels_plan))
    return SyntheticImages(pixels=torch.cat([results[g][0] for g in order]),
                           labels=torch.cat([results[g][1] for g in order]), family=family, config=cfg,
                           seed=cfg.seed, restarts=sum(results[g][2] for g in order), calibration_centres=centres,
                           history=[entry for u in range(len(units)) for entry in histories[u]])


def _objective(teacher: nn.Module, cfg: SynQConfig, spec: ArchSpec, data_config: dict[str, Any], device: Any,
               aug_gen: torch.Generator, host_rng: random.Random) -> tuple[Any, tuple | None]:
    """The spec's synthesis objective (BN statistics or PSAQ-ViT's patch similarity) and the pixel clamp range
    (ViTs keep pixels in the valid image range; CNNs are not clamped)."""
    if spec.synthesis == "bn_stats":
        return BNStatsObjective(teacher, beta=cfg.synthesis_ce_beta, gamma=cfg.synthesis_ce_gamma,
                                augment=cfg.synthesis_augment, generator=aug_gen, host_rng=host_rng,
                                precision=cfg.synthesis_precision,
                                channels_last=wants_channels_last(spec.family, device),
                                reduction=cfg.synthesis_bn_reduction), None
    objective = PatchSimilarityObjective(teacher, family=spec.family, tv_weight=cfg.synthesis_tv_weight,
                                         bandwidth=cfg.synthesis_kde_bandwidth, num_points=cfg.synthesis_kde_points,
                                         generator=aug_gen, host_rng=host_rng, iterations=cfg.synthesis_iterations,
                                         precision=cfg.synthesis_precision, spec=spec)
    return objective, _valid_range(data_config, device)


def _load_finished(units: list[list[int]], done: set[int], store: Any, procs: Processes, groups: int
                   ) -> tuple[dict[int, tuple[torch.Tensor, torch.Tensor, int]], dict[int, list[dict[str, float]]]]:
    """The groups (and unit histories) an earlier run finished, loaded from ``store`` on the main process."""
    results: dict[int, tuple[torch.Tensor, torch.Tensor, int]] = {}
    histories: dict[int, list[dict[str, float]]] = {}
    finished = [u for u, unit in enumerate(units) if done.issuperset(unit)]
    if finished and procs.is_main:
        for u in finished:
            for g in units[u]:
                results[g] = store.load(g)
            histories[u] = store.history(units[u][0])
        logger.info("synthesis: resuming, %d of %d groups already done", sum(len(units[u]) for u in finished), groups)
    return results, histories


def _chunks(groups: list[int], plan: list, per_forward: int) -> list[list[int]]:
    """Consecutive groups of equal size, at most ``per_forward`` per forward."""
    out: list[list[int]] = []
    for g in groups:
        size = None if plan[g] is None else len(plan[g])
        if out and len(out[-1]) < per_forward and (None if plan[out[-1][0]] is None else len(plan[out[-1][0]])) == size:
            out[-1].append(g)
        else:
            out.append([g])
    return out


def _init_chunk(chunk, plan, batch, input_size, num_classes, seed, attempt, device):
    """Gaussian noise and random labels for each group, seeded by (seed, group, attempt)."""
    pixels, labels = [], []
    for g in chunk:
        gen = torch.Generator().manual_seed(_group_seed(seed, g, attempt))
        size = batch if plan[g] is None else len(plan[g])
        pixels.append(torch.randn(size, *input_size, generator=gen))
        labels.append(torch.randint(num_classes, (size,), generator=gen) if plan[g] is None else plan[g].clone())
    return torch.stack(pixels).to(device), torch.stack(labels).to(device)
