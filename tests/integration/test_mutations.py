"""benchmarks/mutations.py: every mutation of the issue-21 table still applies to the code, in a copy only."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "mutations.py"


def _load():
    spec = importlib.util.spec_from_file_location("mutations", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_mutation_applies_once_to_a_copy(tmp_path):
    mutations = _load()
    names = {m.name for m in mutations.MUTATIONS}
    assert {"cam_sign", "tau_one", "skip_batch_transform", "kd_temperature_one", "lambda_ce_ignored",
            "difficulty_from_student", "cam_target_argmax", "lsq_grad_x10", "kd_sign", "ce_sign", "hast_sign",
            "perturbed_sign"} == names
    originals = {}
    for m in mutations.MUTATIONS:
        target = tmp_path / m.file
        target.parent.mkdir(parents=True, exist_ok=True)
        source = mutations.ROOT / m.file
        originals[m.file] = source.read_text()
        target.write_text(originals[m.file])
        mutations.apply(m, tmp_path)  # raises unless the code occurs exactly once
        changed = target.read_text()
        assert changed != originals[m.file] and m.new in changed
    for file, text in originals.items():  # the checkout itself is never touched
        assert (mutations.ROOT / file).read_text() == text
    broken = mutations.Mutation("gone", "no such code", mutations.TRAINER, "this line does not exist", "x")
    with pytest.raises(ValueError, match="occurs 0 times"):
        mutations.apply(broken, tmp_path)
