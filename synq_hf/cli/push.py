"""``synq-hf push``: upload a saved quantized model folder to the Hugging Face Hub in one commit."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .common import result

logger = logging.getLogger(__name__)

_EPILOG = """\
examples:
  hf auth login                                   # once, with a write token (or export HF_TOKEN=...)
  synq-hf push my-user/resnet20-synq-w4a4 ./resnet20-w4a4
  synq-hf push my-org/resnet20-synq-w4a4 ./resnet20-w4a4 --private --dataset ./resnet20-w4a4-synthetic
  synq-hf push my-user/resnet20-synq-w4a4 ./resnet20-w4a4 --create-pr --commit-message "Re-run with seed 1"

The arguments follow `hf upload REPO_ID [LOCAL_DIR]` (LOCAL_DIR defaults to the current folder).
LOCAL_DIR is the folder written by save_pretrained (weights, config.json, README.md card, card.json). The
card is rendered again for REPO_ID (a README.md edited by hand keeps its edits). Files already in the repo
stay unless they match --delete PATTERN (--delete-existing: every file not in LOCAL_DIR); files of the
same name are replaced. LOCAL_DIR itself is never modified. With --dataset, the synthetic
images (a save_to_disk folder or a .parquet file) go first to the dataset repo REPO_ID-synthetic, and the
card links them. If an upload fails, LOCAL_DIR stays complete: run the same command again.
The old order `synq-hf push LOCAL_DIR REPO_ID` still works, with a deprecation warning.
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
    p.add_argument("repo_id", metavar="REPO_ID", help="Hub repo id, e.g. my-user/resnet20-synq-w4a4")
    p.add_argument("folder", metavar="LOCAL_DIR", type=Path, nargs="?", default=Path("."),
                   help="folder written by save_pretrained (default: the current folder)")
    p.add_argument("--private", action="store_true", help="create the repo (and dataset repo) private")
    p.add_argument(
        "--token", metavar="TOKEN",
        help="Hub write token (default: HF_TOKEN or the `hf auth login` token; a token on the command line "
        "ends up in your shell history)",
    )
    p.add_argument("--commit-message", metavar="MSG",
                   help="commit message (default: 'Upload LOCAL_DIR (synq-hf)')")
    p.add_argument("--revision", metavar="BRANCH", help="branch to commit to (created if missing; default: main)")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing to main")
    p.add_argument("--delete", metavar="PATTERN", action="append", dest="delete_patterns",
                   help="delete repo files matching this glob in the same commit (repeatable; files uploaded "
                   "now are kept)")
    p.add_argument("--delete-existing", action="append_const", const="*", dest="delete_patterns",
                   help="make the repo hold exactly LOCAL_DIR: same as --delete '*'")
    p.add_argument("--dataset", metavar="PATH", type=Path,
                   help="also publish these synthetic images (save_to_disk folder or .parquet) as REPO_ID-synthetic")
    p.set_defaults(func=run)


def _old_argument_order(args: argparse.Namespace) -> bool:
    """The deprecated order ``synq-hf push DIR REPO``: an existing folder, then a repo id that is not a path."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    first, second = Path(args.repo_id), str(args.folder)
    if not first.is_dir() or Path(second).exists() or second.count("/") != 1:
        return False
    try:
        validate_repo_id(second)
    except HFValidationError:
        return False
    return True


def run(args: argparse.Namespace) -> int:
    """Push the folder and print the commit URL."""
    from ..hub.push import push_folder_to_hub

    if _old_argument_order(args):
        args.repo_id, args.folder = str(args.folder), Path(args.repo_id)
        logger.warning("synq-hf push: `push LOCAL_DIR REPO_ID` is deprecated and will stop working in 1.0; "
                       "use `synq-hf push %s %s` (the order of `hf upload`)", args.repo_id, args.folder)
    url = push_folder_to_hub(
        args.folder,
        args.repo_id,
        private=args.private,
        token=args.token,
        commit_message=args.commit_message,
        revision=args.revision,
        create_pr=args.create_pr,
        delete_patterns=args.delete_patterns,
        dataset=args.dataset,
    )
    result(args, f"pushed {args.folder} to https://huggingface.co/{args.repo_id}")
    result(args, f"{'pull request' if args.create_pr else 'commit'}: {url}")
    return 0
