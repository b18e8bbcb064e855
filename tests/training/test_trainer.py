"""SynQTrainer: one forward per model per step, frozen teacher and BN, logged loss parts, clear errors."""

import copy

import numpy as np
import pytest
import torch
from _synq_tiny import cnn_pair, make_trainer, synthetic_dataset
from transformers import TrainingArguments

from synq_hf.apply import act_quantizers
from synq_hf.config import SynQConfig
from synq_hf.errors import CheckpointError, ConfigError, DataError
from synq_hf.training import SynQTrainer, build_training_args, load_student, save_student


def _no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_training_step_counts_forwards_and_keeps_teacher_and_bn_frozen(tmp_path):
    teacher, student, cfg = pair = cnn_pair()
    trainer = make_trainer(str(tmp_path), pair, max_steps=2, save_strategy="no")
    teacher_before = copy.deepcopy(teacher.state_dict())
    bn_before = {k: v.clone() for k, v in student.state_dict().items() if "running" in k}
    weight_before = student.conv1.weight.detach().clone()
    assert trainer.calibrate_if_needed()  # the calibration phase (train() skips it once ranges exist)
    assert all(q._is_calibrated for q in act_quantizers(student))
    calls = {"teacher": 0, "student": 0}
    h1 = teacher.register_forward_pre_hook(lambda m, a: calls.__setitem__("teacher", calls["teacher"] + 1))
    h2 = student.register_forward_pre_hook(lambda m, a: calls.__setitem__("student", calls["student"] + 1))
    trainer.train()
    h1.remove(), h2.remove()
    assert calls == {"teacher": 2, "student": 2}  # one forward of each model per step
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_before.items())
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in bn_before.items())
    assert not torch.equal(weight_before, student.conv1.weight)
    assert _no_hooks(teacher) and _no_hooks(student)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert {"loss_kd", "loss_ce", "loss_cam", "easy_fraction"} <= set(logs[0])
    assert logs[0]["loss_cam"] > 0
    assert isinstance(getattr(trainer.optimizer, "optimizer", trainer.optimizer), torch.optim.SGD)


def test_extras_are_logged_and_leave_no_hooks(tmp_path):
    teacher, student, _ = pair = cnn_pair(hast_feature_alignment=True, perturbed_loss=True)
    trainer = make_trainer(str(tmp_path), pair, max_steps=2, save_strategy="no")
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert {"loss_hast", "loss_perturbed", "loss_kd", "loss_cam"} <= set(logs[0])
    assert logs[0]["loss_hast"] > 0 and logs[0]["loss_perturbed"] > 0
    assert _no_hooks(teacher) and _no_hooks(student)


def test_learnable_scales_receive_updates(tmp_path):
    teacher, student, cfg = pair = cnn_pair(learnable_act_scale=True)
    trainer = make_trainer(str(tmp_path), pair, max_steps=1, save_strategy="no")
    trainer.calibrate_if_needed()
    before = [q.scale.detach().clone() for q in act_quantizers(student)]
    trainer.train()
    after = [q.scale.detach() for q in act_quantizers(student)]
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


def test_low_pass_filter_once_filters_the_dataset(tmp_path):
    from synq_hf.lowpass import low_pass_filter

    ds = synthetic_dataset(4)
    trainer = make_trainer(str(tmp_path), cnn_pair(lpf_d0=4.0), ds, max_steps=1)
    got = torch.as_tensor(np.stack(trainer.train_dataset.with_format("numpy")["pixel_values"]))
    want = low_pass_filter(torch.as_tensor(np.stack(ds.with_format("numpy")["pixel_values"])), 4.0)
    assert torch.allclose(got, want, atol=1e-5)
    per_batch = make_trainer(str(tmp_path), cnn_pair(lpf_d0=4.0, lpf_mode="per_batch"), ds, max_steps=1)
    assert per_batch.batch_transform.lpf_d0 == 4.0 and per_batch.train_dataset is ds


@pytest.mark.parametrize("lpf_mode", ["once", "per_batch"])
def test_calibration_images_follow_calibrate_filtered(tmp_path, lpf_mode):
    from synq_hf.apply import calibrate, iter_batches
    from synq_hf.lowpass import low_pass_filter

    ds = synthetic_dataset(8)
    raw = torch.as_tensor(np.stack(ds.with_format("numpy")["pixel_values"]))
    ranges = {}
    for filtered in (True, False):
        teacher, student, _ = pair = cnn_pair(lpf_d0=4.0, lpf_mode=lpf_mode, calibrate_filtered=filtered)
        make_trainer(str(tmp_path / str(filtered)), pair, ds, max_steps=1).calibrate_if_needed()
        ranges[filtered] = [float(v) for q in act_quantizers(student) for v in (q.min_val, q.max_val)]
        reference = copy.deepcopy(student)  # the same quantizers, calibrated directly on the expected images
        images = low_pass_filter(raw, 4.0) if filtered else raw
        calibrate(reference, iter_batches(images, 4), progress=False)
        want = [float(v) for q in act_quantizers(reference) for v in (q.min_val, q.max_val)]
        assert ranges[filtered] == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert ranges[True] != pytest.approx(ranges[False], rel=1e-3)  # the filter changes the ranges


@pytest.mark.parametrize(
    "ds_kwargs, match",
    [({"size": 16}, "expects"), ({"num_classes": 5}, "5 classes")],
)
def test_dataset_mismatch_is_a_clear_error(tmp_path, ds_kwargs, match):
    with pytest.raises(DataError, match=match):
        make_trainer(str(tmp_path), cnn_pair(), synthetic_dataset(**ds_kwargs))


def test_missing_column_is_a_clear_error(tmp_path):
    ds = synthetic_dataset().rename_column("label", "labels")
    with pytest.raises(DataError, match="columns"):
        make_trainer(str(tmp_path), cnn_pair(), ds)


@pytest.mark.parametrize("field, value", [("lambda_ce", -1.0), ("lambda_cam", -0.5), ("tau", 1.5), ("tau", -0.1)])
def test_out_of_range_weights_are_rejected(field, value):
    with pytest.raises(ConfigError, match=field):
        SynQConfig(**{field: value})


def test_checkpoint_from_another_model_is_rejected(tmp_path):
    import timm

    other = timm.create_model("test_resnet", num_classes=10)
    save_student(other, str(tmp_path / "other"))
    _, student, _ = cnn_pair()
    with pytest.raises(CheckpointError, match="another model"):
        load_student(student, str(tmp_path / "other"))
    with pytest.raises(CheckpointError, match="not a SynQ fine-tuning checkpoint"):
        load_student(student, str(tmp_path))
    trainer = make_trainer(str(tmp_path / "run"), cnn_pair())
    (tmp_path / "other" / "trainer_state.json").write_text("{}")
    with pytest.raises(CheckpointError, match="another model"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "other"))
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        trainer.train(resume_from_checkpoint=True)


def test_unresolved_config_is_resolved_from_teacher(tmp_path):
    teacher, student, _ = cnn_pair()
    cfg = SynQConfig(lpf_d0=0.0, train_batch_size=4, calibration_num_images=4)
    args = build_training_args(cfg.resolve(family="cnn", input_size=32), str(tmp_path), max_steps=1, use_cpu=True)
    trainer = SynQTrainer(student, teacher, args, synthetic_dataset(), cfg)
    assert trainer.synq_config.tau == 0.7 and trainer.synq_config.learning_rate == 1e-3
    with pytest.raises(ConfigError, match="resolve"):
        build_training_args(SynQConfig(), str(tmp_path))


def test_trainer_reads_loss_settings_from_synq_training_arguments(tmp_path):
    """The TRL pattern: ``SynQTrainer(args=SynQTrainingArguments(...))`` with no separate config."""
    from synq_hf.training import SynQTrainingArguments

    teacher, student, cfg = cnn_pair(calibration_num_images=4)
    args = SynQTrainingArguments(str(tmp_path), lambda_cam=0.0, tau=0.5, lpf_d0=0.0, kd_temperature=2.0,
                                 momentum=0.5, max_steps=1, per_device_train_batch_size=4, use_cpu=True,
                                 report_to="none", save_strategy="no", remove_unused_columns=False, seed=3)
    trainer = SynQTrainer(model=student, teacher=teacher, args=args, train_dataset=synthetic_dataset())
    used = trainer.synq_config
    assert (used.lambda_cam, used.tau, used.kd_temperature, used.momentum, used.seed) == (0.0, 0.5, 2.0, 0.5, 3)
    assert trainer.cam_target is None  # lambda_cam=0 from args: no Grad-CAM hooks
    assert (used.w_bits, used.calibration_num_images) == (cfg.w_bits, 4)  # the rest: the student's own config
    trainer.train()
    assert trainer.optimizer.param_groups[0]["momentum"] == 0.5

    agreeing = cfg.replace(tau=None, lambda_cam=0.0, kd_temperature=2.0, momentum=0.5)
    assert SynQTrainer(student, teacher, args, synthetic_dataset(), agreeing).synq_config.tau == 0.5  # None: from args
    with pytest.raises(ConfigError, match="disagree on lambda_cam"):
        SynQTrainer(student, teacher, args, synthetic_dataset(), agreeing.replace(lambda_cam=10.0))
    plain = TrainingArguments(str(tmp_path), use_cpu=True, report_to="none")
    with pytest.raises(ConfigError, match="SynQTrainingArguments"):
        SynQTrainer(student, teacher, plain, synthetic_dataset())


class _NaNAfter(torch.nn.Module):
    """Wraps a student: from forward number ``after`` on, its logits are NaN (a blown-up student)."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after, self.calls = after, 0

    def __call__(self, module, args, output):  # noqa: ANN001, ANN204 - a forward hook
        self.calls += 1
        return output * float("nan") if self.calls > self.after else output


def test_non_finite_loss_stops_with_the_term_step_and_last_checkpoint(tmp_path):
    from synq_hf.training import TrainingDiverged

    teacher, student, _ = pair = cnn_pair()
    trainer = make_trainer(str(tmp_path), pair, max_steps=6, save_steps=2)
    trainer.calibrate_if_needed()
    hook = student.linear.register_forward_hook(_NaNAfter(3))  # steps 1-3 are fine, step 4 is not
    with pytest.raises(TrainingDiverged, match=r"not finite at step 4 \(terms: kd, ce.*checkpoint-2") as info:
        trainer.train()
    hook.remove()
    assert info.value.checkpoint.endswith("checkpoint-2") and (tmp_path / "checkpoint-2" / "trainer_state.json").exists()
    assert "\n" not in str(info.value)  # one line


def test_exploding_kd_stops_before_reaching_chance(tmp_path):
    from synq_hf.training import TrainingDiverged

    teacher, student, _ = pair = cnn_pair()
    trainer = make_trainer(str(tmp_path), pair, max_steps=4, save_strategy="no")
    trainer.calibrate_if_needed()
    scale = {"k": 1.0}

    def blow_up(module, args, output):  # noqa: ANN001, ANN202 - the student's logits grow 100x per step
        scale["k"] *= 100.0
        return output * scale["k"]

    student.linear.register_forward_hook(blow_up)
    with pytest.raises(TrainingDiverged, match=r"KD term exploded at step \d.*no checkpoint was saved"):
        trainer.train()


def test_gradient_clipping_default_and_quantizer_parameter_group(tmp_path):
    teacher, student, cfg = pair = cnn_pair(learnable_act_scale=True, learnable_weight_scale=True, quantizer_lr=0.5)
    trainer = make_trainer(str(tmp_path), pair, max_steps=1, save_strategy="no")
    assert trainer.args.max_grad_norm == SynQConfig().max_grad_norm > 0
    trainer.calibrate_if_needed()
    optimizer = trainer.create_optimizer()
    groups = optimizer.param_groups
    quant = [g for g in groups if g["lr"] == 0.5]
    assert len(quant) == 1 and quant[0]["weight_decay"] == 0.0
    names = {id(p): n for n, p in student.named_parameters()}
    assert all("quantizer" in names[id(p)] for p in quant[0]["params"])
    assert any(names[id(p)].endswith("weight_quantizer.scale") for p in quant[0]["params"])


@pytest.mark.parametrize("augment", ["shift_flip", "crop_flip"])
def test_augmentation_from_the_config_is_reproducible_by_step(augment):
    from synq_hf.training import BatchTransform

    x = torch.randn(4, 3, 32, 32)
    t = BatchTransform(augment=augment, seed=3)
    assert t.active and torch.equal(t(x, step=5), t(x, step=5)) and not torch.equal(t(x, step=5), t(x, step=6))
    assert not torch.equal(t(x, step=5), x)
    with pytest.raises(DataError, match="augment="):
        BatchTransform(augment="mixup")
