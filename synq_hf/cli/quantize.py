"""``synq-hf quantize``: quantize a float classifier and save it as a reloadable synq folder.

Methods are entries of ``METHODS`` (name -> function building a calibrated quantized model), so a new
method only adds its function and its options. ``ptq`` is min-max post-training quantization:
activation ranges are calibrated on real images (``--calibration-data``) or, without it, on images
synthesized from the model itself (zero-shot).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import SynQConfig
from ..errors import ConfigError, DataError, SynQError
from ..model_info import LoadedModel

logger = logging.getLogger(__name__)

_EPILOG = """\
examples:
  synq-hf quantize local-dir:teachers/cifar10-resnet20 --method ptq --w-bits 8 --a-bits 8 \\
      --calibration-data cifar10/test-jpeg-q75.parquet --calibration-skip 1017 \\
      --calibration-num-images 256 --out resnet20-w8a8-ptq
  synq-hf quantize timm/resnet18.a1_in1k --method ptq --w-bits 4 --a-bits 4 --out resnet18-w4a4-ptq
  synq-hf quantize google/vit-base-patch16-224 --method ptq --config synq.json --out vit-w4a8-ptq

Calibration images: the dataset (after --split, minus its first --calibration-skip rows) is shuffled
with --seed and the first N images are taken, preprocessed with the model's eval transform. Without
--calibration-data the N images are synthesized from the model (zero-shot; slow on CPU).
The output folder loads with `synq-hf evaluate DIR` and synq_hf.load_model(DIR).
"""


@dataclass
class Calibration:
    """Normalized calibration batches and a JSON record of where they came from."""

    batches: Iterator[torch.Tensor]
    num_batches: int
    record: dict[str, Any] = field(default_factory=dict)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``quantize`` subcommand."""
    p = subparsers.add_parser(
        "quantize",
        help="quantize a float classifier (fake quantization) and save it",
        description="Quantize a float image classifier and save it as a folder that synq-hf evaluate and "
        "synq_hf.load_model reload with identical outputs.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="timm name, Hub repo id, 'local-dir:PATH' or folder")
    p.add_argument("--method", required=True, choices=tuple(METHODS),
                   help="ptq: min-max post-training quantization (calibration only, no fine-tuning)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder to write (must be new or empty)")
    p.add_argument("--w-bits", type=int, metavar="B", help="weight bit-width (default: the config's, 4)")
    p.add_argument("--a-bits", type=int, metavar="B", help="activation bit-width (default: the config's, 4)")
    p.add_argument("--calibration-data", metavar="DATA",
                   help="real images to calibrate on (parquet, dataset folder, ImageFolder or Hub id); "
                   "default: images synthesized from the model")
    p.add_argument("--calibration-num-images", type=int, metavar="N",
                   help="calibration images (default: config calibration_num_images, 512)")
    p.add_argument("--calibration-skip", type=int, default=0, metavar="K",
                   help="ignore the first K rows of the data (e.g. the rows you evaluate on)")
    p.add_argument("--split", help="dataset split (default: test, validation, or the only split)")
    p.add_argument("--image-column", metavar="C", help="image column (default: image/img/pixel_values)")
    p.add_argument("--config", metavar="JSON", help="SynQConfig as a JSON file or an inline JSON object")
    p.add_argument("--seed", type=int, metavar="S", help="seed of sampling/synthesis (default: the config's, 0)")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists and is not empty")
    p.add_argument("--device", metavar="D", help="torch device (default: cuda if available)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow models that ship their own code")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


# --------------------------------------------------------------------------------------------------
# configuration and output folder
# --------------------------------------------------------------------------------------------------


def build_config(args: argparse.Namespace) -> SynQConfig:
    """``--config`` (file or inline JSON) with the explicit flags applied on top."""
    config = SynQConfig()
    if args.config:
        text = args.config.strip()
        if text.startswith("{"):
            try:
                config = SynQConfig.from_dict(json.loads(text))
            except json.JSONDecodeError as e:
                raise ConfigError(f"--config is not valid JSON: {e}") from e
        else:
            config = SynQConfig.from_json_file(text)
    overrides = {
        "w_bits": args.w_bits,
        "a_bits": args.a_bits,
        "calibration_num_images": args.calibration_num_images,
        "seed": args.seed,
    }
    return config.replace(**{k: v for k, v in overrides.items() if v is not None})


def check_output(out: Path, overwrite: bool, model_id: str) -> None:
    """Refuse (before any work) an output that is a file, a non-empty folder without --overwrite, or the input."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out {out} exists and is not empty; pass --overwrite to replace it")
    source = Path(model_id.removeprefix("local-dir:")).expanduser()
    if source.exists() and source.resolve() == out.resolve():
        raise ConfigError(f"--out {out} is the input model's folder; write the quantized model elsewhere")


def write_atomically(out: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp)`` on a temporary sibling of ``out`` and move it into place; on failure remove it."""
    out = out.expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        write(tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --------------------------------------------------------------------------------------------------
# calibration data
# --------------------------------------------------------------------------------------------------


def sample_indices(num_rows: int, num_images: int, skip: int, seed: int) -> list[int]:
    """``num_images`` distinct row indices from ``[skip, num_rows)``, in a seed-determined random order."""
    available = num_rows - skip
    if skip < 0:
        raise ConfigError(f"--calibration-skip must be >= 0, got {skip}")
    if available < num_images:
        raise DataError(
            f"the calibration data has {num_rows} images ({max(available, 0)} after skipping {skip}); "
            f"{num_images} were requested: lower --calibration-num-images"
        )
    order = torch.randperm(available, generator=torch.Generator().manual_seed(seed))[:num_images]
    return [int(i) + skip for i in order]


def real_calibration(args: argparse.Namespace, loaded: LoadedModel, config: SynQConfig) -> Calibration:
    """Seed-sampled real images from ``--calibration-data``, preprocessed with the model's eval transform."""
    from ..data import build_eval_transform, collate_images, detect_columns, load_image_dataset

    dataset = load_image_dataset(args.calibration_data, split=args.split, image_column=args.image_column)
    image_column, _ = detect_columns(dataset, args.image_column, None, require_label=False)
    n = config.calibration_num_images
    indices = sample_indices(len(dataset), n, args.calibration_skip, config.seed)
    subset = dataset.select_columns([image_column]).select(indices)
    transform = build_eval_transform(loaded.data_config)
    bs = config.calibration_batch_size

    def batches() -> Iterator[torch.Tensor]:
        for start in range(0, n, bs):
            yield collate_images(subset[start : start + bs][image_column], transform)

    record = {
        "source": "real",
        "data": args.calibration_data,
        "split": args.split,
        "image_column": image_column,
        "num_images": n,
        "skip": args.calibration_skip,
        "sampling": "seeded random sample without replacement",
        "seed": config.seed,
    }
    return Calibration(batches(), -(-n // bs), record)


def synthetic_calibration(
    args: argparse.Namespace, loaded: LoadedModel, config: SynQConfig, device: torch.device
) -> Calibration:
    """Images synthesized from the model itself (BN statistics for CNNs, patch similarity for ViTs)."""
    from ..quant import iter_batches
    from ..synthesis import generate_synthetic

    n = config.calibration_num_images
    logger.info("no --calibration-data: synthesizing %d calibration images from the model", n)
    images = generate_synthetic(
        loaded.model, config, data_config=loaded.data_config, family=loaded.family, num_classes=loaded.num_classes,
        num_images=n, seed=config.seed, device=device, progress=not args.no_progress,
    )
    pixels = images.pixels.float()
    bs = config.calibration_batch_size
    record = {
        "source": "synthetic",
        "num_images": n,
        "seed": images.seed,
        "synthesis_iterations": images.config.synthesis_iterations,
        "synthesis_batch_size": images.config.synthesis_batch_size,
        "restarts": images.restarts,
    }
    return Calibration(iter_batches(pixels, bs), -(-len(pixels) // bs), record)


def calibration_for(
    args: argparse.Namespace, loaded: LoadedModel, config: SynQConfig, device: torch.device
) -> Calibration:
    """Real calibration images when ``--calibration-data`` is given, synthetic ones otherwise."""
    if args.calibration_data:
        return real_calibration(args, loaded, config)
    return synthetic_calibration(args, loaded, config, device)


# --------------------------------------------------------------------------------------------------
# methods
# --------------------------------------------------------------------------------------------------


def run_ptq(
    args: argparse.Namespace, loaded: LoadedModel, config: SynQConfig, device: torch.device
) -> tuple[nn.Module, dict[str, Any]]:
    """Min-max PTQ: insert quantizers, calibrate activation ranges, no fine-tuning."""
    from ..quant import calibrate, quantize_model

    calibration = calibration_for(args, loaded, config, device)
    model = quantize_model(loaded.model, config)
    calibrate(model, calibration.batches, device=device, progress=not args.no_progress,
              total=calibration.num_batches)
    return model, {"method": "ptq", "calibration": calibration.record}


METHODS: dict[str, Callable[..., tuple[nn.Module, dict[str, Any]]]] = {"ptq": run_ptq}
"""``--method`` name -> function(args, loaded, config, device) returning (calibrated model, JSON record)."""


def run(args: argparse.Namespace) -> int:
    """Load the model, quantize it with ``--method``, save it to ``--out``, print one summary line."""
    from ..hub import load_model
    from ..serialization import save_quantized

    config = build_config(args)
    if args.calibration_skip < 0:
        raise ConfigError(f"--calibration-skip must be >= 0, got {args.calibration_skip}")
    if args.calibration_skip and not args.calibration_data:
        raise ConfigError("--calibration-skip needs --calibration-data")
    check_output(args.out, args.overwrite, args.model)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(config.seed)

    loaded = load_model(args.model, trust_remote_code=args.trust_remote_code)
    if loaded.is_quantized:
        raise SynQError(f"{args.model!r} is already quantized; pass its float base model ({loaded.base_model})")
    config = config.resolve(family=loaded.family, input_size=loaded.input_size)
    loaded.model.to(device).eval()
    model, record = METHODS[args.method](args, loaded, config, device)

    try:
        write_atomically(args.out, lambda tmp: save_quantized(
            model, tmp, base_model=args.model, library=loaded.library, config=config, extra=record, source=loaded,
        ))
    except OSError as e:
        raise SynQError(f"cannot write --out {args.out}: {e}") from e
    cal = record.get("calibration", {})
    where = f"{cal.get('num_images')} {cal.get('source')} images" + (f" of {cal['data']}" if cal.get("data") else "")
    print(f"saved {args.method.upper()} W{config.w_bits}A{config.a_bits} {args.model} to {args.out} "
          f"(calibrated on {where})")
    return 0
