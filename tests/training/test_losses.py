"""KD, difficulty-selective CE and CAM-alignment losses against hand computations."""

import math

import pytest
import torch
import torch.nn.functional as F

from synq_hf.training.losses import cam_alignment_loss, kd_loss, selective_ce, teacher_difficulty


def test_kd_is_plain_kl_at_t1_and_zero_for_identical_logits():
    torch.manual_seed(0)
    s, t = torch.randn(5, 7), torch.randn(5, 7)
    p_t = F.softmax(t, 1)
    manual = (p_t * (p_t.log() - F.log_softmax(s, 1))).sum(1).mean()
    assert torch.allclose(kd_loss(s, t), manual, atol=1e-6)
    assert kd_loss(t, t).abs() < 1e-6


def test_kd_temperature_scales_by_t_squared():
    torch.manual_seed(1)
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    T = 4.0
    p_t = F.softmax(t / T, 1)
    manual = (p_t * (p_t.log() - F.log_softmax(s / T, 1))).sum(1).mean() * T * T
    assert torch.allclose(kd_loss(s, t, T), manual, atol=1e-6)


def test_kd_gives_no_gradient_to_teacher():
    s, t = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    kd_loss(s, t).backward()
    assert t.grad is None and s.grad is not None


def test_selective_ce_keeps_only_easy_samples():
    # teacher probabilities of the label: 0.9 (easy), 0.5 (delta 0.5), 0.1 (hard)
    probs = torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.1, 0.9]])
    t_logits = probs.log()
    labels = torch.zeros(3, dtype=torch.long)
    assert torch.allclose(teacher_difficulty(t_logits, labels), torch.tensor([0.1, 0.5, 0.9]), atol=1e-6)
    s_logits = torch.randn(3, 2)
    ce = F.cross_entropy(s_logits, labels, reduction="none")
    loss, easy = selective_ce(s_logits, t_logits, labels, tau=0.5)
    assert easy.tolist() == [True, True, False]  # delta <= tau is easy (paper: 1[delta <= tau])
    assert torch.allclose(loss, (ce[0] + ce[1]) / 3)
    loss_all, _ = selective_ce(s_logits, t_logits, labels, tau=1.0)
    assert torch.allclose(loss_all, ce.mean())
    loss_none, easy_none = selective_ce(s_logits, t_logits, labels, tau=0.0)
    assert not easy_none.any() and loss_none == 0


def test_cam_alignment_is_mse():
    a, b = torch.rand(2, 9), torch.rand(2, 9)
    assert math.isclose(cam_alignment_loss(a, b).item(), ((a - b) ** 2).mean().item(), rel_tol=1e-6)
    assert cam_alignment_loss(a, a) == 0


@pytest.mark.parametrize("T", [1.0, 20.0])
def test_kd_finite_for_extreme_logits(T):
    s = torch.tensor([[100.0, -100.0]])
    t = torch.tensor([[-100.0, 100.0]])
    assert torch.isfinite(kd_loss(s, t, T))
