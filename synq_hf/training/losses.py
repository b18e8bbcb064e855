"""SynQ fine-tuning losses (Eq. 6): KD to the teacher's soft labels, difficulty-selective CE, CAM alignment."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``T² · KL(softmax(t/T) ‖ softmax(s/T))`` averaged over the batch; ``T = 1`` is the paper's plain KL.

    The ``T²`` factor keeps the gradient scale independent of ``T`` (Hinton et al.), so changing the
    temperature does not silently re-weight KD against the CE and CAM terms.
    """
    t = float(temperature)
    log_p_s = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.detach().float() / t, dim=-1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (t * t)


def teacher_difficulty(teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample difficulty ``delta = 1 − p_teacher(y)`` (idea I3 of the paper)."""
    p = F.softmax(teacher_logits.detach().float(), dim=-1)
    return 1.0 - p.gather(1, labels.view(-1, 1)).squeeze(1)


def selective_ce(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, tau: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy to the hard label on easy samples only (``delta <= tau``); returns ``(loss, easy_mask)``.

    Hard samples (``delta > tau``) contribute nothing here and learn from the teacher's soft label (KD)
    alone. The sum is divided by the full batch size (the expectation form of Eq. 6, as in the authors'
    code), so the term shrinks when fewer samples are easy instead of being re-amplified.
    """
    easy = teacher_difficulty(teacher_logits, labels) <= tau
    return masked_ce(student_logits, labels, easy), easy


def masked_ce(student_logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy summed over the samples where ``mask`` is true, divided by the batch size."""
    ce = F.cross_entropy(student_logits.float(), labels, reduction="none")
    return (ce * mask.to(ce.dtype)).sum() / max(labels.numel(), 1)


def cam_alignment_loss(student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """MSE between per-sample min-max normalized Grad-CAM maps (teacher map is a constant target)."""
    return F.mse_loss(student_map.float(), teacher_map.detach().float())
