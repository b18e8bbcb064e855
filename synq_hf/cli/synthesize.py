"""``synq-hf synthesize``: make a labelled synthetic image dataset from a classifier alone (SynQ step 1)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..config import SYNTHESIS_FIELDS
from ..hub.outputs import write_output
from .common import (
    add_config_arguments,
    add_deprecated_flag,
    add_run_arguments,
    config_from_args,
    config_groups,
    load_cli_model,
    resolve_device,
    result,
    run_session,
    writing_out,
)

_EPILOG = """\
examples (from the repository root; the Hub ones need the network, the shared teacher runs offline):
  synq-hf synthesize timm/resnet18 --out synthetic-r18 --num-images 512 --synthesis-iterations 500
  synq-hf synthesize timm/deit_tiny_patch16_224.fb_in1k --out synthetic-deit --num-images 64 --synthesis-batch-size 32
  synq-hf synthesize local-dir:../shared/data/teachers/cifar10-resnet20 --out synthetic-r20 \\
      --num-images 512 --synthesis-iterations 200 --seed 1
  synq-hf synthesize local-dir:../shared/data/teachers/cifar10-resnet20 --out synthetic-r20 --overwrite \\
      --config '{"num_images": 256, "synthesis_lr": 0.25}'
  synq-hf synthesize timm/resnet18 --out synthetic-r18 --num-images 512 --push-to-hub me/r18-synthetic

Every synthesis field of SynQConfig is a flag (the same flag as in synq-hf quantize); --config (a JSON file or
an inline JSON object) is read first. --batch-size, --iterations, --groups-per-forward and
--calibration-centres still work (deprecated: --synthesis-batch-size, --synthesis-iterations,
--synthesis-groups-per-forward, --synthesis-calibration-centres).

CNNs with BatchNorm are synthesized by BatchNorm-statistics matching (batch 256), ViT/DeiT/Swin models by
PSAQ-ViT patch similarity (batch 32). OUT becomes a datasets save_to_disk folder (datasets.load_from_disk) with
float32 'pixel_values' in the teacher's normalized space and 'label'; its dataset_info.json records the teacher,
the full resolved config and the seed. The same seed reproduces the same pixels. --push-to-hub REPO then
publishes it with synq_hf.synthesis.push_synthetic_dataset (Dataset.push_to_hub and a card saying how the
images were made; nothing else in the repo is deleted), with --token or your `hf auth login` token.

Each finished group is saved in the work folder (--work-dir, default OUT.synq-work); if interrupted, run the
printed command (the same one with --resume) to continue: the result equals an uninterrupted run's.
"""

_WORK_ITEMS = ("synthetic-groups",)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``synthesize`` subcommand."""
    p = subparsers.add_parser(
        "synthesize",
        help="synthesize a labelled image dataset from a classifier (no real data)",
        description="Synthesize images from a teacher classifier and save them as a datasets folder.",
        usage="synq-hf synthesize MODEL --out DIR [--num-images N] [--synthesis-iterations N] [--seed N] [options]",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="model id or folder (timm name, Hub repo, local-dir:PATH)")
    main = p.add_argument_group("most used")
    main.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (save_to_disk)")
    main.add_argument("--overwrite", action="store_true", help="replace DIR if it is an earlier synthesize output")
    main.add_argument("--push-to-hub", metavar="REPO_ID", help="then publish the dataset to this Hub dataset repo")
    main.add_argument("--private", action="store_true", help="with --push-to-hub: make a new repo private")
    fields = (*SYNTHESIS_FIELDS, "seed")
    groups = config_groups(p, fields)
    add_run_arguments(groups["run"])
    add_config_arguments(p, fields, groups=groups, config_group=main)
    for old, field in (("--batch-size", "synthesis_batch_size"), ("--iterations", "synthesis_iterations"),
                       ("--groups-per-forward", "synthesis_groups_per_forward")):
        add_deprecated_flag(p, old, field, type=int)
    add_deprecated_flag(p, "--calibration-centres", "synthesis_calibration_centres", nargs=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check the options and output, load the teacher, synthesize group by group, write the dataset folder."""
    from ..synthesis import synthesis_metadata, synthesize

    cfg = config_from_args(args)
    if args.push_to_hub:
        from ..hub.push import check_can_push

        check_can_push(args.push_to_hub, args.token)  # before the work, not after it (local: every process)
    device = resolve_device(args.device)
    logging.getLogger("timm").setLevel(logging.WARNING)
    fingerprint = {"command": "synthesize", "model": args.model, "config": cfg.to_dict()}
    with run_session(args, fingerprint, _WORK_ITEMS) as procs:
        with procs.together():
            loaded = load_cli_model(args, device)
        dataset = synthesize(loaded.model, cfg, data_config=loaded.data_config, family=None,
                             class_names=loaded.class_names, teacher_id=loaded.model_id, device=device,
                             progress=not args.no_progress, checkpoint_dir=args.work_path / "synthetic-groups",
                             spec=loaded.spec)
        with procs.together():  # the main process writes; every process learns whether that worked
            if procs.is_main:
                with writing_out(args.out):
                    write_output(args.out, lambda tmp: dataset.save_to_disk(str(tmp)), overwrite=args.overwrite)
    if not procs.is_main:
        return 0
    meta = synthesis_metadata(dataset)
    restarts = f", {meta['restarts']} diverged group(s) restarted" if meta.get("restarts") else ""
    result(args, f"wrote {len(dataset)} synthetic images ({meta['family']}, seed {meta['seed']}) to {args.out}"
                 f"{restarts}")
    if args.push_to_hub:
        _push(args, dataset)
    return 0


def _push(args: argparse.Namespace, dataset: object) -> None:
    """Publish the written dataset; a failure says that the folder is complete and how to push it again."""
    from ..hub.push import HubError
    from ..synthesis import push_synthetic_dataset

    try:
        url = push_synthetic_dataset(dataset, args.push_to_hub, private=args.private or None, token=args.token)
    except Exception as e:  # the network boundary: every failure gets the retry hint
        retry = (f"python -c \"import datasets, synq_hf.synthesis as s; s.push_synthetic_dataset("
                 f"datasets.load_from_disk('{args.out}'), '{args.push_to_hub}')\"")
        raise HubError(f"pushing the dataset to {args.push_to_hub} failed: {type(e).__name__}: {e}\n"
                       f"The dataset folder {args.out} is complete; retry with:\n  {retry}") from e
    result(args, f"pushed to {url}")
