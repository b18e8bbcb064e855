"""The package's import structure: ``import synq_hf`` stays light and registrations still happen."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_import_synq_hf_loads_no_heavy_library() -> None:
    loaded = _run("import sys, synq_hf; print(sorted(m for m in ('torch', 'timm', 'transformers', 'datasets') "
                  "if m in sys.modules))")
    assert loaded == "[]"


@pytest.mark.parametrize("first", ["import synq_hf; import timm", "import timm; import synq_hf"])
def test_timm_models_are_registered_whichever_is_imported_first(first: str) -> None:
    assert _run(f"{first}; print(timm.is_model('cifar_resnet20'), timm.is_model('synq_digits_cnn'))") == "True True"


@pytest.mark.parametrize("first", ["import synq_hf; import transformers.quantizers",
                                   "import transformers.quantizers; import synq_hf"])
def test_transformers_knows_synq_whichever_is_imported_first(first: str) -> None:
    code = (f"{first}; from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING as M; "
            "print(M['synq'].__name__)")
    assert _run(code) == "SynQConfig"


def test_public_names_resolve_lazily() -> None:
    import synq_hf

    for name in synq_hf.__all__:
        assert getattr(synq_hf, name) is not None
    with pytest.raises(AttributeError):
        synq_hf.no_such_name  # noqa: B018
