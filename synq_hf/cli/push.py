"""``synq-hf push``: upload a saved quantized model folder to the Hugging Face Hub in one commit."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import result

_EPILOG = """\
examples:
  hf auth login                                   # once, with a write token (or export HF_TOKEN=...)
  synq-hf push ./resnet20-w4a4 my-user/resnet20-synq-w4a4
  synq-hf push ./resnet20-w4a4 my-org/resnet20-synq-w4a4 --private --dataset ./resnet20-w4a4-synthetic

DIR is the folder written by save_pretrained (weights, config.json, README.md card); the repo ends up
holding exactly its files (one commit; files no longer in DIR are removed from the repo). With
--dataset, the synthetic images (a save_to_disk folder or a .parquet file) go first to the dataset repo
REPO-synthetic, and the card links them. If an upload fails, DIR stays complete: run the same command again.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``push`` subcommand."""
    p = subparsers.add_parser(
        "push",
        help="upload a saved quantized model folder to the Hugging Face Hub",
        description="Upload a folder written by save_pretrained to a Hub model repo in a single commit.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("folder", metavar="DIR", type=Path, help="folder written by save_pretrained")
    p.add_argument("repo_id", metavar="REPO", help="Hub repo id, e.g. my-user/resnet20-synq-w4a4")
    p.add_argument("--private", action="store_true", help="create the repo (and dataset repo) private")
    p.add_argument(
        "--token", metavar="TOKEN",
        help="Hub write token (default: HF_TOKEN or the `hf auth login` token; a token on the command line "
        "ends up in your shell history)",
    )
    p.add_argument("--message", metavar="MSG", help="commit message (default: 'Upload DIR (synq-hf)')")
    p.add_argument("--dataset", metavar="PATH", type=Path,
                   help="also publish these synthetic images (save_to_disk folder or .parquet) as REPO-synthetic")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Push the folder and print the commit URL."""
    from ..push import push_folder_to_hub

    url = push_folder_to_hub(
        args.folder,
        args.repo_id,
        private=args.private,
        token=args.token,
        commit_message=args.message,
        dataset=args.dataset,
    )
    result(args, f"pushed {args.folder} to https://huggingface.co/{args.repo_id}")
    result(args, f"commit: {url}")
    return 0
