"""``reconstruct_model``: float teacher + synthetic images -> reconstructed fake-quant model (one call)."""

from __future__ import annotations

import copy
import os

import torch
from torch import nn

from ..apply import calibrate, deploy_convert, iter_batches, quantize_model
from ..config import SynQConfig, reconstruction_image_copies
from ..errors import DataError, SynQError
from ..lowpass import low_pass_filter
from .engine import ReconstructionReport, reconstruct
from .synq import SynQTerms, synq_network_phase

__all__ = ["reconstruct_model", "reconstruction_config", "reconstruction_images", "reconstruction_labels"]


def reconstruction_config(config: SynQConfig) -> SynQConfig:
    """``config`` as reconstruction runs it: learned weight step sizes and LSQ activation ranges (they are saved
    with the model, so its ``quantization_config`` records them)."""
    return config.replace(learnable_weight_scale=True, learnable_act_scale=True)


def reconstruction_images(images: torch.Tensor, config: SynQConfig) -> torch.Tensor:
    """The images reconstruction runs on: the first ``reconstruct_num_images``, low-pass filtered (``lpf_d0``) for
    reconstruction + SynQ; with ``reconstruct_synq_images="both"`` the raw ones followed by their filtered copies."""
    if images.dim() != 4 or len(images) == 0:
        raise DataError(f"reconstruction needs a batch of images (N, C, H, W), got shape {tuple(images.shape)}")
    images = images[: config.reconstruct_num_images].float()
    filtered, copies = reconstruction_image_copies(config)
    if filtered:
        low = low_pass_filter(images, config.lpf_d0)
        images = torch.cat([images, low]) if copies == 2 else low
    return images


def reconstruction_labels(labels: torch.Tensor, images: torch.Tensor, config: SynQConfig) -> torch.Tensor:
    """The labels of :func:`reconstruction_images`' output ``images``: one per raw image, repeated for the filtered
    copies."""
    copies = reconstruction_image_copies(config)[1]
    return labels[: len(images) // copies].repeat(copies)


def reconstruct_model(
    teacher: nn.Module,
    images: torch.Tensor,
    config: SynQConfig,
    *,
    labels: torch.Tensor | None = None,
    work_dir: str | os.PathLike | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> tuple[nn.Module, ReconstructionReport]:
    """Quantize a copy of ``teacher``, calibrate it and reconstruct it block by block on ``images``.

    ``images`` (N, C, H, W) are normalized images on the teacher's device (synthetic ones for zero-shot use),
    ``labels`` their classes (needed by ``reconstruct_synq``). ``config`` must be resolved for the teacher
    (``SynQConfig.resolve``). The first ``reconstruct_num_images`` images are used (low-pass filtered with
    ``reconstruct_synq``); the first ``calibration_num_images`` of them calibrate the starting ranges (range
    search). With ``work_dir`` each finished unit is saved there, and a second call resumes after it. Returns the
    model (rounding hard, an ordinary fake-quant model) and a record of what ran.
    """
    from ..distributed import processes

    if processes().world > 1:
        raise SynQError("block reconstruction runs on one process; start it with python, not accelerate launch "
                        "or torchrun")
    if not config.is_resolved():
        raise SynQError("reconstruct_model needs a resolved config: call config.resolve(family=..., input_size=...)")
    config = reconstruction_config(config)
    images = reconstruction_images(images, config)
    if labels is not None:
        labels = reconstruction_labels(labels, images, config)
    teacher.eval()
    student = quantize_model(copy.deepcopy(teacher), config).eval()
    calib = images[: min(config.calibration_num_images, len(images) // reconstruction_image_copies(config)[1])]  # "both": raw ones
    calibrate(student, iter_batches(calib, config.calibration_batch_size), progress=progress,
              total=-(-len(calib) // config.calibration_batch_size))
    factory, finish = None, None
    if config.reconstruct_synq:
        terms = SynQTerms(teacher, images, labels, config, batch_size=config.calibration_batch_size)
        if config.reconstruct_synq_stage == "last_block":
            image_shape = tuple(images.shape[1:])

            def factory(unit, units):  # noqa: ANN001, ANN202
                blocks = [u for u in units if u.kind == "block"]
                return terms.last_block(units, image_shape) if unit is blocks[-1] else None
        else:
            def finish() -> dict:
                return synq_network_phase(student, images, terms, config, seed=config.seed, progress=progress)
    report = reconstruct(teacher, student, images, config, work_dir=work_dir, progress=progress,
                         extra_loss_factory=factory, stop_after=stop_after, finish=finish)
    deploy_convert(student, images[:1])  # deploy_placement="int8": biases back on the int32 grid of the new scales
    return student, report
