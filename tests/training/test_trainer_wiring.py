"""The SynQ loss as wired in ``SynQTrainer.compute_loss``, recomputed term by term outside the trainer (issue 21).

Each test runs one ``compute_loss`` of a tiny quantized CNN with non-default settings everywhere (KD weight 2.5,
T = 4, tau = 0.3, lambda_CE 0.7, lambda_CAM 3, a per-batch low-pass filter after augmentation) and recomputes the
total from the teacher's input seen through a hook, hand-written KD / selective CE / MSE and the textbook Grad-CAM
of ``tests/_grad_cam_reference.py``. The batch is built so that every wiring choice shows: half of the labels are
the confident teacher's prediction (easy) and half are not (hard, and not the argmax), and the student's head is
re-drawn so that its own difficulty would select other samples. ``benchmarks/mutations.py`` checks that each
wrong wiring listed in issue 21 fails a test here or in another fast test.
"""

from __future__ import annotations

import copy

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _grad_cam_reference import textbook_grad_cam
from _synq_tiny import tiny_cifar_resnet, trained_batchnorm

from synq_hf.apply import quantize_model
from synq_hf.config import SynQConfig
from synq_hf.lowpass import low_pass_filter
from synq_hf.training import BatchTransform, SynQTrainer, SyntheticCollator, build_training_args
from synq_hf.training.cam import resolve_cam_target
from synq_hf.training.extras import FeatureCapture, feature_alignment_loss

B, D0, SEED = 8, 6.0, 5
SETTINGS = dict(kd_weight=2.5, kd_temperature=4.0, tau=0.3, lambda_ce=0.7, lambda_cam=3.0, lpf_mode="per_batch",
                lpf_d0=D0, augment="shift_flip", seed=SEED, train_batch_size=B, calibration_num_images=B,
                calibration_batch_size=B, learning_rate=1e-3)


def _teacher() -> torch.nn.Module:
    """A depth-8 CIFAR ResNet with trained-looking BN statistics and a sharpened head (confident predictions)."""
    teacher = trained_batchnorm(tiny_cifar_resnet(0))
    with torch.no_grad():
        teacher.linear.weight.mul_(40.0)
    return teacher.eval()


def _batch(teacher: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(raw pixels, labels, the teacher's input at step 0): labels are the teacher's argmax on the transformed
    images for the first half and another class for the second half."""
    raw = torch.from_numpy(np.random.default_rng(1).standard_normal((B, 3, 32, 32), dtype=np.float32))
    seen = low_pass_filter(BatchTransform(augment="shift_flip", seed=SEED)(raw, step=0), D0)
    with torch.no_grad():
        top = teacher(seen).argmax(1)
    labels = torch.where(torch.arange(B) < B // 2, top, (top + 1 + torch.arange(B) % 3) % 10)
    return raw, labels, seen


def _dataset(raw: torch.Tensor, labels: torch.Tensor) -> datasets.Dataset:
    features = datasets.Features({"pixel_values": datasets.Array3D((3, 32, 32), "float32"),
                                  "label": datasets.ClassLabel(num_classes=10)})
    return datasets.Dataset.from_dict({"pixel_values": raw.numpy(), "label": labels.tolist()}, features=features)


def _trainer(tmp_path, **changes):
    teacher = _teacher()
    cfg = SynQConfig(**{**SETTINGS, **changes})
    student = quantize_model(copy.deepcopy(teacher), cfg)
    torch.manual_seed(11)
    with torch.no_grad():  # the student's own head: its difficulty would pick other samples than the teacher's
        student.linear.weight.normal_(0.0, 0.5)
    raw, labels, seen = _batch(teacher)
    ds = _dataset(raw, labels)
    args = build_training_args(cfg.resolve(family="cnn", input_size=32), str(tmp_path), max_steps=1, progress=False,
                               use_cpu=True, save_strategy="no", logging_steps=1)
    trainer = SynQTrainer(student, teacher, args, ds, cfg)
    trainer.calibrate_if_needed()
    inputs = SyntheticCollator()([ds[i] for i in range(B)])
    return trainer, teacher, student, inputs, labels, seen


def _run(trainer, teacher, student, inputs):
    """One compute_loss; returns (loss, the teacher's first input, the student's first input, recorded parts)."""
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module, args):  # noqa: ANN001, ANN202 - returns None: the input itself is left alone
            seen.setdefault(name, args[0].detach().clone())

        return hook

    h1 = teacher.register_forward_pre_hook(keep("teacher"))
    h2 = student.register_forward_pre_hook(keep("student"))
    try:
        loss = trainer.compute_loss(student, inputs)
    finally:
        h1.remove(), h2.remove()
    parts = {k: float(v) for k, v in trainer._parts.items()}
    return loss, seen["teacher"], seen["student"], parts


def _kd(s: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    p_t = F.softmax(t.double() / temperature, dim=1)
    log_s = F.log_softmax(s.double() / temperature, dim=1)
    return (p_t * (p_t.log() - log_s)).sum(1).mean() * temperature**2


def _easy(t: torch.Tensor, y: torch.Tensor, tau: float) -> torch.Tensor:
    return 1.0 - F.softmax(t.double(), dim=1)[torch.arange(len(y)), y] <= tau


def _masked_ce(s: torch.Tensor, y: torch.Tensor, easy: torch.Tensor) -> torch.Tensor:
    return (F.cross_entropy(s.double(), y, reduction="none") * easy.double()).sum() / len(y)


@pytest.mark.parametrize("cam_layer", ["last_conv", "pool"])
@pytest.mark.parametrize("cam_target", ["label", "argmax"])
def test_compute_loss_equals_the_recomputed_eq6(tmp_path, one_thread, cam_target, cam_layer):
    trainer, teacher, student, inputs, y, want_input = _trainer(tmp_path, cam_target=cam_target, cam_layer=cam_layer)
    loss, t_input, s_input, parts = _run(trainer, teacher, student, inputs)

    # the teacher and the student see the augmented batch after the per-batch low-pass filter
    assert torch.allclose(t_input, want_input, atol=1e-5) and torch.equal(s_input, t_input)
    assert not torch.allclose(t_input, inputs["pixel_values"], atol=1e-2)

    student.eval()
    with torch.no_grad():
        t_logits, s_logits = teacher(t_input), student(t_input)
    easy = _easy(t_logits, y, 0.3)
    # the batch separates every choice: some easy and some hard samples, the student's difficulty and tau = 1
    # select others, and the labels are not all the teacher's argmax
    assert 0 < int(easy.sum()) < B
    assert not torch.equal(easy, _easy(s_logits, y, 0.3)) and not easy.all()
    assert not torch.equal(y, t_logits.argmax(1))

    kd, ce = _kd(s_logits, t_logits, 4.0), _masked_ce(s_logits, y, easy)
    target = resolve_cam_target(teacher, cam_layer)
    classes = y if cam_target == "label" else t_logits.argmax(1)
    cam_t = textbook_grad_cam(teacher, t_input, classes, target)
    cam_s = textbook_grad_cam(student, t_input, classes, target)
    cam = ((cam_s.double() - cam_t.double()) ** 2).mean()
    assert kd > 0.05 and ce > 0.05 and cam > 1e-3  # every term matters in the total

    assert parts["kd"] == pytest.approx(float(kd), rel=1e-4)
    assert parts["ce"] == pytest.approx(float(ce), rel=1e-4)
    assert parts["cam"] == pytest.approx(float(cam), rel=1e-3, abs=1e-6)
    assert parts["easy_fraction"] == pytest.approx(float(easy.double().mean()))
    total = 2.5 * kd + 0.7 * ce + 3.0 * cam
    assert float(loss.detach()) == pytest.approx(float(total), rel=1e-4)
    assert loss.requires_grad

    trainer.log({"loss": float(loss.detach())})  # what the Trainer logs: each part under loss_<name>, and easy_fraction
    logged = trainer.state.log_history[-1]
    assert logged["loss_kd"] == pytest.approx(parts["kd"], rel=1e-6)
    assert logged["loss_ce"] == pytest.approx(parts["ce"], rel=1e-6)
    assert logged["loss_cam"] == pytest.approx(parts["cam"], rel=1e-6)
    assert logged["easy_fraction"] == pytest.approx(parts["easy_fraction"])


def test_compute_loss_with_the_authors_extras_equals_the_recomputed_total(tmp_path, one_thread):
    """HAST feature alignment and the sign-gradient perturbed-sample loss, each with a non-default weight."""
    # the student's block attentions are close to the teacher's (HAST ~5e-4 here): a large weight makes the term
    # (and a sign error in it) a tenth of the total
    extras = dict(hast_feature_alignment=True, hast_weight=2e4, perturbed_loss=True, perturbed_eps=0.05,
                  perturbed_weight=0.6)
    trainer, teacher, student, inputs, y, _ = _trainer(tmp_path, **extras)
    loss, t_input, _, parts = _run(trainer, teacher, student, inputs)

    student.eval()
    blocks = trainer.hast_modules
    with FeatureCapture(teacher, blocks, channels_last=False, detach=True) as t_feats, torch.no_grad():
        t_logits = teacher(t_input)
    x_s = t_input.clone().requires_grad_(True)
    with FeatureCapture(student, blocks, channels_last=False, detach=False) as s_feats:
        s_logits = student(x_s)
    easy = _easy(t_logits, y, 0.3)
    kd, ce = _kd(s_logits, t_logits, 4.0), _masked_ce(s_logits, y, easy)
    hast = feature_alignment_loss(s_feats.features, t_feats.features)
    (grad,) = torch.autograd.grad(2.5 * kd + 0.7 * ce + 2e4 * hast.double(), x_s)
    x_adv = (t_input + 0.05 * grad.sign()).detach()
    with torch.no_grad():
        s_adv, t_adv = student(x_adv), teacher(x_adv)
        adv = _kd(s_adv, t_adv, 4.0) + 0.7 * _masked_ce(s_adv, y, easy)
        target = resolve_cam_target(teacher, SynQConfig().cam_layer)
        cam_t = textbook_grad_cam(teacher, t_input, y, target)
        cam_s = textbook_grad_cam(student, t_input, y, target)
        cam = ((cam_s.double() - cam_t.double()) ** 2).mean()
    assert float(hast.detach()) > 1e-4 and float(adv) > 0.05

    assert parts["hast"] == pytest.approx(float(hast.detach()), rel=1e-4)
    assert parts["perturbed"] == pytest.approx(float(adv), rel=1e-3)
    total = (2.5 * kd + 0.7 * ce + 2e4 * hast.double() + 0.6 * adv + 3.0 * cam).detach()
    assert 2e4 * float(hast.detach()) > 0.05 * float(total)  # the term matters in the total
    assert float(loss.detach()) == pytest.approx(float(total), rel=1e-3)


# -- the LSQ step-size gradient of the weight quantizer ---------------------------------------------------


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("bits, symmetric", [(4, False), (3, True)])
def test_weight_lsq_gradient_is_torchs_kernel_times_the_lsq_scale(per_channel, bits, symmetric):
    """LSQ (Esser et al. 2020) scales the step-size gradient by 1/sqrt(weights per step size × Q_P): the kernel's
    gradient with factor 1, times 1/sqrt(numel(w[0]) · Q_P) per channel (numel(w) · Q_P per tensor)."""
    from synq_hf.quant.quantizers import WeightQuantizer

    torch.manual_seed(0)
    weight = torch.randn(6, 3, 3, 3)
    wq = WeightQuantizer(bits, symmetric, per_channel, range_init="minmax", learnable=True)
    wq.bind(weight)
    wq.init_range(weight)
    w = weight.clone().requires_grad_(True)
    upstream = torch.randn_like(weight)
    wq(w).backward(upstream)

    q_p = 2**bits - 1 if not symmetric else 2 ** (bits - 1) - 1
    q_n = 0 if not symmetric else -(2 ** (bits - 1))
    w_ref = weight.clone().requires_grad_(True)
    scale = wq.scale.detach().clone().abs().requires_grad_(True)
    zp = wq.zero_point.detach().clone()
    if per_channel:
        out = torch._fake_quantize_learnable_per_channel_affine(w_ref, scale, zp, 0, q_n, q_p, 1.0)
        factor = 1.0 / (weight[0].numel() * q_p) ** 0.5
    else:
        out = torch._fake_quantize_learnable_per_tensor_affine(w_ref, scale, zp, q_n, q_p, 1.0)
        factor = 1.0 / (weight.numel() * q_p) ** 0.5
    out.backward(upstream)
    assert torch.allclose(wq.scale.grad, scale.grad * factor, rtol=1e-5, atol=1e-8)
    assert float(scale.grad.abs().sum()) > 0
    assert torch.allclose(w.grad, w_ref.grad)  # the weights' straight-through gradient is not scaled
