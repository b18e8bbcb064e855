"""Resume: a run stopped and resumed ends bit-exactly where an uninterrupted run ends (CNN and ViT), SIGTERM."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _synq_tiny import cnn_pair, hf_vit_pair, make_trainer
from transformers import TrainerCallback

from synq_hf.training import STUDENT_WEIGHTS, last_checkpoint


class _StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
        return control


def _assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, f"{len(different)} tensors differ after resume, e.g. {different[:3]}"


@pytest.mark.parametrize("make_pair", [cnn_pair, hf_vit_pair], ids=["cnn", "hf_vit"])
def test_resume_is_bit_exact(tmp_path, make_pair):
    full = make_trainer(str(tmp_path / "full"), make_pair(), max_steps=4, augment=True, save_strategy="no")
    full.train()

    stopped = make_trainer(str(tmp_path / "run"), make_pair(), max_steps=4, augment=True, callbacks=[_StopAt(2)])
    stopped.train()
    ckpt = last_checkpoint(str(tmp_path / "run"))
    assert ckpt is not None and ckpt.endswith("checkpoint-2")
    assert not any(torch.equal(a, b) for a, b in zip(full.model.parameters(), stopped.model.parameters())
                   if a.dim() > 1)

    fresh_pair = make_pair(seed=123)  # different initial weights: everything must come from the checkpoint
    resumed = make_trainer(str(tmp_path / "run"), (fresh_pair[0], fresh_pair[1], fresh_pair[2]), max_steps=4,
                           augment=True)
    resumed.teacher.load_state_dict(full.teacher.state_dict())
    resumed.train(resume_from_checkpoint=ckpt)
    assert resumed.state.global_step == 4
    _assert_same_state(full.model, resumed.model)


def test_sigterm_leaves_a_resumable_checkpoint(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, str(Path(__file__).resolve().parents[1] / "_synq_tiny.py"), str(out), "60"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 120
    while last_checkpoint(str(out)) is None and child.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert child.poll() is None, f"the child ended early:\n{child.communicate()[0][-3000:]}"
    child.send_signal(signal.SIGTERM)
    log = child.communicate(timeout=120)[0]
    assert child.returncode == 3, log[-3000:]
    ckpt = last_checkpoint(str(out))
    assert f"INTERRUPTED {ckpt}" in log
    step = int(ckpt.rsplit("-", 1)[1])
    assert 1 <= step < 60 and os.path.isfile(os.path.join(ckpt, STUDENT_WEIGHTS))

    resumed = make_trainer(str(out), cnn_pair(seed=7), max_steps=step + 2, save_steps=1, augment=True)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == step + 2


def test_last_checkpoint_skips_incomplete_folders_where_transformers_would_not(tmp_path):
    from transformers.trainer_utils import get_last_checkpoint

    assert last_checkpoint(str(tmp_path / "missing")) is None
    for step, files in ((1, (STUDENT_WEIGHTS, "trainer_state.json")), (3, (STUDENT_WEIGHTS,)), (10, ())):
        (tmp_path / f"checkpoint-{step}").mkdir()
        for name in files:
            (tmp_path / f"checkpoint-{step}" / name).write_text("x")
    (tmp_path / "checkpoint-7.tmp").mkdir()
    assert last_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-1")  # the highest complete one
    assert get_last_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-10")  # why synq_hf keeps its own
