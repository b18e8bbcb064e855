"""Fine-tuning leaves the caller's teacher as it found it (train/eval mode, requires_grad), so a student copied from
it afterwards trains; a student with nothing to train is a one-line error."""

from __future__ import annotations

import copy

import pytest
import torch

from synq_hf import ConfigError
from synq_hf.apply import quantize_model
from synq_hf.training import finetune
from synq_hf.training.frozen import ModuleState, frozen

pytestmark = pytest.mark.usefixtures("one_thread")


def _state(module: torch.nn.Module) -> ModuleState:
    return ModuleState.of(module)


def test_frozen_restores_the_state_it_found_even_after_an_error() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2), torch.nn.Linear(2, 2))
    model.train()
    model[2].weight.requires_grad_(False)  # a mixed state, restored exactly
    model[1].eval()
    before = _state(model)
    with pytest.raises(RuntimeError, match="boom"), frozen(model):
        assert not model.training and not any(p.requires_grad for p in model.parameters())
        raise RuntimeError("boom")
    assert _state(model) == before


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_finetune_gives_the_teacher_back_and_a_student_copied_afterwards_trains(mode: str, tmp_path) -> None:  # noqa: ANN001
    from _synq_tiny import cnn_pair, synthetic_dataset

    teacher, student, cfg = cnn_pair()
    teacher.train(mode == "train")
    before = _state(teacher)
    assert all(p.requires_grad for p in teacher.parameters())
    data = synthetic_dataset(8)
    finetune(teacher, student, data, cfg, output_dir=tmp_path / "a", max_steps=1, progress=False, save_final=False,
             training_args={"use_cpu": True, "report_to": "none"})
    assert _state(teacher) == before  # mode and requires_grad as the caller left them

    second = quantize_model(copy.deepcopy(teacher), cfg)  # copied after the first fine-tuning
    weights = {k: v.clone() for k, v in second.state_dict().items() if k.endswith("conv1.weight")}
    finetune(teacher, second, data, cfg, output_dir=tmp_path / "b", max_steps=1, progress=False, save_final=False,
             training_args={"use_cpu": True, "report_to": "none"})
    assert any(not torch.equal(v, second.state_dict()[k]) for k, v in weights.items())  # it trained
    assert _state(teacher) == before


def test_a_student_with_nothing_to_train_is_one_line(tmp_path) -> None:  # noqa: ANN001
    from _synq_tiny import cnn_pair, make_trainer

    teacher, student, cfg = cnn_pair()
    student.requires_grad_(False)
    with pytest.raises(ConfigError, match=r"requires_grad_\(True\)"):
        make_trainer(str(tmp_path), (teacher, student, cfg))
