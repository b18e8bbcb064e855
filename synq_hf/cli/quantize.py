"""``synq-hf quantize``: quantize a float classifier and save it as a reloadable synq folder.

Methods are entries of ``METHODS`` (name -> function building a calibrated quantized model), so a new
method only adds its function and its options. ``ptq`` is post-training quantization (range search, no fine-tuning):
activation ranges are calibrated on real images (``--calibration-data``) or, without it, on images
synthesized from the model itself (zero-shot).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import LOSS_PRESETS, SynQConfig
from ..errors import AlreadyQuantizedError, ConfigError, DataError
from ..hub.outputs import public_name
from ..pipeline import LoadedModel
from ..quantizer import SynQQuantizer
from .common import (
    PartClock,
    add_config_arguments,
    add_run_arguments,
    config_from_args,
    config_groups,
    load_cli_model,
    refuse_multi_process,
    resolve_device,
    result,
    run_session,
    writing_out,
)

logger = logging.getLogger(__name__)

_EPILOG = """\
examples (from the repository root; the first needs the Hub, the others run offline on the shared teachers):
  synq-hf quantize timm/resnet18 --w-bits 4 --a-bits 4 --num-images 512 --max-steps 300 --out resnet18-synq-w4a4
  synq-hf quantize local-dir:../shared/data/teachers/cifar10-resnet20 --w-bits 4 --a-bits 4 \\
      --num-images 512 --synthesis-iterations 200 --max-steps 300 --train-batch-size 128 \\
      --eval-data ../shared/data/cifar10/test-lossless-first1017.parquet --out resnet20-synq-w4a4
  synq-hf quantize local-dir:../shared/data/teachers/cifar10-resnet20 --method ptq --w-bits 8 --a-bits 8 \\
      --calibration-data ../shared/data/cifar10/test-jpeg-q75.parquet --calibration-skip 1017 \\
      --calibration-num-images 256 --out resnet20-w8a8-ptq
  synq-hf quantize local-dir:../shared/data/teachers/cifar10-resnet20 --method ptq --w-bits 4 --a-bits 4 \\
      --calibration-num-images 256 --synthesis-iterations 200 --out resnet20-w4a4-ptq-zero-shot
  synq-hf quantize local-dir:../shared/data/teachers/cifar10-resnet20 --method reconstruct --w-bits 3 --a-bits 3 \\
      --reconstruct-iterations 1000 --reconstruct-num-images 512 --out resnet20-w3a3-recon   # one process

SynQ synthesizes images from the model (or reuses --synthetic), calibrates the ranges on them and fine-tunes
against the float model; with --eval-data it also measures float and PTQ-on-synthetic top-1 (results.json).
PTQ calibrates on --calibration-data (the rows after --calibration-skip, shuffled with --seed, the first
--calibration-num-images taken) or, without it, on images synthesized from the model (zero-shot).
--eval-data, --calibration-data and --out are checked before any work. The output folder loads with
`synq-hf evaluate DIR` and synq_hf.load_model(DIR).

Interrupted (Ctrl-C, SIGTERM) or failed after the work? The synthetic images and the fine-tuning checkpoints are
kept in the work folder (--work-dir, default OUT.synq-work beside --out) and the exact command to resume is
printed: the same command with --resume. The resumed model equals an uninterrupted run's. The work folder is
removed after a successful run; two runs cannot share one. --overwrite replaces only an earlier synq-hf output.
"""

_USAGE = "synq-hf quantize MODEL --out DIR [--method {%s}] [--w-bits N] [--a-bits N] [--eval-data DATA] [options]"

_WORK_ITEMS = ("synthetic-groups", "finetune", "mixed-precision", "reconstruction", PartClock.FILE)


@dataclass
class Calibration:
    """Normalized calibration batches and a JSON record of where they came from."""

    batches: Iterator[torch.Tensor]
    num_batches: int
    record: dict[str, Any] = field(default_factory=dict)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``quantize`` subcommand: its own options first, then every ``SynQConfig`` field, in README groups."""
    p = subparsers.add_parser(
        "quantize",
        help="quantize a float classifier (fake quantization) and save it",
        description="Quantize a float image classifier and save it as a folder that synq-hf evaluate and "
        "synq_hf.load_model reload with identical outputs.",
        usage=_USAGE % ",".join(METHODS),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="timm name, Hub repo id, 'local-dir:PATH' or folder")
    main = p.add_argument_group("most used")
    main.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder to write (must be new or empty)")
    main.add_argument("--method", default=None, choices=tuple(METHODS),
                      help="synq (default, or the --config's method): zero-shot SynQ (synthesis + calibration + "
                      "fine-tuning); ptq: post-training quantization (calibration and range search only); "
                      "reconstruct: zero-shot PTQ by block reconstruction (Genie/BRECQ: AdaRound, LSQ, QDrop; one "
                      "process; --reconstruct-synq adds SynQ on top)")
    main.add_argument("--eval-data", metavar="DATA",
                      help="real labelled data: evaluate float, PTQ and the result; writes results.json "
                      "(parquet, dataset folder, ImageFolder or Hub id; checked before any work)")
    main.add_argument("--eval-split", metavar="S", help="split of --eval-data")
    main.add_argument("--overwrite", action="store_true",
                      help="replace DIR if it is an earlier synq-hf output (never a folder holding other files)")
    groups = config_groups(p)
    cal = groups["calibration"]
    cal.add_argument("--calibration-data", metavar="DATA",
                     help="--method ptq: real images to calibrate on (parquet, dataset folder, ImageFolder or Hub "
                     "id); default: images synthesized from the model")
    cal.add_argument("--calibration-skip", type=int, default=0, metavar="K",
                     help="ignore the first K rows of --calibration-data (e.g. the rows you evaluate on)")
    cal.add_argument("--split", help="split of --calibration-data (default: test, validation, or the only split)")
    cal.add_argument("--image-column", metavar="C", help="image column of --calibration-data (default: image/img)")
    groups["synthesis"].add_argument("--synthetic", type=Path, metavar="DIR",
                                     help="synq, reconstruct: reuse a synthetic dataset folder (synq-hf synthesize) instead of "
                                     "synthesizing")
    groups["fine-tuning"].add_argument("--loss-preset", choices=sorted(LOSS_PRESETS),
                                       help="loss balance preset (paper: plain KL; authors: 20·T²·KL at T=20, "
                                       "crop+flip)")
    add_run_arguments(groups["run"])
    add_config_arguments(p, groups=groups, config_group=main)
    p.set_defaults(func=run)


# --------------------------------------------------------------------------------------------------
# configuration and output folder
# --------------------------------------------------------------------------------------------------


def build_config(args: argparse.Namespace) -> SynQConfig:
    """``--config`` (file or inline JSON), then ``--loss-preset``, then every field flag given."""
    return config_from_args(args, preset=getattr(args, "loss_preset", None))


def check_not_input(out: Path, model_id: str) -> None:
    """Refuse an ``--out`` that is the input model's own folder."""
    source = Path(model_id.removeprefix("local-dir:")).expanduser()
    if source.exists() and source.resolve() == out.expanduser().resolve():
        raise ConfigError(f"--out {out} is the input model's folder; write the quantized model elsewhere")


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
    from ..data import build_eval_transform, collate_images, detect_columns, load_image_dataset, raw_images

    dataset = load_image_dataset(args.calibration_data, split=args.split, image_column=args.image_column)
    image_column, _ = detect_columns(dataset, args.image_column, None, require_label=False)
    n = config.calibration_num_images
    indices = sample_indices(len(dataset), n, args.calibration_skip, config.seed)
    subset = raw_images(dataset.select_columns([image_column]).select(indices), image_column)
    transform = build_eval_transform(loaded.data_config)
    collate_images(subset[: min(_PROBE_ROWS, n)][image_column], transform)  # broken images fail before any work
    bs = config.calibration_batch_size

    def batches() -> Iterator[torch.Tensor]:
        for start in range(0, n, bs):
            yield collate_images(subset[start : start + bs][image_column], transform)

    record = {
        "source": "real",
        "data": public_name(args.calibration_data),
        "split": args.split,
        "image_column": image_column,
        "num_images": n,
        "skip": args.calibration_skip,
        "sampling": "seeded random sample without replacement",
        "seed": config.seed,
    }
    return Calibration(batches(), -(-n // bs), record)


# --------------------------------------------------------------------------------------------------
# methods
# --------------------------------------------------------------------------------------------------


_PROBE_ROWS = 4
"""Rows of ``--eval-data`` / ``--calibration-data`` decoded and preprocessed before any work."""


@dataclass
class Checked:
    """What :func:`check_inputs` loaded and checked before the work, reused by the methods."""

    eval_data: Any = None
    calibration: Calibration | None = None
    synthetic: Any = None


def _probe_images(dataset: Any, column: str, loaded: LoadedModel, rows: Any) -> None:
    """Decode and preprocess a few rows with the model's eval transform (a broken or odd image fails or warns now)."""
    from ..data import build_eval_transform, collate_images, raw_images

    subset = raw_images(dataset.select_columns([column]).select(rows), column)
    collate_images(subset[column], build_eval_transform(loaded.data_config))


def check_eval_data(args: argparse.Namespace, loaded: LoadedModel) -> Any:
    """Load ``--eval-data`` and check it before any work: readable, an image and a label column, labels within the
    model's classes, and a few rows that decode and preprocess. Returns the dataset (the evaluation reuses it)."""
    from ..data import detect_columns, load_image_dataset
    from ..evaluation import check_labels
    from ..model_info import model_num_classes

    try:
        data = load_image_dataset(args.eval_data, split=args.eval_split)
        image_column, label_column = detect_columns(data, None, None, require_label=True)
        if len(data) == 0:
            raise DataError("the dataset is empty")
        check_labels(data, label_column, model_num_classes(loaded.model))
        _probe_images(data, image_column, loaded, range(min(_PROBE_ROWS, len(data))))
    except DataError as e:
        raise DataError(f"--eval-data {args.eval_data}: {e}") from None
    return data


def check_inputs(args: argparse.Namespace, quantizer: SynQQuantizer) -> Checked:
    """Everything the run reads, checked before any synthesis or training: ``--eval-data``, ``--calibration-data``
    (the sampled rows exist and decode) and ``--synthetic`` (a synthetic dataset folder)."""
    checked = Checked()
    if args.eval_data:
        checked.eval_data = check_eval_data(args, quantizer.teacher)
    if args.calibration_data:
        try:
            checked.calibration = real_calibration(args, quantizer.teacher, quantizer.config)
        except DataError as e:
            raise DataError(f"--calibration-data {args.calibration_data}: {e}") from None
    if args.synthetic:
        from datasets import load_from_disk

        try:
            checked.synthetic = load_from_disk(os.fspath(args.synthetic))
        except (FileNotFoundError, ValueError) as e:
            raise DataError(f"--synthetic {args.synthetic} is not a dataset folder written by synq-hf synthesize: "
                            f"{e}") from e
    return checked


def run_ptq(args: argparse.Namespace, quantizer: SynQQuantizer) -> None:
    """PTQ: insert quantizers, set the ranges on real (``--calibration-data``) or synthetic images; no fine-tuning."""
    checked: Checked = args.checked
    if checked.calibration is not None:
        images = torch.cat(list(checked.calibration.batches))
        source = checked.calibration.record
    else:
        logger.info("no --calibration-data: synthesizing %d calibration images from the model",
                    quantizer.config.calibration_num_images)
        with args.clock.phase("synthesis_s"):
            quantizer.synthesize(num_images=quantizer.config.calibration_num_images, progress=not args.no_progress,
                                 checkpoint_dir=args.work_path / "synthetic-groups")
        images, source = None, None
    quantizer.allocate_bits(images, cache_dir=_mixed_cache(args), progress=not args.no_progress)
    quantizer.ptq(images, source=source, progress=not args.no_progress)
    if args.eval_data:
        _evaluate(args, quantizer, ("float", "ptq"))


def _mixed_cache(args: argparse.Namespace) -> Path | None:
    """Where the mixed-precision sensitivities are cached: the work folder, written by the main process only."""
    work = getattr(args, "work_path", None)
    procs = getattr(args, "procs", None)
    return work / "mixed-precision" if work is not None and (procs is None or procs.is_main) else None


def _synthetic_images(args: argparse.Namespace, quantizer: SynQQuantizer, num_images: int | None = None) -> None:
    """The checked ``--synthetic`` set, or images synthesized now (group by group into the work folder, timed)."""
    checked: Checked = args.checked
    if checked.synthetic is not None:
        quantizer.synthetic = checked.synthetic
        return
    with args.clock.phase("synthesis_s"):
        quantizer.synthesize(num_images=num_images, progress=not args.no_progress,
                             checkpoint_dir=args.work_path / "synthetic-groups")


def run_synq(args: argparse.Namespace, quantizer: SynQQuantizer) -> None:
    """SynQ: synthesize (or load ``--synthetic``), calibrate and fine-tune; with ``--eval-data`` compare to PTQ."""
    progress = not args.no_progress
    _synthetic_images(args, quantizer)
    from ..training.trainer import last_checkpoint

    quantizer.allocate_bits(cache_dir=_mixed_cache(args), progress=progress)  # with a budget
    finetune_dir = args.work_path / "finetune"
    resume = last_checkpoint(os.fspath(finetune_dir)) if args.resume else None
    if resume:
        logger.info("resuming fine-tuning from %s", resume)
    with args.clock.phase("finetune_s"):
        quantizer.quantize(progress=progress, output_dir=finetune_dir, resume_from_checkpoint=resume)
    if args.eval_data:
        quantizer.ptq(progress=progress)
        _evaluate(args, quantizer, ("float", "ptq", "synq"))


def run_reconstruct(args: argparse.Namespace, quantizer: SynQQuantizer) -> None:
    """Block reconstruction: synthesize (or load ``--synthetic``), reconstruct block by block (each finished block
    saved to the work folder, ``--resume`` continues); with ``--eval-data`` compare to searched PTQ."""
    progress = not args.no_progress
    _synthetic_images(args, quantizer, quantizer.config.reconstruct_num_images)
    work = args.work_path / "reconstruction"
    from ..reconstruction.engine import PROGRESS_FILE

    resume = bool(args.resume and (work / PROGRESS_FILE).is_file())
    if resume:
        logger.info("resuming the reconstruction kept in %s", work)
    quantizer.reconstruct(output_dir=work, resume=resume, progress=progress)
    if args.eval_data:
        quantizer.ptq(progress=progress)
        _evaluate(args, quantizer, ("float", "ptq", "reconstruct"))


def _evaluate(args: argparse.Namespace, quantizer: SynQQuantizer, which: tuple[str, ...]) -> None:
    data = args.checked.eval_data
    for name in which:
        quantizer.evaluate(data, which=name, progress=not args.no_progress)
    quantizer.results["eval_data"] = public_name(args.eval_data)  # results.json never holds a local path
    quantizer.results["eval_split"] = args.eval_split


METHODS: dict[str, Callable[[argparse.Namespace, SynQQuantizer], None]] = {
    "synq": run_synq, "ptq": run_ptq, "reconstruct": run_reconstruct}
"""``--method`` name -> function(args, quantizer) leaving the quantized model in ``quantizer``."""


def run(args: argparse.Namespace) -> int:
    """Check everything, load the model, quantize it with ``--method``, save it to ``--out``, print a summary."""
    config = build_config(args)
    args.method = args.method or config.method
    config = config.replace(method=args.method)
    if args.calibration_skip < 0:
        raise ConfigError(f"--calibration-skip must be >= 0, got {args.calibration_skip}")
    if args.calibration_skip and not args.calibration_data:
        raise ConfigError("--calibration-skip needs --calibration-data")
    if args.method in ("synq", "reconstruct") and args.calibration_data:
        raise ConfigError(f"--calibration-data is for --method ptq; {args.method} is zero-shot (it runs on synthetic "
                          "data)")
    if args.method == "ptq" and (args.synthetic or getattr(args, "max_steps", None) is not None):
        raise ConfigError("--synthetic/--max-steps are for --method synq")
    check_not_input(args.out, args.model)
    uses_work = args.method in ("synq", "reconstruct") or not args.calibration_data
    if args.resume and not uses_work:
        raise ConfigError("--resume: PTQ on real calibration data has nothing to resume; run it again")
    if args.method == "reconstruct":  # before any collective: every process of a launch stops here
        refuse_multi_process("`synq-hf quantize --method reconstruct` (block reconstruction)",
                             "start it with python (synq-hf without a launcher)")
    device = resolve_device(args.device)
    fingerprint = {"command": "quantize", "model": args.model, "method": args.method, "config": config.to_dict(),
                   "synthetic": str(args.synthetic or "")}
    with run_session(args, fingerprint, _WORK_ITEMS, uses_work=uses_work) as procs:
        args.clock = PartClock(args.work_path if procs.is_main else None)
        try:
            with procs.together():  # everything read is checked on every process before the work
                torch.manual_seed(config.seed)
                loaded = load_cli_model(args, device)
                if loaded.is_quantized:
                    raise AlreadyQuantizedError.for_model(args.model, loaded.base_model)
                quantizer = SynQQuantizer(loaded, config, device=device)
                args.checked = check_inputs(args, quantizer)
            METHODS[args.method](args, quantizer)
            if args.clock.parts > 1:  # a resumed run: results.json and the card count every part's time
                quantizer.add_earlier_parts(args.clock.earlier, args.clock.parts)
            with procs.together():  # the main process writes; every process learns whether that worked
                if procs.is_main:
                    with writing_out(args.out):
                        quantizer.save_pretrained(args.out, overwrite=args.overwrite)
        except BaseException:
            args.clock.save()  # kept with the work folder, so a resumed run adds this part's time
            raise
    if not procs.is_main:
        return 0
    record = quantizer.results_json()
    cfg = quantizer.config
    plan = quantizer.mixed_plan
    bits = f"W{cfg.w_bits}A{cfg.a_bits}" if plan is None else "mixed-precision"
    result(args, f"saved {args.method.upper()} {bits} {args.model} to {args.out}")
    if plan is not None:
        result(args, f"  {plan.summary()}")
    for key in ("fp_top1", "ptq_top1", "synq_top1", "reconstruct_top1"):
        if record.get(key) is not None:
            result(args, f"  {key:10s} {record[key]:6.2f}")
    return 0
