"""``synq-hf export``: write a quantized folder as an ONNX QDQ model that onnxruntime runs with integer kernels."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from ..hub.outputs import check_output_file
from .common import add_hub_arguments, hub_kwargs, writing_out

_EPILOG = """\
examples:
  synq-hf export resnet20-w8a8-ptq --format onnx --out resnet20-w8a8.onnx
  synq-hf export resnet20-w8a8-ptq --format onnx --out resnet20-w8a8.onnx --overwrite   # replace an earlier export
  synq-hf export user/deit-tiny-w8a8 --format onnx --out deit.onnx --opset 17

MODEL is a synq-quantized folder or Hub repo (timm or transformers). The file has a dynamic batch
dimension, input 'pixel_values' (normalized images, N x C x H x W) and output 'logits'. Needs
pip install 'synq-hf[export]' (onnx, onnxruntime).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` subcommand."""
    p = subparsers.add_parser(
        "export",
        help="export a quantized model to ONNX (QuantizeLinear/DequantizeLinear)",
        description="Export a synq-quantized model as a QDQ ONNX model for onnxruntime and other integer runtimes.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="synq-quantized folder or Hub repo id")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="output format (default onnx)")
    p.add_argument("--out", required=True, type=Path, metavar="FILE",
                   help="file to write, e.g. model.onnx (its folder must exist; written whole or not at all)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace FILE if it is an earlier synq-hf ONNX export (never another file)")
    p.add_argument("--opset", type=int, default=None, metavar="N", help="ONNX opset (default 17; 13 or newer)")
    add_hub_arguments(p)
    p.set_defaults(func=run)


def is_synq_onnx(path: Path) -> bool:
    """Whether ``path`` is an ONNX model that synq-hf wrote (``producer_name`` "synq-hf")."""
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False).producer_name == "synq-hf"
    except Exception:  # noqa: BLE001 - anything unreadable as ONNX is not ours
        return False


def run(args: argparse.Namespace) -> int:
    """Check ``--out``, load the quantized model, export it, print one line."""
    from ..export.onnx import DEFAULT_OPSET, export_onnx, require_onnx
    from ..hub.loading import load_model

    require_onnx()  # fail before loading anything when the extra is missing
    check_output_file(args.out, overwrite=args.overwrite, ours=is_synq_onnx, kind="an ONNX export")
    loaded = load_model(args.model, **hub_kwargs(args))
    if not loaded.is_quantized:
        raise ConfigError(f"{args.model} is a float model: quantize it first (synq-hf quantize), then export")
    with writing_out(args.out):
        path = export_onnx(loaded.model, args.out, input_size=loaded.data_config["input_size"],
                           opset=args.opset or DEFAULT_OPSET)
    print(f"wrote {path} ({path.stat().st_size:,} bytes, QDQ ONNX, opset {args.opset or DEFAULT_OPSET})",
          file=args.stdout)
    return 0
