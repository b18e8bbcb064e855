"""What ``help()`` shows a newcomer: a quickstart for the package, the fields of SynQConfig, synthesize's inputs."""

from __future__ import annotations

import dataclasses
import re

import synq_hf


def test_package_help_has_a_quickstart_that_names_real_api() -> None:
    doc = synq_hf.__doc__
    assert "Quickstart" in doc and "synq-hf demo" in doc
    code = [line.strip() for line in doc.splitlines() if line.startswith("    ") and line.strip()]
    assert code[0] == "from synq_hf import SynQQuantizer"
    calls = re.findall(r"q\.(\w+)\(", "\n".join(code))
    assert calls == ["synthesize", "quantize", "evaluate", "save_pretrained"]
    assert all(callable(getattr(synq_hf.SynQQuantizer, name)) for name in calls)


def test_synqconfig_docstring_names_real_fields_of_every_group() -> None:
    from synq_hf.config import SynQConfig

    doc = SynQConfig.__doc__
    named = set(re.findall(r"``(\w+)``", doc))
    fields = {f.name for f in dataclasses.fields(SynQConfig)}
    assert {"w_bits", "a_bits", "num_images", "calibration_num_images", "learning_rate", "max_steps", "seed"} <= named
    assert named - fields <= {"None", "search", "minmax", "quant_method", "quantization_config", "synq_hf"}, named - fields
    for group in ("quantizer", "calibration", "synthesis", "fine-tuning"):
        assert f"* {group}" in doc


def test_synthesize_explains_its_required_data_config() -> None:
    from synq_hf.synthesis import synthesize

    doc = synthesize.__doc__
    assert "``data_config`` (required" in doc and "input_size" in doc and "load_model" in doc
