"""The package's import structure: ``import synq_hf`` stays light and registrations still happen."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

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


# -- the import graph ------------------------------------------------------------------------------

PACKAGE = Path(__file__).resolve().parents[1] / "synq_hf"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, (ast.Name, ast.Attribute)) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(path: Path, modules: set[str], type_checking: bool) -> list[tuple[str, list[str]]]:
    """(imported synq_hf module, imported names) for every import in ``path``, at any depth; those under
    ``if TYPE_CHECKING`` only with ``type_checking``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, list[str]]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node) and not type_checking:
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names if a.name.startswith("synq_hf"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("synq_hf"):
                names = [a.name for a in node.names]
                subs = [n for n in names if f"{target}.{n}" in modules]  # `from . import submodule`
                found.extend((f"{target}.{n}", []) for n in subs)
                found.append((target, [n for n in names if n not in subs]))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return [(t, n) for t, n in found if t in modules and t != name]


def _graph(type_checking: bool = False) -> dict[str, list[tuple[str, list[str]]]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(f) for f in files}
    return {_module_name(f): _imports(f, modules, type_checking) for f in files}


def test_the_package_has_no_import_cycle_not_even_for_type_hints() -> None:
    graph = {m: sorted({t for t, _ in edges}) for m, edges in _graph(type_checking=True).items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def walk(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in graph.get(m, []):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                walk(t)
        stack.pop()
        state[m] = 2

    for m in graph:
        if m not in state:
            walk(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_private_name_is_imported_from_another_module() -> None:
    crossing = [f"{m} imports {n} from {t}" for m, edges in _graph().items() for t, names in edges
                for n in names if n.startswith("_") and not n.startswith("__")]
    assert not crossing, crossing


# -- layers: imports point downward ----------------------------------------------------------------

LAYERS: list[tuple[str, ...]] = [
    ("synq_hf.errors", "synq_hf.version"),
    ("synq_hf.config",),
    ("synq_hf.model_info", "synq_hf.sources", "synq_hf.data", "synq_hf.lowpass", "synq_hf.models",
     "synq_hf.distributed", "synq_hf.precision"),
    ("synq_hf.quant",),
    ("synq_hf.architectures",),
    ("synq_hf.apply", "synq_hf.pipeline"),
    ("synq_hf.hub", "synq_hf.evaluation", "synq_hf.export"),
    ("synq_hf.synthesis", "synq_hf.mixed", "synq_hf.integrations"),
    ("synq_hf.training", "synq_hf.hub.push"),
    ("synq_hf.reconstruction",),
    ("synq_hf.quantizer",),
    ("synq_hf.recipe", "synq_hf.demo", "synq_hf.cli", "synq_hf.registration", "synq_hf"),
]
"""The package's layers, lowest first: a module may import its own layer and those below it, never one above.
A module belongs to the layer of its longest listed prefix (``synq_hf.hub.push`` sits above ``synq_hf.hub``: a push
also publishes the synthetic dataset)."""


def _layer(module: str) -> int:
    best, layer = -1, None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, layer = len(p), i
    assert layer is not None, f"{module} is in no layer of LAYERS: add it"
    return layer


def test_every_import_points_to_the_same_or_a_lower_layer() -> None:
    upward = [f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
              for m, edges in _graph(type_checking=True).items() for t, _ in edges if _layer(t) > _layer(m)]
    assert not upward, upward


# -- function length -------------------------------------------------------------------------------

LONG_FUNCTIONS = {
    "synq_hf/hub/card.py:render_model_card": "one flat mapping from the run records to the card template's "
                                             "variables: every template name is filled in one place",
    "synq_hf/synthesis/api.py:_run_plan": "its nested run_unit shares the progress bar, the image counter and the "
                                          "results with the loop over units (restarts, resume, processes)",
}
"""Functions allowed over ``benchmarks/line_counts.py``'s ``MAX_FUNCTION_LINES`` (80; signature and docstring
included), each with its reason."""


def _line_counts() -> tuple[dict, int]:
    """``benchmarks/line_counts.py``'s report of this checkout (BENCHMARKS.md, "One house": the one AST walk) and
    its line limit."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("line_counts", PACKAGE.parent / "benchmarks" / "line_counts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.counts(PACKAGE.parent, top=3), module.MAX_FUNCTION_LINES


def test_no_function_is_longer_than_80_lines_without_a_reason() -> None:
    report, limit = _line_counts()
    long = report["functions_over_80"]
    unexplained = {k: v for k, v in long.items() if k not in LONG_FUNCTIONS}
    assert not unexplained, f"functions over {limit} lines without a reason: {unexplained}"
    stale = sorted(set(LONG_FUNCTIONS) - set(long))
    assert not stale, f"LONG_FUNCTIONS lists functions that are no longer long (remove them): {stale}"
    assert report["files"] == len(list(PACKAGE.rglob("*.py"))) and len(report["largest_files"]) == 3
