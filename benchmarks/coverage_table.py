"""Print the README's coverage table: every architecture of tests/architectures/test_architectures.py, W4A4, random weights.

    python benchmarks/coverage_table.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path[:0] = [str(TESTS), str(TESTS / "architectures")]  # the architecture table and the helpers it imports
torch.set_num_threads(1)

from test_architectures import ARCHS, UNSUPPORTED, W4A4, _float, _images  # noqa: E402

from synq_hf.apply import quantize_model  # noqa: E402
from synq_hf.architectures import get_spec  # noqa: E402
from synq_hf.errors import UnsupportedModelError  # noqa: E402
from synq_hf.quant import coverage_report  # noqa: E402


def main() -> None:
    print("| model | spec | placement | W4 conv/linear | A4 layer inputs | act. quantizers | float by rule | gaps |")
    print("|---|---|---|---|---|---|---|---|")
    for arch in ARCHS:
        model = _float(arch)
        spec = get_spec(model)
        q = quantize_model(model, W4A4, example_input=_images(arch)[:1])
        r = coverage_report(q)
        c = r["counts"]
        floats = ", ".join(f"{k} ×{v['count']}" for k, v in r["float"].items())
        documented = [k for k in spec.float_rules if k not in r["float"]]
        if documented:
            floats += f" (+ documented: {', '.join(documented)})"
        print(f"| {arch.id} | {spec.name} | {spec.placement} | {c['quantized_layers']}/{c['conv_linear']} | "
              f"{c['quantized_inputs']}/{c['quantized_layers']} | {c['activation_quantizers']} | {floats} | {c['gaps']} |")
    for name, build in UNSUPPORTED:
        try:
            quantize_model(build(), W4A4)
        except UnsupportedModelError as e:
            print(f"| {name} | — | refused: `{str(e)[:60]}…` | | | | | |")


if __name__ == "__main__":
    main()
