"""``synq-hf evaluate``: top-1/top-5 accuracy of a float or quantized model on an image dataset."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from ..errors import ConfigError
from ..hub.outputs import check_output_file, write_file
from .common import add_model_arguments, load_cli_model, resolve_device, result, writing_out

_EPILOG = """\
examples (from the repository root; the shared teacher and data run offline):
  synq-hf evaluate local-dir:../shared/data/teachers/cifar10-resnet20 \\
      --data ../shared/data/cifar10/test-lossless-first1017.parquet
  synq-hf evaluate resnet20-w8a8-ptq --data 'parquet:../shared/data/cifar10/test-*.parquet' --json result.json
  synq-hf evaluate timm/resnet50.a1_in1k --data ./imagenet-val --batch-size 128 --limit 5000

MODEL is a timm name (resnet18, timm/resnet50.a1_in1k), a Hub repo id (google/vit-base-patch16-224,
hf-hub:ORG/REPO), 'local-dir:PATH' or a folder (timm, transformers save_pretrained, or synq-quantized).
DATA is 'parquet:PATH' or a .parquet path/glob, a save_to_disk folder, an ImageFolder directory
(one subfolder per class) or a Hub dataset id.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand."""
    p = subparsers.add_parser(
        "evaluate",
        help="measure top-1/top-5 accuracy of a model on a labeled image dataset",
        description="Measure top-1/top-5 accuracy (percent) of a float or synq-quantized image classifier.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="model id or folder (see below)")
    p.add_argument("--data", required=True, metavar="DATA", help="dataset to evaluate on (see below)")
    p.add_argument("--split", help="dataset split (default: test, validation, or the only split)")
    p.add_argument("--image-column", metavar="C", help="image column (default: image/img/pixel_values)")
    p.add_argument("--label-column", metavar="C", help="label column (default: label/labels/fine_label)")
    p.add_argument("--batch-size", type=int, default=256, metavar="N", help="images per batch (default 256)")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N images")
    p.add_argument("--json", type=Path, metavar="PATH",
                   help="also write the result as JSON to PATH (replaced if it exists; its folder must exist)")
    add_model_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the model and data, evaluate, print one result line and optionally write JSON."""
    from ..data import load_image_dataset
    from ..evaluation import evaluate_model

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be positive, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be positive, got {args.limit}")
    device = resolve_device(args.device)
    if args.json is not None:
        check_output_file(args.json, overwrite=True, flag="--json")  # before the work, not after it
    logging.getLogger("timm").setLevel(logging.WARNING)  # its per-load INFO lines add nothing here

    loaded = load_cli_model(args)
    dataset = load_image_dataset(
        args.data, split=args.split, image_column=args.image_column, label_column=args.label_column
    )
    start = time.perf_counter()
    metrics = evaluate_model(
        loaded.model,
        dataset,
        loaded.data_config,
        batch_size=args.batch_size,
        limit=args.limit,
        device=device,
        image_column=args.image_column,
        label_column=args.label_column,
        progress=not args.no_progress,
    )
    seconds = time.perf_counter() - start
    kind = "quantized" if loaded.is_quantized else "float"
    result(args,
        f"{args.model} ({loaded.library}, {kind}) on {args.data}: "
        f"top-1 {metrics['top1']:.2f}%  top-5 {metrics['top5']:.2f}%  "
        f"({metrics['num_samples']} images, {seconds:.1f} s)"
    )
    if args.json is not None:
        payload = {
            "model": args.model,
            "data": args.data,
            "num_samples": metrics["num_samples"],
            "top1": round(metrics["top1"], 2),
            "top5": round(metrics["top5"], 2),
        }
        with writing_out(args.json, flag="--json"):
            write_file(args.json, lambda tmp: tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8"))
    return 0
